"""Data read batch by batch: your function, any iterable of feed dicts, a torch
DataLoader, a folder of images; never held in memory whole.

A `StreamData` opens its source again for every pass over it (a search scores each
candidate on the whole evaluation set), so the source must give the same samples in the
same order each time: a function is called again, a list or a DataLoader iterated again.
Each item may be
  - a feed dict {input name: array} (a "labels" or "label" entry holds the labels),
  - a tuple (inputs, labels), where inputs is a feed dict or, for a one-input model, an
    array,
  - an array (one-input model),
with a batch axis first, or one sample without it; torch tensors are taken as numpy.
Batches of any size are regrouped to the size the reader asks for; each batch is checked
(onnxamc.data_checks) as it arrives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from onnxamc.data_checks import check_batch
from onnxamc.errors import DataError
from onnxamc.graph.model import InputSpec

LABEL_KEYS = ("labels", "label")
Batch = tuple[dict[str, np.ndarray], "np.ndarray | None"]
SELECT, HELD_OUT = "select", "held-out"


class StreamData:
    """Data from a source opened once per pass; `limit` keeps the first samples only,
    `part` (SELECT or HELD_OUT with `fraction`) one side of a held-out split."""

    def __init__(self, open_source: Callable[[], Iterable], inputs: Sequence[InputSpec],
                 name: str, *, role: str = "data", limit: int | None = None,
                 part: tuple[str, float] | None = None, size: int | None = None,
                 notes: list[str] | None = None):
        self.open_source, self.inputs, self.name, self.role = open_source, list(inputs), name, role
        self.limit, self.part = limit, part
        self.notes = list(notes or [])
        self._size = size if limit is None and part is None else None
        self._first: Batch | None = None

    # --- the common data protocol (shared with data.Dataset) ----------------------------
    @property
    def size(self) -> int | None:
        """The sample count, once known (a finished pass counts it)."""
        return self._size

    @property
    def has_labels(self) -> bool:
        return self.peek()[1] is not None

    def __len__(self) -> int:
        if self._size is None:
            for _ in self.labelled_batches(1024):  # counts as it goes
                pass
        return self._size

    def labelled_batches(self, size: int) -> Iterator[Batch]:
        return rebatch(self._samples(), size)

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        return (feed for feed, _ in self.labelled_batches(size))

    def peek(self) -> Batch:
        """The first sample (read once, then kept): checks the source before any work."""
        if self._first is None:
            for feed, labels in self.labelled_batches(1):
                self._first = feed, labels
                break
        return self._first

    def one(self) -> dict[str, np.ndarray]:
        return self.peek()[0]

    def take(self, n: int | None) -> "StreamData":
        if n is None or (self.limit is not None and self.limit <= n):
            return self
        return self._view(limit=n, part=self.part)

    def split(self, fraction: float) -> tuple["StreamData", "StreamData"]:
        """(what chooses, what is held out): every sample goes to one side, a share
        `fraction` of them to the held-out side, interleaved along the stream."""
        return self._view(self.limit, (SELECT, fraction)), \
            self._view(self.limit, (HELD_OUT, fraction))

    def in_memory(self):
        """All of it as one in-memory Dataset (training needs random access)."""
        from onnxamc.data import Dataset

        feeds, labels = [], []
        for feed, lab in self.labelled_batches(1024):
            feeds.append(feed)
            labels.append(lab)
        joined = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
        held = None if labels[0] is None else np.concatenate(labels)
        return Dataset(joined, held, self.name, list(self.notes))

    # --- reading ------------------------------------------------------------------------
    def _view(self, limit, part) -> "StreamData":
        view = StreamData(self.open_source, self.inputs, self.name, role=self.role,
                          limit=limit, part=part, notes=self.notes)
        if part is not None:
            view.name = f"{self.name} ({part[0]} part, {_share(part)})"
        return view

    def _samples(self) -> Iterator[Batch]:
        where = f"{self.role} {self.name}"
        try:
            iterator = iter(self.open_source())
        except DataError:
            raise
        except TypeError:
            raise DataError(f"{where} is not an iterable of feed dicts") from None
        seen = kept = 0
        labelled = None
        try:
            for number, item in enumerate(iterator):
                at = f"{where}, batch {number}"
                feed, labels = check_batch(*as_feed(item, self.inputs, at), self.inputs, at, seen)
                if labelled is not None and labelled != (labels is not None):
                    raise DataError(f"{at}: some batches have labels and some do not")
                labelled = labels is not None
                count = len(labels) if labels is not None else len(next(iter(feed.values())))
                if self.limit is not None and seen + count > self.limit:
                    count = self.limit - seen
                    feed, labels = _slice(feed, labels, np.arange(count))
                if self.part is not None:
                    feed, labels = _slice(feed, labels, np.flatnonzero(
                        part_mask(seen, count, *self.part)))
                seen += count
                taken = len(next(iter(feed.values())))
                if taken:
                    kept += taken
                    yield feed, labels
                if self.limit is not None and seen >= self.limit:
                    break
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        if not kept:
            what = "yielded no samples" if not seen else "leaves no samples in this part"
            raise DataError(f"{where} {what} (an empty iterable?)")
        if self._size is None:
            self._size = kept


def as_feed(item: Any, inputs: Sequence[InputSpec], where: str) -> Batch:
    """A feed dict and labels from what a source yields, with a batch axis."""
    labels = None
    if isinstance(item, Mapping):
        feed = dict(item)
        for key in LABEL_KEYS:
            if key in feed and key not in {s.name for s in inputs}:
                labels = feed.pop(key)
                break
    elif isinstance(item, (tuple, list)) and 1 <= len(item) <= 2:
        feed = item[0]
        labels = item[1] if len(item) == 2 else None
        if not isinstance(feed, Mapping):
            feed = {_only_input(inputs, where): feed}
    elif isinstance(item, (tuple, list)):
        raise DataError(f"{where}: a {type(item).__name__} of {len(item)} items; give "
                        "(inputs, labels) or a feed dict {input name: array}")
    else:
        feed = {_only_input(inputs, where): item}
    feed = {k: to_numpy(v) for k, v in dict(feed).items()}
    labels = None if labels is None else to_numpy(labels)
    return _with_batch_axis(feed, labels, inputs)


def to_numpy(value: Any) -> np.ndarray:
    """numpy from numpy, lists, numbers or torch tensors (without importing torch)."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _with_batch_axis(feed, labels, inputs) -> Batch:
    """One sample given without its batch axis gets one (inputs and labels alike)."""
    ranks = {s.name: len(s.shape) for s in inputs}
    single = bool(feed) and all(k in ranks and v.ndim == ranks[k] - 1 for k, v in feed.items())
    if not single:
        return feed, labels
    return {k: v[None] for k, v in feed.items()}, \
        (None if labels is None else np.asarray(labels)[None])


