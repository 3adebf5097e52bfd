"""What `--max-drop` and `--min-quality` mean for each metric, as one drop bound.

Objectives and pick rules bound the drop from the original's quality, in the metric's
own units: 0.01 is one point of top1 / top5 / agreement / iou, 0.01 of cosine
similarity, 1 dB of snr against labels, a rise of 0.01 in mse. A fidelity metric scores
the original against itself, so its reference is the perfect score (agreement 1, cosine
1, snr 100 dB, mse 0), and a floor reads better than a drop: `--min-quality 30` (snr of
at least 30 dB) becomes a drop of 70 dB from the original's 100.

Defaults when no bound is given: a drop of 0.01 for metrics whose values are shares or
cosines, an snr of at least 30 dB against the original's outputs, 1 dB against labels;
mse and a user's function have no natural scale: they need a bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxamc.errors import SearchError
from onnxamc.metrics import format_quality
from onnxamc.quality.base import ORIGINAL, Quality

DEFAULT_DROP = 0.01
DEFAULT_SNR_FLOOR_DB = 30.0
DEFAULT_SNR_DROP_DB = 1.0


@dataclass(frozen=True)
class Bound:
    max_drop: float
    text: str  # `snr >= 30.00 dB (a drop of at most 70 dB from the original's 100.00 dB)`


def drop_bound(quality: Quality, reference: float, max_drop: float | None = None,
               min_quality: float | None = None) -> Bound:
    """The bound on the drop that `max_drop` or `min_quality` (or the metric's default)
    means, checked against the metric's range; a one-line SearchError if it cannot."""
    if min_quality is not None:
        drop = quality.drop(reference, min_quality)
        if drop < 0:
            raise SearchError(f"the original scores {_fmt(quality, reference)} on this data, "
                              f"worse than --min-quality {_fmt(quality, min_quality)}: no "
                              "compressed model can meet it")
        return Bound(drop, f"{quality.name} {'>=' if quality.higher_is_better else '<='} "
                           f"{_fmt(quality, min_quality)} (the original: "
                           f"{_fmt(quality, reference)})")
    if max_drop is None:
        max_drop = default_drop(quality, reference)
    if quality.span is not None and max_drop >= quality.span:
        raise SearchError(f"--max-drop {max_drop:g} is beyond what {quality.name} can lose "
                          f"(its values span {quality.span:g}; 0.01 means "
                          f"{_fmt(quality, 0.01) if quality.span == 1 else '0.01'})")
    if max_drop < 0:
        raise SearchError(f"--max-drop must be >= 0, got {max_drop:g}")
    floor = reference - max_drop if quality.higher_is_better else reference + max_drop
    unit = f" {quality.unit}" if quality.unit else ""
    return Bound(max_drop, f"{quality.name} {'>=' if quality.higher_is_better else '<='} "
                           f"{_fmt(quality, floor)} (a drop of at most {max_drop:g}{unit} from "
                           f"the original's {_fmt(quality, reference)})")


def default_drop(quality: Quality, reference: float) -> float:
    if quality.span is not None:
        return DEFAULT_DROP
    if quality.name == "snr":
        if quality.against == ORIGINAL:
            return max(0.0, reference - DEFAULT_SNR_FLOOR_DB)
        return DEFAULT_SNR_DROP_DB
    raise SearchError(f"{quality.label()} has no natural scale: give --max-drop (in its "
                      "units) or --min-quality, or a --latency budget")


def _fmt(quality: Quality, value: float) -> str:
    return format_quality(quality.name, value)
