"""Which metric a run uses: the user's (`--metric`, `metric=`) or the default chosen from
the labels and the shapes of the model's outputs.

`--metric` takes a built-in name, `OUTPUT=NAME` items separated by commas (a metric per
output), `iou:T` (a threshold), or `package.module:function` (your own). A built-in
name without an output reads the first output when it scores against labels, and
every output (the worst counts) when it scores against the original's outputs.

Defaults: with one class label per sample, top1 on the first output; with labels shaped
like the first output, iou (integer masks) or snr (numbers) against them. Without
labels, fidelity to the original, per output by its shape: arg-max agreement for class
scores (rank 2, produced by a linear layer or a softmax, or named like logits), cosine
for embeddings and sequences (rank 2 otherwise, rank 3), snr for dense maps and scalars.
Outputs that would get different metrics all get cosine, so one worst output counts.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from onnxamc.errors import DataError, MetricError
from onnxamc.quality.base import LABELS, ORIGINAL, OutputSpec, Quality
from onnxamc.quality.builtin import BUILTIN, LABEL_ONLY, OutputMetric, make_builtin
from onnxamc.quality.combined import Combined
from onnxamc.quality.user import UserMetric

EMBEDDING_HINTS = ("embed", "pool", "feature", "vector", "hidden", "encod", "sentence",
                   "represent", "latent")
CLASS_HINTS = ("logit", "prob", "class", "score", "softmax")
CLASS_PRODUCERS = ("Gemm", "MatMul", "Add", "Softmax", "LogSoftmax", "Sigmoid", "Conv")


def resolve_quality(spec: Any, outputs: Sequence[OutputSpec],
                    labels: np.ndarray | None) -> Quality:
    """The metric `spec` names (None: the default) for a model with `outputs`; `labels`
    is a batch of the data's labels (None: the data has none), whose shape decides what
    a metric can score against."""
    if spec is None or spec == "default":
        return default_quality(outputs, labels)
    if isinstance(spec, Quality):
        return spec
    if callable(spec):
        return UserMetric(spec, outputs)
    if not isinstance(spec, str) or not spec.strip():
        raise MetricError(f"a metric is a name ({', '.join(BUILTIN)}), OUTPUT=NAME items or "
                          f"package.module:function, not {spec!r}")
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if len(items) == 1 and _is_user_entry(items[0]):
        function = _load_user(items[0])
        return UserMetric(function, outputs, getattr(function, "metric_name", None) or items[0])
    parts: list[OutputMetric] = []
    for item in items:
        parts += _parse_item(item, outputs, labels)
    return parts[0] if len(parts) == 1 else Combined(parts)


def default_quality(outputs: Sequence[OutputSpec], labels: np.ndarray | None) -> Quality:
    first = outputs[0]
    if labels is not None:
        per_sample = np.shape(labels)[1:]
        if int(np.prod(per_sample)) == 1 and first.rank >= 2:
            return make_builtin("top1", first, LABELS)
        if _fits(per_sample, first.shape[1:]) or _fits(per_sample, _mask_shape(first)):
            kind = "iou" if np.asarray(labels).dtype.kind in "iub" else "snr"
            return make_builtin(kind, first, LABELS)
        raise DataError(f"labels: {list(per_sample)} per sample fit no built-in metric of "
                        f"output {first.name!r} {_fmt(first.shape)}: give --metric")
    kinds = [_fidelity_kind(o) for o in outputs]
    if len(set(kinds)) > 1:
        kinds = ["cosine"] * len(outputs)
    parts = [make_builtin(k, o, ORIGINAL) for k, o in zip(kinds, outputs)]
    return parts[0] if len(parts) == 1 else Combined(parts)


def _fidelity_kind(output: OutputSpec) -> str:
    if output.rank <= 1 or output.rank >= 4:
        return "snr"
    if output.rank == 3:
        return "cosine"
    name = output.name.lower()
    if any(h in name for h in EMBEDDING_HINTS):
        return "cosine"
    if any(h in name for h in CLASS_HINTS) or output.producer in CLASS_PRODUCERS:
        return "agreement"
    return "cosine"


def _parse_item(item: str, outputs: Sequence[OutputSpec],
                labels: np.ndarray | None) -> list[OutputMetric]:
    target, eq, rest = item.rpartition("=")
    name, _, raw = rest.partition(":")
    name = name.strip().lower()
    if name not in BUILTIN:
        raise MetricError(f"unknown metric {rest!r}: use one of {', '.join(BUILTIN)}, "
                          "OUTPUT=NAME or package.module:function")
    arg = _argument(name, raw, item)
    chosen = [_output(target.strip(), outputs)] if eq else list(outputs)
    metrics = [make_builtin(name, o, _against(name, o, labels), arg) for o in chosen]
    if not eq and len(metrics) > 1 and metrics[0].against == LABELS:
        return metrics[:1]  # labels belong to one output: the first
    return metrics


def _against(name: str, output: OutputSpec, labels: np.ndarray | None) -> str:
    if name in LABEL_ONLY:
        if labels is None:
            raise DataError(f"{name} needs labels in the data (without labels, 'agreement' "
                            "scores the arg-max against the original's)")
        return LABELS
    if labels is None:
        return ORIGINAL
    per_sample = np.shape(labels)[1:]
    if name == "agreement":
        return ORIGINAL
    if name == "iou":
        return LABELS if _fits(per_sample, _mask_shape(output)) else ORIGINAL
    regression = output.rank == 1 or bool(per_sample)
    return LABELS if regression and _fits(per_sample, output.shape[1:]) else ORIGINAL


def _argument(name: str, raw: str, item: str) -> float | None:
    if not raw:
        return None
    if name != "iou":
        raise MetricError(f"metric {item!r}: only iou takes an argument (iou:0.5)")
    try:
        return float(raw)
    except ValueError:
        raise MetricError(f"metric {item!r}: the iou threshold must be a number") from None


def _output(name: str, outputs: Sequence[OutputSpec]) -> OutputSpec:
    for o in outputs:
        if o.name == name:
            return o
    raise MetricError(f"the model has no output {name!r} (outputs: "
                      f"{', '.join(o.name for o in outputs)})")


def _mask_shape(output: OutputSpec) -> tuple:
    """Per-sample shape of the mask an output gives (its class or channel axis gone)."""
    return output.shape[2:] if output.rank >= 3 else output.shape[1:]


def _fits(got: Sequence[int], want: Sequence[int | None]) -> bool:
    return len(got) == len(want) and all(w is None or w == g for g, w in zip(got, want))


def _is_user_entry(item: str) -> bool:
    from onnxamc.entry_points import is_entry_point

    return "=" not in item and is_entry_point(item) and item.split(":")[0] not in BUILTIN


def _load_user(entry: str) -> Callable:
    from onnxamc.entry_points import import_entry

    return import_entry(entry, "metric", MetricError)


def _fmt(shape) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"
