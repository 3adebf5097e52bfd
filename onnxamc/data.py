"""Data: what a model is evaluated and calibrated on, checked against its inputs.

Forms (`load_data`): an `.npz` file (arrays named after the model inputs, batch first,
optional `labels`), a built-in name (below), `package.module:function` (a function
returning an iterable of feed dicts, read batch by batch: onnxamc.data_sources), a
folder of images (onnxamc.data_images), and in the API a dict of arrays, any iterable of
feed dicts, a torch DataLoader or a function returning one.

Two kinds share one protocol (labelled_batches, batches, peek, one, take, split,
in_memory, size, has_labels): `Dataset` holds arrays in memory; `StreamData` reads its
source again on each pass and never holds it whole. Labels are class indices (one per
sample) or arrays (targets, masks); without labels, quality means fidelity to the
original model (onnxamc.quality).

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from onnxamc.data_checks import check_batch, check_shared_batch_axis, fmt_shape
from onnxamc.data_sources import StreamData, as_feed, part_mask
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

    @property
    def size(self) -> int:
        return len(self)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        """Batches of `size` samples, or of the model's fixed batch."""
        step = self.batch or size
        for start in range(0, len(self), step):
            yield self._rows(slice(start, start + step))

    def labelled_batches(self, size: int) -> Iterator[tuple[dict[str, np.ndarray], Any]]:
        for start, feed in zip(range(0, len(self), size), self.batches(size)):
            yield feed, None if self.labels is None else self.labels[start : start + size]

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

    def peek(self) -> tuple[dict[str, np.ndarray], Any]:
        return self.one(), None if self.labels is None else self.labels[:1]

    def split(self, fraction: float) -> tuple["Dataset", "Dataset"]:
        """(what chooses, what is held out), the held-out share spread along the set
        as data_sources.part_mask spreads it."""
        held = part_mask(0, len(self), "held-out", fraction)
        parts = []
        for side, mask in (("select", ~held), ("held-out", held)):
            if not mask.any():
                raise DataError(f"data {self.name}: a held-out split of {fraction:g} leaves the "
                                f"{side} part empty ({len(self)} samples)")
            parts.append(Dataset({k: v[mask] for k, v in self.inputs.items()},
                                 None if self.labels is None else self.labels[mask],
                                 f"{self.name} ({side} part, {int(mask.sum())} samples)",
                                 list(self.notes)))
        return parts[0], parts[1]

    def in_memory(self) -> "Dataset":
        return self


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


def load_data(spec: Any, inputs: Sequence[InputSpec], limit: int | None = None,
              seed: int = 0, *, role: str = "data", preprocess: Any = None,
              in_memory: bool = False) -> "Data":
    """Data in any of the forms above, checked against `inputs` (in-memory data whole,
    streamed data on its first batch now and on every batch as it is read); with
    `in_memory`, the first `limit` samples read into a Dataset (and no more)."""
    if limit is not None and limit < 1:
        raise DataError(f"{role}: a sample count of {limit} leaves nothing to measure")
    data = open_data(spec, inputs, seed, role, preprocess)
    one_shot = getattr(data, "one_shot", False)
    data = data.take(limit)
    if one_shot or in_memory:  # an iterator reads once: keep what was read
        data = data.in_memory()
    if isinstance(data, Dataset):
        check_fits(data, inputs, role)
        return fit_batch(data, inputs)
    data.peek()
    return data


def open_data(spec: Any, inputs: Sequence[InputSpec], seed: int = 0, role: str = "data",
              preprocess: Any = None) -> "Data":
    """The data `spec` names, not yet limited or checked."""
    if isinstance(spec, (Dataset, StreamData)):
        return spec
    if isinstance(spec, (str, Path)):
        return _named(spec, inputs, seed, role, preprocess)
    if isinstance(spec, np.ndarray) or isinstance(spec, Mapping):
        feed, labels = as_feed(spec, inputs, role)
        return Dataset(feed, labels, "arrays")
    if callable(spec):
        return StreamData(spec, inputs, getattr(spec, "__name__", "function"), role=role)
    if isinstance(spec, Iterable):
        data = StreamData(lambda: spec, inputs, type(spec).__name__, role=role)
        data.one_shot = iter(spec) is spec
        return data
    raise DataError(f"{role}: {type(spec).__name__} is not data (an .npz path, a built-in "
                    "name, package.module:function, an image folder or an iterable of feed "
                    "dicts)")


def _named(spec: str | Path, inputs, seed: int, role: str, preprocess) -> "Data":
    from onnxamc.entry_points import import_entry, is_entry_point

    text = str(spec)
    path = Path(text)
    base, _, arg = text.partition(":")
    if path.is_dir():
        from onnxamc.data_images import image_folder

        return image_folder(path, inputs, preprocess, role)
    if base in BUILTIN_NAMES and not path.exists():
        return _builtin(base, arg, inputs, seed)
    if not path.exists() and is_entry_point(text):
        function = import_entry(text, f"{role} function", DataError)
        if not callable(function):
            raise DataError(f"{role} {text} is a {type(function).__name__}, not a function")
        return StreamData(lambda: _call(function, text, role), inputs, text, role=role)
    return _read_npz(path, inputs)


def _call(function, name: str, role: str):
    try:
        return function()
    except DataError:
        raise
    except Exception as exc:
        from onnxamc.errors import first_line

        raise DataError(f"{role} function {name} raised {type(exc).__name__}: "
                        f"{first_line(exc)}") from None


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
    check_shared_batch_axis(inputs)
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in inputs:
        dims = list(spec.shape)
        if any(d is None for d in dims[1:]):
            raise DataError(f"input {spec.name!r} has dynamic dimensions {fmt_shape(spec.shape)} "
                            "beyond the batch: random data needs a fixed shape (give one "
                            f"with --input-shape {spec.name}:1,...)")
        shape = (count, *dims[1:]) if dims else ()
        if np.issubdtype(spec.dtype, np.floating):
            arrays[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
        elif np.issubdtype(spec.dtype, np.integer) and "mask" in spec.name.lower():
            arrays[spec.name] = np.ones(shape, spec.dtype)  # attention masks: every token
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
        raise DataError(f"data {str(path)!r} is neither a file nor a built-in name ({names}), "
                        "nor a folder of images or package.module:function")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # zipfile, pickle and format errors all mean the same here
        raise DataError(f"cannot read {path} as an .npz file: {exc}") from None
    labels = arrays.pop(LABELS, None)  # checked and made class indices by check_fits
    if len(arrays) == 1 and len(inputs) == 1 and inputs[0].name not in arrays:
        arrays = {inputs[0].name: next(iter(arrays.values()))}  # a lone array feeds the lone input
    return Dataset(arrays, labels, path.name)


def check_fits(data: Dataset, inputs: Sequence[InputSpec], role: str = "data") -> None:
    """One-line errors for a missing input, a wrong shape, dtype or sample count, NaN or
    Inf values, no samples (data_checks.check_batch on the whole set)."""
    data.inputs, data.labels = check_batch(data.inputs, data.labels, inputs,
                                           f"{role} {data.name}")


def _single_input(inputs: Sequence[InputSpec], what: str) -> InputSpec:
    if len(inputs) != 1:
        raise DataError(f"{what} data feeds a single-input model; this model has "
                        f"{len(inputs)} inputs ({', '.join(s.name for s in inputs)})")
    return inputs[0]


Data = Dataset | StreamData
