"""The built-in metrics, each reading one model output.

    top1, top5   share of samples whose label is the arg-max / among the 5 largest
                 scores (labels: one class index per sample)
    agreement    share of samples whose arg-max equals the original's (fidelity of a
                 classifier without labels)
    cosine       mean cosine similarity of each sample's output to the original's (or
                 to the labels, when they have the output's shape): embeddings
    snr          signal-to-noise ratio of the outputs against the original's (or the
                 labels), in dB over the whole set, capped at 100 dB (identical outputs)
    mse          mean squared error against the original's outputs (or the labels);
                 lower is better
    iou          intersection over union of masks: the arg-max over the class axis
                 (axis 1) of each pixel, or `iou:T` thresholds a one-channel map at T
                 (default 0.5); the mean over classes, the foreground for a threshold

Each tally keeps sums, never outputs, so scoring streams.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxamc.errors import DataError
from onnxamc.quality.base import LABELS, ORIGINAL, OutputSpec, Quality, Tally

SNR_CAP_DB = 100.0  # what identical outputs score (float round-off sits far below)


class OutputMetric(Quality):
    """A metric of one output (`output`), against the labels or the original's."""

    kind_description = ""

    def __init__(self, output: OutputSpec, against: str = ORIGINAL):
        self.output = output
        self.against = against
        self.description = self.kind_description

    def label(self) -> str:
        return f"{self.name} on {self.output.name!r}"

    def truth(self, reference, labels):
        if self.against == LABELS:
            if labels is None:
                raise DataError(f"{self.name} on {self.output.name!r} scores against labels, "
                                "and the data has none")
            return self.label_truth(np.asarray(labels))
        return self.reference_truth(reference[self.output.index])

    def label_truth(self, labels: np.ndarray) -> Any:
        return labels

    def reference_truth(self, reference: np.ndarray) -> Any:
        return reference

    def start(self) -> Tally:
        return _OneOutput(self)

    def tally(self) -> "_Sums":
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label()}, against {self.against})"


class _OneOutput(Tally):
    def __init__(self, metric: OutputMetric):
        self.metric, self.sums, self.seen = metric, metric.tally(), 0

    def add(self, outputs, truth) -> None:
        out = outputs[self.metric.output.index]
        self.sums.add(out, truth, self.seen)
        self.seen += len(out)

    def value(self) -> float:
        return self.sums.value()


class _Sums:
    def add(self, out: np.ndarray, truth: Any, offset: int) -> None:
        raise NotImplementedError

    def value(self) -> float:
        raise NotImplementedError


# --- classification -------------------------------------------------------------------
class TopK(OutputMetric):
    """top-k accuracy against class labels."""

    def __init__(self, output: OutputSpec, k: int = 1):
        self.k = k
        self.name = f"top{k}"
        self.kind_description = f"top-{k} accuracy"
        super().__init__(output, LABELS)

    def label_truth(self, labels):
        return class_labels(labels, self.name)

    def tally(self):
        return _TopKSums(self)

    def error(self, value):
        return None if value is None else 1.0 - value


def class_labels(labels: np.ndarray, metric: str) -> np.ndarray:
    """One integer class per sample, or a one-line DataError saying what is wrong."""
    if labels.ndim > 1 and int(np.prod(labels.shape[1:])) == 1:
        labels = labels.reshape(len(labels))
    if labels.ndim != 1:
        raise DataError(f"labels: {metric} needs one class index per sample; the labels "
                        f"have shape {list(labels.shape)}")
    if labels.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if len(bad):
            raise DataError(f"labels: sample {bad[0]} is {float(labels[bad[0]])!r}, not a class "
                            "index")
    if labels.dtype.kind not in "iuf":
        raise DataError(f"labels: {metric} needs integer class indices, not {labels.dtype}")
    labels = labels.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"labels: sample {int(np.argmin(labels))} has the negative label "
                        f"{labels.min()}")
    return labels


