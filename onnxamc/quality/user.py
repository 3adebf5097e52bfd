"""Your own metric: a function that returns one number (higher is better unless it says
otherwise).

What it is given is read off its parameter names:

    outputs    {output name: array over the whole evaluation set}
    labels     the labels over the whole set (None when the data has none)
    reference  the original model's outputs, like `outputs`
    session    an onnxruntime InferenceSession of the model to score: the function runs
               it itself (on its own data, or on `data`); nothing is held in memory
    data       with `session`: the evaluation data as (feed dict, labels) batches

Parameters with other names take, in order, outputs and labels. A function that prefers
lower values, or wants another name in reports, says so with `@metric(...)` (or the
attributes `higher_is_better` and `metric_name`). Whatever it raises, or a result that is
not one finite number, becomes a one-line MetricError naming the function.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

import numpy as np

from onnxamc.errors import MetricError, first_line
from onnxamc.quality.base import USER, OutputSpec, Quality, Tally

PARAMETERS = ("outputs", "labels", "reference", "session", "data")


def metric(fn: Callable | None = None, *, higher_is_better: bool = True,
           name: str | None = None):
    """Declare a metric function's direction and name: `@metric(higher_is_better=False)`."""
    def mark(f):
        f.higher_is_better = higher_is_better
        if name:
            f.metric_name = name
        return f

    return mark(fn) if fn is not None else mark


class UserMetric(Quality):
    against = USER
    span = None

    def __init__(self, fn: Callable, outputs: Sequence[OutputSpec], name: str | None = None):
        if not callable(fn):
            raise MetricError(f"a metric must be a function or a built-in name, got "
                              f"{type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "metric_name", None) or _qualified_name(fn)
        self.higher_is_better = bool(getattr(fn, "higher_is_better", True))
        self.outputs = list(outputs)
        self.plan = _plan(fn, self.name)
        wants = {what for _, what, _ in self.plan}
        self.runs_session = "session" in wants
        self.wants_reference = "reference" in wants
        self.description = "runs the model itself" if self.runs_session else \
            "over the whole evaluation set's outputs"

    @property
    def reads_reference(self) -> bool:
        return self.wants_reference

    def label(self) -> str:
        return self.name

    def truth(self, reference, labels):
        return (reference if self.wants_reference else None), labels

    def start(self) -> Tally:
        return _Collect(self)

    def score_session(self, session, data) -> float:
        return self.call(session=session, data=data, labels=None, outputs=None, reference=None)

    def call(self, **available: Any) -> float:
        args, kwargs = [], {}
        for param, what, keyword in self.plan:
            (kwargs.__setitem__(param, available[what]) if keyword
             else args.append(available[what]))
        try:
            value = self.fn(*args, **kwargs)
        except Exception as exc:
            raise MetricError(f"metric {self.name} raised {type(exc).__name__}: "
                              f"{first_line(exc)}") from None
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise MetricError(f"metric {self.name} returned {type(value).__name__}, not one "
                              "number") from None
        if not math.isfinite(number):
            raise MetricError(f"metric {self.name} returned {number}")
        return number


class _Collect(Tally):
    """Holds the whole set's outputs (what an outputs-metric asks for) until `value()`."""

    def __init__(self, metric: UserMetric):
        self.metric = metric
        self.outputs: list[list[np.ndarray]] = [[] for _ in metric.outputs]
        self.reference: list[list[np.ndarray]] = [[] for _ in metric.outputs]
        self.labels: list[np.ndarray] = []

    def add(self, outputs, truth) -> None:
        reference, labels = truth
        for held, out in zip(self.outputs, outputs):
            held.append(out)
        if reference is not None:
            for held, out in zip(self.reference, reference):
                held.append(out)
        if labels is not None:
            self.labels.append(np.asarray(labels))

    def value(self) -> float:
        names = [o.name for o in self.metric.outputs]
        joined = {n: np.concatenate(parts) for n, parts in zip(names, self.outputs) if parts}
        reference = {n: np.concatenate(parts) for n, parts in zip(names, self.reference)
                     if parts} or None
        labels = np.concatenate(self.labels) if self.labels else None
        return self.metric.call(outputs=joined, labels=labels, reference=reference,
                                session=None, data=None)


def _plan(fn: Callable, name: str) -> list[tuple[str, str, bool]]:
    """(parameter, what it takes, by keyword) for each parameter the call fills."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: outputs, labels
        return [("outputs", "outputs", False), ("labels", "labels", False)]
    positional = iter(("outputs", "labels"))
    plan = []
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        keyword = p.kind == p.KEYWORD_ONLY
        if p.name in PARAMETERS:
            plan.append((p.name, p.name, keyword))
        elif p.default is p.empty:
            what = next(positional, None)
            if what is None or keyword:
                raise MetricError(f"metric {name}: cannot tell what parameter {p.name!r} "
                                  f"takes (name it one of {', '.join(PARAMETERS)})")
            plan.append((p.name, what, False))
    if not plan:
        raise MetricError(f"metric {name} takes no parameters: it needs outputs (and labels) "
                          "or a session")
    wants = {what for _, what, _ in plan}
    if "session" in wants and wants & {"outputs", "reference"}:
        raise MetricError(f"metric {name} takes a session and outputs: it gets one or the "
                          "other")
    return plan


def _qualified_name(fn: Callable) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}:{qualname}" if module and module != "__main__" else qualname
