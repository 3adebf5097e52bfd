"""Datasets: `.npz` files and built-in names, checked against the model's inputs.

A dataset is a dict of input arrays (named after the model inputs, batch first) plus
optional integer `labels`. Without labels, accuracy means fidelity: top-1 agreement
with the original model's outputs.

Built-in names:
  fashion-mnist            the bundled 2,000-image evaluation subset of the test set
  fashion-mnist:calib      the bundled 512-image calibration subset of the training set
  fashion-mnist:test       the full 10k test set (Debian package dataset-fashion-mnist)
  fashion-mnist:train      the full 60k training set (same package)
  digits                   scikit-learn's 1,797 8x8 digits (reshaped to the model input)
  random[:N]               N inputs (default 64) drawn to the model's input shapes
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from onnxamc.errors import DataError
from onnxamc.graph.model import InputSpec

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
BUILTIN_NAMES = ("fashion-mnist", "digits", "random")
LABELS = "labels"


@dataclass
class Dataset:
    """Input arrays (batch first) and optional labels. `batch` is the model's fixed
    batch dimension when it has one (most TorchScript exports fix it at 1): every batch
    handed out then has exactly that many samples."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    name: str = "data"
    notes: list[str] = field(default_factory=list)
    batch: int | None = None

    def __len__(self) -> int:
        return next((len(v) for v in self.inputs.values() if v.ndim), 1)

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        """Batches of `size` samples, or of the model's fixed batch."""
        step = self.batch or size
        for start in range(0, len(self), step):
            yield self._rows(slice(start, start + step))

    def take(self, n: int | None) -> "Dataset":
        """The first n samples (all of them when n is None or larger than the set)."""
        if n is None or n >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:n]
        return Dataset(self._rows(slice(0, n)), labels, self.name, self.notes, self.batch)

    def one(self) -> dict[str, np.ndarray]:
        """The smallest batch the model takes (one sample, unless its batch is fixed
        larger), as latency measurement feeds it."""
        return self._rows(slice(0, self.batch or 1))

    def _rows(self, rows: slice) -> dict[str, np.ndarray]:
        """The given samples of every input; scalar inputs (a sample rate) go whole."""
        return {k: v[rows] if v.ndim else v for k, v in self.inputs.items()}