def _only_input(inputs: Sequence[InputSpec], where: str) -> str:
    if len(inputs) != 1:
        raise DataError(f"{where}: the model has {len(inputs)} inputs "
                        f"({', '.join(s.name for s in inputs)}): give feed dicts by name")
    return inputs[0].name


def rebatch(batches: Iterable[Batch], size: int) -> Iterator[Batch]:
    """The same samples in batches of `size` (the last may be smaller)."""
    held: list[Batch] = []
    count = 0
    for feed, labels in batches:
        n = len(next(iter(feed.values())))
        if not held and n == size:
            yield feed, labels
            continue
        held.append((feed, labels))
        count += n
        while count >= size:
            joined = _join(held)
            yield _slice(*joined, slice(0, size))
            rest = _slice(*joined, slice(size, None))
            count -= size
            held = [rest] if count else []
    if count:
        yield _join(held)


def part_mask(offset: int, count: int, part: str, fraction: float) -> np.ndarray:
    """Which of samples offset..offset+count-1 belong to `part`: sample i is held out
    when floor((i + 1) f) > floor(i f), a share f spread evenly along the set."""
    index = np.arange(offset, offset + count, dtype=np.float64)
    held = np.floor((index + 1) * fraction) > np.floor(index * fraction)
    return held if part == HELD_OUT else ~held


def _join(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    feed = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    labels = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
    return feed, labels


def _slice(feed, labels, index) -> Batch:
    return {k: v[index] for k, v in feed.items()}, (None if labels is None else labels[index])


def _share(part: tuple[str, float]) -> str:
    side, fraction = part
    return f"{100 * (fraction if side == HELD_OUT else 1 - fraction):g}%"
