"""Metrics: what one model measured on one data set and one target, beside a reference
model measured in the same run.

One typed object for every layer of the tool: the evaluator fills it, objectives and
pick rules read its attributes, the study stores `to_dict()` on each trial and
`from_dict` reads it back (also from studies written before a field existed).
Quality is a named metric with a direction (onnxamc.quality): `quality_drop` is how much
worse than the reference, in the metric's own units, whatever its direction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from onnxamc.runtime.latency import LatencyStats


@dataclass
class Metrics:
    quality: float | None = None  # the quality metric's value (None: no data)
    metric: str = "top1"  # its name (onnxamc.quality)
    higher_is_better: bool = True
    metric_label: str = ""  # what it reads, against what: `fidelity: cosine on 'emb' (...)`
    per_output: dict[str, dict] = field(default_factory=dict)  # {output: {metric, quality}}
    error: float | None = None  # AMC's error term (1 - accuracy or the metric's equivalent)
    data: str | None = None  # what the quality was measured on
    size_bytes: int = 0  # serialized model: the honest on-disk size
    size_zipped_bytes: int | None = None  # zlib level 6: what zeros (sparsity) save
    macs: int = 0  # per sample, of the compressible layers
    params: int = 0
    bits_per_weight: float | None = None  # stored weight bits (scales, codebooks too) / weights
    layer_bits: dict[str, float] = field(default_factory=dict)
    latency: LatencyStats | None = None
    target: str | None = None  # the target the latency was measured on
    supported: bool = True  # False: the target's runtime cannot run the model
    latency_error: str | None = None  # why it has no latency
    energy: dict | None = None  # runtime.energy.Energy.to_dict(): measured or estimated
    device: dict | None = None  # what a remote board said of itself
    emulated: str | None = None  # how the board that measured is emulated: latency means nothing
    # relative to the reference model, measured in the same run
    quality_drop: float | None = None  # reference quality - quality (sign: worse is positive)
    latency_ratio: float | None = None  # median / reference median (inf: unsupported)
    size_ratio: float | None = None
    macs_ratio: float | None = None
    reference_latency: LatencyStats | None = None
    # the ratio's bootstrap interval over the interleaved rounds (RatioInterval.to_dict())
    latency_interval: dict | None = None
    latency_flags: list[str] = field(default_factory=list)  # "uncertain", "busy"
    busy: dict | None = None  # runtime.busy.Busy.to_dict(): other processes' CPU use
    # the search's cost model (AMC's resource): MACs with zeros and pruning counted
    effective_macs: float | None = None
    effective_macs_ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # robust accuracy, layer table...

    def drop_from(self, reference_quality: float | None) -> float | None:
        """How much worse than `reference_quality`, in the metric's units."""
        if self.quality is None or reference_quality is None:
            return None
        diff = reference_quality - self.quality
        return diff if self.higher_is_better else -diff

    def relate_to(self, reference: "Metrics") -> "Metrics":
        """Fill the ratios and the drop against a reference measured in the same run."""
        self.quality_drop = self.drop_from(reference.quality)
        self.size_ratio = _ratio(self.size_bytes, reference.size_bytes)
        self.macs_ratio = _ratio(self.macs, reference.macs)
        if not self.supported:
            self.latency_ratio = math.inf
        elif self.latency is not None and reference.latency is not None:
            self.latency_ratio = self.latency.median_ms / reference.latency.median_ms
            self.reference_latency = reference.latency
        return self

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("latency", "reference_latency"):
            value = getattr(self, key)
            out[key] = value.to_dict() if value is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Metrics":
        """Read back what `to_dict` stored; keys it does not know go to `extra`, and
        studies stored before quality had a name (accuracy, accuracy_drop) still load."""
        data = dict(data)
        if "accuracy" in data and "quality" not in data:  # stored by onnxamc <= 0.1
            data["quality"] = data.pop("accuracy")
            data["quality_drop"] = data.pop("accuracy_drop", None)
            kind = data.pop("accuracy_kind", "top1")
            data["metric"] = "agreement" if kind == "fidelity" else kind
        known = {f.name for f in fields(cls)}
        extra = {k: data.pop(k) for k in list(data) if k not in known}
        for key in ("latency", "reference_latency"):
            if isinstance(data.get(key), dict):
                data[key] = LatencyStats(**{k: v for k, v in data[key].items()
                                            if k in {f.name for f in fields(LatencyStats)}})
        metrics = cls(**data)
        metrics.extra.update(extra)
        return metrics

    @property
    def trusted_latency(self) -> bool:
        """Whether the latency ratio may be chosen on: measured (or exact) and not
        flagged uncertain."""
        return self.latency_ratio is not None and "uncertain" not in self.latency_flags

    @property
    def no_measurable_change(self) -> bool:
        """The ratio's interval contains 1: not a speed-up, nor a slow-down."""
        i = self.latency_interval
        return i is not None and i["low"] <= 1.0 <= i["high"]

    def describe_latency(self) -> str:
        """`x0.62 [0.60, 0.64]`, with what the interval means and the flags."""
        if self.latency_ratio is None:
            return "latency -"
        if self.latency_ratio == float("inf"):
            return "latency: not supported on the target"
        i = self.latency_interval
        text = f"latency x{self.latency_ratio:.3f}"
        if i is not None and i.get("rounds"):
            text += f" [{i['low']:.3f}, {i['high']:.3f}]"
        if self.no_measurable_change:
            text += " (no measurable change)"
        if self.latency_flags:
            text += f" ({', '.join(self.latency_flags)})"
        return text

    def describe_quality(self) -> str:
        """`top1 92.90%` or `cosine 0.9981`: the value with the metric's name."""
        if self.quality is None:
            return f"{self.metric} -"
        return f"{self.metric} {format_quality(self.metric, self.quality)}"


PERCENT_METRICS = ("top1", "top5", "agreement", "iou")
UNITS = {"snr": "dB"}


def format_quality(metric: str, value: float | None) -> str:
    """`92.90%`, `0.9981`, `34.50 dB`: a value in the metric's units."""
    return _formatted(metric, value, "", "%")


def format_drop(metric: str, drop: float | None) -> str:
    """A drop in the metric's units: `+1.20 points`, `+0.0031`, `+2.50 dB`."""
    return _formatted(metric, drop, "+", " points")


def _formatted(metric: str, value: float | None, sign: str, percent: str) -> str:
    if value is None:
        return "-"
    if metric in PERCENT_METRICS:
        return f"{100 * value:{sign}.2f}{percent}"
    if metric in UNITS:
        return f"{value:{sign}.2f} {UNITS[metric]}"
    return f"{value:{sign}.4g}"


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference else None
