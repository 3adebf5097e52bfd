"""Quality metrics: how good a model's outputs are, by name, with a direction.

A metric scores the outputs of a model over a whole evaluation set, batch by batch,
against the labels where it uses them, else the original (reference) model's own
outputs (fidelity). Built in (quality.builtin): top1, top5, agreement, cosine, snr,
mse, iou; several outputs get a metric each and one combined (quality.combined); your
own function (quality.user); the default chosen from the labels and the outputs'
shapes (quality.choose).
"""

from onnxamc.quality.base import (LABELS, ORIGINAL, USER, OutputSpec, Quality, Score, Tally,
                                  finite)
from onnxamc.quality.builtin import (SNR_CAP_DB, Agreement, Cosine, Iou, Mse, Snr, TopK,
                                     class_labels)
from onnxamc.quality.choose import default_quality, resolve_quality
from onnxamc.quality.combined import Combined
from onnxamc.quality.user import UserMetric, metric

BUILTIN_NAMES = ("top1", "top5", "agreement", "cosine", "snr", "mse", "iou")


def Top1(output: OutputSpec | None = None) -> TopK:
    """top-1 accuracy of the first output (or `output`) against class labels."""
    return TopK(output or OutputSpec(0, "output"), 1)


__all__ = ["Agreement", "BUILTIN_NAMES", "Combined", "Cosine", "Iou", "LABELS", "Mse",
           "ORIGINAL", "OutputSpec", "Quality", "SNR_CAP_DB", "Score", "Snr", "Tally", "Top1",
           "TopK", "USER", "UserMetric", "class_labels", "default_quality", "finite", "metric",
           "resolve_quality"]