class _TopKSums(_Sums):
    def __init__(self, metric: TopK):
        self.metric, self.correct, self.count = metric, 0, 0

    def add(self, out, truth, offset):
        scores = out.reshape(len(out), -1)
        classes = scores.shape[1]
        if len(truth) != len(scores):
            raise DataError(f"labels: {len(truth)} labels for a batch of {len(scores)} samples")
        if len(truth) and truth.max() >= classes:
            at = int(np.argmax(truth))
            raise DataError(f"labels: sample {offset + at} has label {truth[at]}, but output "
                            f"{self.metric.output.name!r} has {classes} classes (labels "
                            f"0..{classes - 1})")
        k = min(self.metric.k, classes)
        if k == 1:
            hit = scores.argmax(axis=1) == truth
        else:
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            hit = (top == truth[:, None]).any(axis=1)
        self.correct += int(hit.sum())
        self.count += len(hit)

    def value(self):
        return self.correct / self.count if self.count else float("nan")


class Agreement(OutputMetric):
    name = "agreement"
    kind_description = "share of samples whose arg-max equals the original model's"

    def reference_truth(self, reference):
        return reference.reshape(len(reference), -1).argmax(axis=1)

    def label_truth(self, labels):
        return class_labels(labels, self.name)

    def tally(self):
        return _AgreementSums()

    def error(self, value):
        return None if value is None else 1.0 - value


class _AgreementSums(_Sums):
    def __init__(self):
        self.same, self.count = 0, 0

    def add(self, out, truth, offset):
        self.same += int((out.reshape(len(out), -1).argmax(axis=1) == truth).sum())
        self.count += len(out)

    def value(self):
        return self.same / self.count if self.count else float("nan")


