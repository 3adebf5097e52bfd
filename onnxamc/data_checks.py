"""Checks of data against a model's inputs, batch by batch: one line naming the input.

Every batch a model will see passes here first (in-memory data as one batch when it is
loaded, streamed data as each batch arrives): names, shapes, dtypes (a same-kind cast is
made, e.g. float64 to float32), NaN or Inf values, sample counts, empty batches, and
labels that are not finite numbers. Whether labels fit the model's classes is the
metric's check (it knows the classes: onnxamc.quality).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from onnxamc.errors import DataError
from onnxamc.graph.model import InputSpec


def check_batch(feed: dict[str, np.ndarray], labels: np.ndarray | None,
                inputs: Sequence[InputSpec], where: str,
                offset: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The batch as the model takes it (cast where a cast is safe), or a DataError.
    `where` names the data ("calibration data calib.npz"); `offset` is the index of the
    batch's first sample in the whole set, so a bad sample is named by its index."""
    expected = {s.name for s in inputs}
    extra = sorted(set(feed) - expected)
    if extra:
        raise DataError(f"{where}: data has arrays {extra} that are not model inputs "
                        f"(inputs: {sorted(expected)})")
    checked, counts = {}, {}
    for spec in inputs:
        if spec.name not in feed:
            raise DataError(f"{where}: data has no array for model input {spec.name!r}")
        arr = _fit_input(np.asarray(feed[spec.name]), spec, where)
        _check_finite(arr, f"{where}: input {spec.name!r}", offset)
        checked[spec.name] = arr
        if arr.ndim:  # a scalar input (a sample rate) has no samples to count
            counts[spec.name] = len(arr)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim == 0:
            raise DataError(f"{where}: labels must have a batch axis, got one scalar")
        if labels.dtype.kind not in "biuf":
            raise DataError(f"{where}: labels of type {labels.dtype} are not numbers")
        _check_finite(labels, f"{where}: labels", offset)
        counts["labels"] = len(labels)
    if len(set(counts.values())) > 1:
        check_shared_batch_axis(inputs)
        raise DataError(f"{where}: data arrays and labels have different sample counts: "
                        f"{sorted(set(counts.values()))} ({_counts(counts)})")
    if not any(counts.values()):
        raise DataError(f"{where}: input {inputs[0].name!r} holds no samples (an empty array)")
    return checked, class_like(labels)


def class_like(labels: np.ndarray | None) -> np.ndarray | None:
    """One label per sample with whole values becomes int64 (class indices, as
    cross-entropy takes them); anything else is kept as it is (targets, masks)."""
    if labels is None:
        return None
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim == 1 and labels.dtype.kind == "f" and np.array_equal(labels, np.round(labels)):
        return labels.astype(np.int64)
    if labels.ndim == 1 and labels.dtype.kind in "biu":
        return labels.astype(np.int64, copy=False)
    return labels


def _fit_input(arr: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    if arr.ndim != len(spec.shape) or any(
            want is not None and want != got for want, got in zip(spec.shape[1:], arr.shape[1:])):
        raise DataError(f"{where}: input {spec.name!r}: data shape {fmt_shape(arr.shape)} does "
                        f"not fit model shape {fmt_shape(spec.shape)}")
    if arr.dtype == spec.dtype:
        return arr
    if np.can_cast(arr.dtype, spec.dtype, "same_kind") and arr.dtype.kind == spec.dtype.kind:
        return arr.astype(spec.dtype)
    if arr.dtype.kind in "iub" and spec.dtype.kind in "iu" and _fits_range(arr, spec.dtype):
        return arr.astype(spec.dtype)  # token ids as int32 for an int64 input, and back
    raise DataError(f"{where}: input {spec.name!r}: data type {arr.dtype} does not fit "
                    f"model type {spec.dtype}")


def _fits_range(arr: np.ndarray, dtype: np.dtype) -> bool:
    if not arr.size:
        return True
    info = np.iinfo(dtype)
    return info.min <= int(arr.min()) and int(arr.max()) <= info.max


def _check_finite(arr: np.ndarray, what: str, offset: int) -> None:
    if arr.dtype.kind not in "fc" or not arr.size:
        return
    finite = np.isfinite(arr)
    if finite.all():
        return
    if not arr.ndim:
        raise DataError(f"{what} is {arr.item()} (not a finite number)")
    bad = ~finite.reshape(len(arr), -1).all(axis=1)
    first = int(np.argmax(bad))
    kind = "NaN" if np.isnan(arr[first]).any() else "Inf"
    raise DataError(f"{what} has NaN or Inf values in {int(bad.sum())} samples (first: "
                    f"{kind} in sample {offset + first})")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def fmt_shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def check_shared_batch_axis(inputs) -> None:
    """Data is batched on the first axis of every input. A model whose inputs disagree
    there (a recurrent state [2, 1, 128] beside audio [1, 512], as silero-vad) has no
    such axis: one line says so, before any data is cut into batches."""
    leading = {spec.name: spec.shape[0] for spec in inputs
               if len(spec.shape) and isinstance(spec.shape[0], int)}
    if len(set(leading.values())) > 1:
        names = ", ".join(f"{name}: {dim}" for name, dim in leading.items())
        raise DataError(f"the model's inputs have different fixed first dimensions ({names}): "
                        "onnxamc batches data on the first axis of every input, which this "
                        "model does not share (a recurrent state?); it can be inspected and "
                        "pruned without refitting, not fed data")