def read_fashion_mnist_idx(split: str, as_uint8: bool = False,
                           root: Path = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Read the Debian Fashion-MNIST idx files: images (N,1,28,28) and int64 labels."""
    images_path = root / f"{split}-images-idx3-ubyte.gz"
    labels_path = root / f"{split}-labels-idx1-ubyte.gz"
    if not images_path.exists():
        raise DataError(f"Fashion-MNIST files not found in {root} "
                        "(install the Debian package dataset-fashion-mnist)")
    with gzip.open(images_path) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(labels_path) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return (images.copy() if as_uint8 else _scale(images)), labels


def _scale(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0


def load_data(spec: str | Path | Dataset, inputs: Sequence[InputSpec],
              limit: int | None = None, seed: int = 0) -> Dataset:
    """Load a dataset by file path or built-in name and check it against `inputs`."""
    if isinstance(spec, Dataset):
        data = spec
    else:
        text = str(spec)
        base, _, arg = text.partition(":")
        if base in BUILTIN_NAMES and not Path(text).exists():
            data = _builtin(base, arg, inputs, seed)
        else:
            data = _read_npz(Path(text), inputs)
    data = data.take(limit)
    check_fits(data, inputs)
    return fit_batch(data, inputs)


def fixed_batch(inputs: Sequence[InputSpec]) -> int | None:
    """The batch dimension the model fixes (the same first dimension on every input),
    or None when it is dynamic or the inputs disagree (state inputs, scalars)."""
    firsts = {spec.shape[0] for spec in inputs if spec.shape}
    return firsts.pop() if len(firsts) == 1 and None not in firsts else None


def fit_batch(data: Dataset, inputs: Sequence[InputSpec]) -> Dataset:
    """`data` handed out in the model's fixed batch, trimmed to a whole number of them."""
    batch = fixed_batch(inputs)
    if batch is None:
        return data
    usable = len(data) - len(data) % batch
    if usable == 0:
        raise DataError(f"the model takes batches of exactly {batch} samples; the data has "
                        f"{len(data)}")
    out = data.take(usable) if usable < len(data) else data
    notes = out.notes + ([f"the model's batch is fixed at {batch}: {usable} of "
                          f"{len(data)} samples used"] if usable < len(data) else [])
    return Dataset(out.inputs, out.labels, out.name, notes, batch)

def _builtin(base: str, arg: str, inputs: Sequence[InputSpec], seed: int) -> Dataset:
    if base == "random":
        try:
            count = int(arg) if arg else 64
        except ValueError:
            raise DataError(f"random data takes a sample count, as in random:64, not {arg!r}") from None
        return random_data(inputs, count, seed)
    if base == "digits":
        return _digits(inputs)
    return _fashion_mnist(arg or "eval", inputs)


def _fashion_mnist(split: str, inputs: Sequence[InputSpec]) -> Dataset:
    from onnxamc.models import DATA_DIR

    if split in ("eval", "calib"):
        path = DATA_DIR / f"fashion-mnist-{split}.npz"
        if not path.exists():
            raise DataError(f"bundled subset {path} is missing (run python -m onnxamc.models.train --subsets)")
        with np.load(path) as f:
            images, labels = _scale(f["images"]), f["labels"]
    elif split in ("test", "train"):
        images, labels = read_fashion_mnist_idx("t10k" if split == "test" else "train")
    else:
        raise DataError(f"unknown Fashion-MNIST split {split!r}; use eval, calib, test or train")
    name = _single_input(inputs, "fashion-mnist").name
    return Dataset({name: images}, labels, f"fashion-mnist:{split}")


def _digits(inputs: Sequence[InputSpec]) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits dataset needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    spec = _single_input(inputs, "digits")
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    per_sample = [d for d in spec.shape[1:]]
    if all(isinstance(d, int) for d in per_sample) and int(np.prod(per_sample)) == 64:
        images = images.reshape(len(images), *per_sample)
    return Dataset({spec.name: images}, bunch.target.astype(np.int64), "digits")


def random_data(inputs: Sequence[InputSpec], count: int = 64, seed: int = 0) -> Dataset:
    """Inputs drawn to the model's shapes: for latency and size studies without data."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in inputs:
        dims = list(spec.shape)
        if any(d is None for d in dims[1:]):
            raise DataError(f"input {spec.name!r} has dynamic dimensions {_fmt(spec.shape)} "
                            "beyond the batch: random data needs a fixed shape (give one "
                            f"with --input-shape {spec.name}:1,...)")
        shape = (count, *dims[1:]) if dims else ()
        if np.issubdtype(spec.dtype, np.floating):
            arrays[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
        elif np.issubdtype(spec.dtype, np.integer):
            arrays[spec.name] = rng.integers(0, 100, shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            arrays[spec.name] = rng.random(shape) < 0.5
        else:
            raise DataError(f"cannot draw random data for input {spec.name!r} of type {spec.dtype}")
    return Dataset(arrays, None, f"random:{count}")


def _read_npz(path: Path, inputs: Sequence[InputSpec]) -> Dataset:
    if not path.exists():
        names = ", ".join(n if n != "fashion-mnist" else "fashion-mnist[:eval|calib|test|train]"
                          for n in BUILTIN_NAMES)
        raise DataError(f"data {str(path)!r} is neither a file nor a built-in name ({names})")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # zipfile, pickle and format errors all mean the same here
        raise DataError(f"cannot read {path} as an .npz file: {exc}") from None
    labels = arrays.pop(LABELS, None)
    if labels is not None:
        labels = labels.astype(np.int64).reshape(-1)
    if len(arrays) == 1 and len(inputs) == 1 and inputs[0].name not in arrays:
        arrays = {inputs[0].name: next(iter(arrays.values()))}  # a lone array feeds the lone input
    return Dataset(arrays, labels, path.name)


def check_fits(data: Dataset, inputs: Sequence[InputSpec]) -> None:
    """One-line errors for a missing input, a wrong shape, dtype or sample count."""
    expected = {s.name for s in inputs}
    extra = sorted(set(data.inputs) - expected)
    if extra:
        raise DataError(f"data has arrays {extra} that are not model inputs "
                        f"(inputs: {sorted(expected)})")
    counts = set()
    for spec in inputs:
        if spec.name not in data.inputs:
            raise DataError(f"data has no array for model input {spec.name!r}")
        arr = data.inputs[spec.name]
        if arr.ndim != len(spec.shape) or any(
            want is not None and want != got for want, got in zip(spec.shape[1:], arr.shape[1:])
        ):
            raise DataError(f"input {spec.name!r}: data shape {_fmt(arr.shape)} does not fit "
                            f"model shape {_fmt(spec.shape)}")
        if arr.dtype != spec.dtype:
            if np.can_cast(arr.dtype, spec.dtype, "same_kind") and arr.dtype.kind == spec.dtype.kind:
                data.inputs[spec.name] = arr.astype(spec.dtype)
            else:
                raise DataError(f"input {spec.name!r}: data type {arr.dtype} does not fit "
                                f"model type {spec.dtype}")
        if arr.ndim:
            counts.add(len(arr))
    if data.labels is not None:
        counts.add(len(data.labels))
    if len(counts) > 1:
        raise DataError(f"data arrays and labels have different sample counts: {sorted(counts)}")


def _single_input(inputs: Sequence[InputSpec], what: str) -> InputSpec:
    if len(inputs) != 1:
        raise DataError(f"{what} data feeds a single-input model; this model has "
                        f"{len(inputs)} inputs ({', '.join(s.name for s in inputs)})")
    return inputs[0]


def _fmt(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"