# --- dense outputs ---------------------------------------------------------------------
class _Dense(OutputMetric):
    def label_truth(self, labels):
        if labels.dtype.kind not in "iuf":
            raise DataError(f"labels: {self.name} needs numbers, not {labels.dtype}")
        return labels

    def pair(self, out: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both as (samples, values) float64, or a DataError when the shapes differ."""
        a = out.reshape(len(out), -1).astype(np.float64)
        b = np.asarray(truth).reshape(len(truth), -1).astype(np.float64)
        if a.shape != b.shape:
            raise DataError(f"labels: {self.name} on {self.output.name!r} compares "
                            f"{list(out.shape[1:])} outputs per sample with labels of "
                            f"{list(np.shape(truth)[1:])}")
        return a, b


class Cosine(_Dense):
    name = "cosine"
    span = 2.0
    kind_description = "mean cosine similarity per sample"

    def tally(self):
        return _CosineSums(self)

    def error(self, value):
        return None if value is None else float(np.clip(1.0 - value, 0.0, 1.0))


class _CosineSums(_Sums):
    def __init__(self, metric):
        self.metric, self.total, self.count = metric, 0.0, 0

    def add(self, out, truth, offset):
        a, b = self.metric.pair(out, truth)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        dot = (a * b).sum(axis=1)
        cos = np.where((na == 0) & (nb == 0), 1.0, dot / np.maximum(na * nb, 1e-300))
        self.total += float(np.sum(cos))
        self.count += len(cos)

    def value(self):
        return self.total / self.count if self.count else float("nan")


class Snr(_Dense):
    name = "snr"
    span = None
    unit = "dB"
    kind_description = f"signal-to-noise ratio over the whole set, capped at {SNR_CAP_DB:g} dB"

    def tally(self):
        return _ErrorSums(self, snr=True)

    def error(self, value):
        return None if value is None else float(min(1.0, 10 ** (-value / 10)))


class Mse(_Dense):
    name = "mse"
    span = None
    higher_is_better = False
    kind_description = "mean squared error"

    def tally(self):
        return _ErrorSums(self, snr=False)


class _ErrorSums(_Sums):
    def __init__(self, metric, snr: bool):
        self.metric, self.snr = metric, snr
        self.signal = self.noise = 0.0
        self.count = 0

    def add(self, out, truth, offset):
        a, b = self.metric.pair(out, truth)
        self.signal += float(np.sum(b * b))
        self.noise += float(np.sum((a - b) ** 2))
        self.count += a.size

    def value(self):
        if not self.count:
            return float("nan")
        if not self.snr:
            return self.noise / self.count
        if self.noise == 0:
            return SNR_CAP_DB
        if self.signal == 0:
            return -SNR_CAP_DB
        return float(np.clip(10 * np.log10(self.signal / self.noise), -SNR_CAP_DB, SNR_CAP_DB))


# --- masks -----------------------------------------------------------------------------
class Iou(OutputMetric):
    name = "iou"
    kind_description = "intersection over union of the masks"

    def __init__(self, output: OutputSpec, against: str = ORIGINAL, threshold: float | None = None):
        super().__init__(output, against)
        self.threshold = threshold

    def label(self) -> str:
        at = f" at {self.threshold:g}" if self.threshold is not None else ""
        return f"{self.name}{at} on {self.output.name!r}"

    def mask(self, out: np.ndarray) -> np.ndarray:
        """Class ids per pixel: the arg-max over axis 1 when it holds several classes,
        else the map thresholded (at `threshold`, 0.5 by default)."""
        if out.ndim >= 3 and out.shape[1] > 1 and self.threshold is None:
            return out.argmax(axis=1)
        if out.ndim >= 3 and out.shape[1] == 1:
            out = out[:, 0]
        return (out > (0.5 if self.threshold is None else self.threshold)).astype(np.int64)

    def reference_truth(self, reference):
        return self.mask(reference)

    def label_truth(self, labels):
        if labels.ndim >= 3 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.dtype.kind == "f":
            if not np.array_equal(labels, np.round(labels)):
                raise DataError("labels: iou needs masks of class ids (integers)")
        return labels.astype(np.int64)

    def tally(self):
        return _IouSums(self)

    def error(self, value):
        return None if value is None else 1.0 - value


class _IouSums(_Sums):
    def __init__(self, metric: Iou):
        self.metric, self.binary = metric, True
        self.inter = self.area_out = self.area_truth = np.zeros(0, np.int64)

    def add(self, out, truth, offset):
        self.binary = not (out.ndim >= 3 and out.shape[1] > 1 and self.metric.threshold is None)
        pred = self.metric.mask(out)
        if pred.shape != truth.shape:
            raise DataError(f"labels: iou on {self.metric.output.name!r} compares masks of "
                            f"{list(pred.shape[1:])} with labels of {list(truth.shape[1:])}")
        if truth.size and truth.min() < 0:
            raise DataError(f"labels: a mask holds the negative class {truth.min()}")
        classes = int(max(pred.max(initial=0), truth.max(initial=0))) + 1
        pred, truth = pred.ravel(), truth.ravel()
        counts = [np.bincount(pred[pred == truth], minlength=classes),
                  np.bincount(pred, minlength=classes), np.bincount(truth, minlength=classes)]
        self.inter, self.area_out, self.area_truth = (
            _add_padded(old, new) for old, new in
            zip((self.inter, self.area_out, self.area_truth), counts))

    def value(self):
        union = self.area_out + self.area_truth - self.inter
        if self.binary:
            if len(union) < 2 or union[1] == 0:
                return 1.0  # no foreground in either: nothing to miss
            return float(self.inter[1] / union[1])
        present = union > 0
        return float(np.mean(self.inter[present] / union[present])) if present.any() else 1.0


def _add_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    size = max(len(a), len(b))
    return np.pad(a, (0, size - len(a))) + np.pad(b, (0, size - len(b)))


BUILTIN = {"top1": lambda o, a, arg: TopK(o, 1), "top5": lambda o, a, arg: TopK(o, 5),
           "agreement": lambda o, a, arg: Agreement(o, a),
           "cosine": lambda o, a, arg: Cosine(o, a), "snr": lambda o, a, arg: Snr(o, a),
           "mse": lambda o, a, arg: Mse(o, a),
           "iou": lambda o, a, arg: Iou(o, a, arg)}
LABEL_ONLY = ("top1", "top5")


def make_builtin(name: str, output: OutputSpec, against: str,
                 arg: float | None = None) -> OutputMetric:
    return BUILTIN[name](output, against, arg)


__all__ = ["Agreement", "BUILTIN", "Cosine", "Iou", "LABEL_ONLY", "Mse", "OutputMetric",
           "SNR_CAP_DB", "Snr", "TopK", "class_labels", "make_builtin"]
