"""Picking one policy from a Pareto front by a rule the user states (`--pick`).

A multi-objective search ends with many good policies; deployment needs one. The rules
read the metrics each trial measured:

    drop<=D      the fastest policy losing at most D of the quality metric, in its units
                 (0.01 = 1 point of top1, 1 = 1 dB of snr; the default: 0.01)
    latency<=R   the most accurate policy at latency ratio <= R
    size<=R      the most accurate policy at size ratio <= R
    knee         the point of the accuracy/latency front farthest from the line joining
                 its two ends: where extra speed starts to cost much accuracy

When no policy meets a bound, the one closest to it is picked and reported as not
meeting the rule. Reads Metrics objects: no Optuna, no models. "Accuracy" is the run's
quality metric, whatever its name and direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from onnxamc.metrics import Metrics
from onnxamc.search.pareto import pareto_indices

PICK_RULES = ("drop<=D", "latency<=R", "size<=R", "knee")
_BOUNDED = {"drop": "quality_drop", "latency": "latency_ratio", "size": "size_ratio"}


@dataclass(frozen=True)
class PickRule:
    kind: str  # drop | latency | size | knee
    bound: float | None = None

    def describe(self) -> str:
        return self.kind if self.bound is None else f"{self.kind}<={self.bound:g}"

    def choose(self, metrics: Sequence[Metrics]) -> tuple[int, bool] | None:
        """(index of the chosen metrics, whether it meets the rule); None if empty."""
        rows = [i for i, m in enumerate(metrics)
                if _finite(m.quality) and _finite(m.latency_ratio)]
        if not rows:
            return None
        good = {i: _goodness(metrics[i]) for i in rows}
        if self.kind == "knee":
            return _knee(rows, metrics, good), True
        key = _BOUNDED[self.kind]

        def bound_value(i: int) -> float:
            value = getattr(metrics[i], key)
            return value if _finite(value) else math.inf

        fits = [i for i in rows if bound_value(i) <= self.bound]
        if not fits:  # nearest to the bound, then the most accurate
            return min(rows, key=lambda i: (bound_value(i), -good[i])), False
        if self.kind == "drop":
            return min(fits, key=lambda i: (metrics[i].latency_ratio, -good[i])), True
        return max(fits, key=lambda i: (good[i], -metrics[i].latency_ratio)), True


def parse_pick(spec: str | None, default_drop: float | None = None) -> PickRule:
    """`drop<=0.01`, `latency<=0.5`, `size<=0.3` or `knee`; None: drop within
    `default_drop` (1 point when that is None too)."""
    if spec is None:
        return PickRule("drop", 0.01 if default_drop is None else default_drop)
    text = spec.replace(" ", "").lower()
    if text == "knee":
        return PickRule("knee")
    kind, sep, raw = text.partition("<=")
    if not sep or kind not in _BOUNDED:
        raise ValueError(f"unknown pick rule {spec!r}; use one of {', '.join(PICK_RULES)}")
    try:
        bound = float(raw)
    except ValueError:
        raise ValueError(f"pick rule {spec!r} needs a number after '<='") from None
    if not math.isfinite(bound) or bound < 0:  # a drop's range is the metric's to check
        raise ValueError(f"pick rule {spec!r}: bound out of range")
    return PickRule(kind, bound)


def _goodness(m: Metrics) -> float:
    return m.quality if m.higher_is_better else -m.quality


def _knee(rows: list[int], metrics: Sequence[Metrics], good: dict[int, float]) -> int:
    points = [(good[i], metrics[i].latency_ratio) for i in rows]
    front = sorted((rows[j] for j in pareto_indices(points, ("maximize", "minimize"))),
                   key=lambda i: metrics[i].latency_ratio)
    if len(front) <= 2:  # no bend: the most accurate
        return max(front, key=lambda i: good[i])
    lat = [metrics[i].latency_ratio for i in front]
    acc = [good[i] for i in front]
    span_l, span_a = (max(lat) - min(lat)) or 1.0, (max(acc) - min(acc)) or 1.0
    xs = [(v - min(lat)) / span_l for v in lat]
    ys = [(v - min(acc)) / span_a for v in acc]
    (x0, y0), (x1, y1) = (xs[0], ys[0]), (xs[-1], ys[-1])
    norm = math.hypot(x1 - x0, y1 - y0) or 1.0
    distance = [abs((y1 - y0) * x - (x1 - x0) * y + x1 * y0 - y1 * x0) / norm
                for x, y in zip(xs, ys)]
    return front[max(range(len(front)), key=distance.__getitem__)]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
