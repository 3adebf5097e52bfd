"""The zoo's record type: what a model is, where it comes from, how it is fed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SOURCES = ("torchvision", "timm", "torch", "pypi", "handmade")
EXPORTERS = ("dynamo", "torchscript")
KINDS = ("uniform", "ids", "mask", "constant")


@dataclass(frozen=True)
class Input:
    """One model input as the zoo feeds it.

    kind: "uniform" floats in [0, 1); "ids" integers in [0, high) (token ids); "mask"
    an attention mask (ones, then a random number of trailing zeros, never all zero);
    "constant" every element `value` (an input that only takes given values, such as a
    sample rate).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    kind: str = "uniform"
    high: int = 2
    value: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"input {self.name}: unknown kind {self.kind!r}")

    def draw(self, rng: np.random.Generator, batch: int | None = None) -> np.ndarray:
        shape = self.shape if batch is None or not self.shape else (batch, *self.shape[1:])
        if self.kind == "constant":
            return np.full(shape, self.value, dtype=self.dtype)
        if self.kind == "ids":
            return rng.integers(0, self.high, shape).astype(self.dtype)
        if self.kind == "mask":
            length = shape[-1]
            keep = rng.integers(1, length + 1, shape[:-1])[..., None]
            return (np.arange(length) < keep).astype(self.dtype)
        return rng.random(shape, dtype=np.float32).astype(self.dtype)


@dataclass(frozen=True)
class Entry:
    """One zoo model.

    `model` says what `source` builds: a torchvision or timm model name, a builder
    function in zoo/builders.py (source "torch" and "handmade"), or a file inside an
    installed PyPI package ("import_name/path/in/it.onnx", source "pypi", installed as
    pip package `package`). `dynamic` lists the input axes exported as dynamic
    ("batch", "spatial", "sequence"); `opset` None is the exporter's default;
    `kwargs` go to the model's constructor.
    """

    name: str
    source: str
    family: str
    model: str
    inputs: tuple[Input, ...]
    exporter: str | None = None
    opset: int | None = None
    kwargs: tuple[tuple[str, object], ...] = ()
    dynamic: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("output",)
    package: str | None = None
    slow: bool = False
    notes: str = ""

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"{self.name}: unknown source {self.source!r}")
        if (self.exporter is None) != (self.source in ("pypi", "handmade")):
            raise ValueError(f"{self.name}: exporter {self.exporter!r} does not fit source "
                             f"{self.source!r}")
        if self.exporter is not None and self.exporter not in EXPORTERS:
            raise ValueError(f"{self.name}: unknown exporter {self.exporter!r}")

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """The concrete input shapes (what `--input-shape` gives a dynamic model)."""
        return {i.name: i.shape for i in self.inputs}

    def feed(self, seed: int = 0, batch: int | None = None) -> dict[str, np.ndarray]:
        """Inputs drawn to the entry's shapes (the batch replaced when given)."""
        rng = np.random.default_rng(seed)
        return {spec.name: spec.draw(rng, batch) for spec in self.inputs}
