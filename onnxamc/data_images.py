"""A folder of images as data: read with Pillow a batch at a time, preprocessed as the
model expects.

Images directly in the folder have no labels; images in subfolders are labelled by
subfolder, the classes numbered in sorted order (torchvision's ImageFolder layout).
The preprocessing spec (`--preprocess`) is comma-separated fields:

    resize=256 | resize=224x224   the shorter side to 256 / exactly 224x224 (H x W)
    crop=224 | crop=224x192       a centre crop
    mean=0.485/0.456/0.406        subtracted per channel, after scaling
    std=0.229/0.224/0.225         divided per channel
    scale=255                     pixel values are divided by this (default 255 for a
                                  float input, 1 for an integer one)
    layout=nchw | nhwc            default: read off the model input's shape
    dtype=float32                 default: the model input's type
    color=rgb | l | bgr           default: from the input's channel count (1: l, 3: rgb)

Without resize or crop an image is resized to the model input's height and width.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from onnxamc.data_sources import StreamData
from onnxamc.errors import DataError
from onnxamc.graph.model import InputSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                  ".pgm")
READ_BATCH = 32
LAYOUTS, COLORS = ("nchw", "nhwc"), ("rgb", "l", "bgr")


@dataclass(frozen=True)
class Preprocess:
    resize: tuple[int, int] | int | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float | None = None
    layout: str | None = None
    dtype: str | None = None
    color: str | None = None

    @classmethod
    def parse(cls, spec: "str | dict | Preprocess | None") -> "Preprocess":
        if spec is None or isinstance(spec, Preprocess):
            return spec or cls()
        fields = spec if isinstance(spec, dict) else _fields(spec)
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise DataError(f"preprocess: unknown field {unknown[0]!r} (fields: "
                            f"{', '.join(cls.__dataclass_fields__)})")
        values = {k: _value(k, v) for k, v in fields.items()}
        return cls(**values)

    def for_input(self, spec: InputSpec) -> "Preprocess":
        """Defaults filled from the model input: layout, type, color, size, scale."""
        if len(spec.shape) != 4:
            raise DataError(f"an image folder feeds a 4-d image input; {spec.name!r} has shape "
                            f"{list(spec.shape)}")
        layout = self.layout or ("nhwc" if spec.shape[3] in (1, 3, 4) and spec.shape[1]
                                 not in (1, 3, 4) else "nchw")
        channels = spec.shape[1] if layout == "nchw" else spec.shape[3]
        color = self.color or ("l" if channels == 1 else "rgb")
        dtype = self.dtype or spec.dtype.name
        scale = self.scale if self.scale is not None else \
            (255.0 if np.dtype(dtype).kind == "f" else 1.0)
        hw = tuple(spec.shape[2:4]) if layout == "nchw" else tuple(spec.shape[1:3])
        resize = self.resize
        if resize is None and self.crop is None and all(isinstance(d, int) for d in hw):
            resize = hw
        return replace(self, layout=layout, color=color, dtype=dtype, scale=scale, resize=resize)

    def __call__(self, image) -> np.ndarray:
        """One image (PIL) as one sample: no batch axis."""
        image = image.convert("L" if self.color == "l" else "RGB")
        if isinstance(self.resize, int):
            w, h = image.size
            short = min(w, h)
            image = image.resize((round(w * self.resize / short), round(h * self.resize / short)),
                                 _bilinear())
        elif self.resize is not None:
            image = image.resize((self.resize[1], self.resize[0]), _bilinear())
        if self.crop is not None:
            w, h = image.size
            ch, cw = self.crop
            left, top = (w - cw) // 2, (h - ch) // 2
            image = image.crop((left, top, left + cw, top + ch))
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
        if self.color == "bgr":
            pixels = pixels[..., ::-1]
        pixels = pixels / self.scale
        if self.mean is not None:
            pixels = pixels - np.asarray(self.mean, np.float32)
        if self.std is not None:
            pixels = pixels / np.asarray(self.std, np.float32)
        if self.layout == "nchw":
            pixels = pixels.transpose(2, 0, 1)
        return pixels.astype(self.dtype)


def image_folder(path: Path, inputs: Sequence[InputSpec], preprocess=None,
                 role: str = "data") -> StreamData:
    """The images under `path`, read lazily, labelled by subfolder when there are any."""
    if len(inputs) != 1:
        raise DataError(f"an image folder feeds a one-input model; this one has "
                        f"{len(inputs)} inputs ({', '.join(s.name for s in inputs)})")
    spec = inputs[0]
    files, labels, classes = list_images(path)
    prep = Preprocess.parse(preprocess).for_input(spec)

    def read() -> Iterator:
        for start in range(0, len(files), READ_BATCH):
            chunk = files[start:start + READ_BATCH]
            batch = np.stack([_read(f, prep, spec) for f in chunk])
            yield ({spec.name: batch}, None if labels is None
                   else np.asarray(labels[start:start + READ_BATCH], np.int64))

    notes = [f"{len(files)} images" + (f", classes {', '.join(classes)}" if classes else "")]
    return StreamData(read, inputs, str(path), role=role, size=len(files), notes=notes)


def list_images(path: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """(files, labels or None, class names) in sorted order."""
    top = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    folders = sorted(p for p in path.iterdir() if p.is_dir() and _images_in(p))
    if top and folders:
        raise DataError(f"image folder {path} has images at its top and in subfolders: put "
                        "them all in class subfolders, or none")
    if folders:
        files, labels = [], []
        for index, folder in enumerate(folders):
            found = _images_in(folder)
            files += found
            labels += [index] * len(found)
        return files, labels, [f.name for f in folders]
    if not top:
        raise DataError(f"image folder {path} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return top, None, []


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _read(path: Path, prep: Preprocess, spec: InputSpec) -> np.ndarray:
    Image = _pillow()
    try:
        with Image.open(path) as image:
            sample = prep(image)
    except (OSError, ValueError) as exc:
        raise DataError(f"image {path}: cannot read it: {exc}") from None
    want = spec.shape[1:]
    if any(w is not None and w != g for w, g in zip(want, sample.shape)):
        raise DataError(f"image {path} is {list(sample.shape)} after preprocessing; input "
                        f"{spec.name!r} takes {['N' if d is None else d for d in spec.shape]} "
                        "(set --preprocess resize=,crop=,layout=)")
    return sample


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image folders needs Pillow (pip install pillow)") from None
    return Image


def _bilinear():
    return _pillow().Resampling.BILINEAR


def _fields(text: str) -> dict[str, str]:
    fields = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        key, eq, value = item.partition("=")
        if not eq:
            raise DataError(f"preprocess: {item!r} is not FIELD=VALUE")
        fields[key.strip()] = value.strip()
    return fields


def _value(key: str, raw):
    if not isinstance(raw, str):
        return tuple(raw) if isinstance(raw, list) else raw
    try:
        if key in ("resize", "crop"):
            parts = [int(v) for v in raw.lower().split("x")]
            if key == "resize" and len(parts) == 1:
                return parts[0]
            return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        if key in ("mean", "std"):
            return tuple(float(v) for v in raw.split("/"))
        if key == "scale":
            return float(raw)
    except ValueError:
        raise DataError(f"preprocess: {key}={raw!r} is not a number "
                        "(resize=256 or 224x224, mean=0.485/0.456/0.406)") from None
    allowed = {"layout": LAYOUTS, "color": COLORS}.get(key)
    if allowed and raw.lower() not in allowed:
        raise DataError(f"preprocess: {key} must be one of {', '.join(allowed)}, got {raw!r}")
    if key == "dtype":
        try:
            return np.dtype(raw).name
        except TypeError:
            raise DataError(f"preprocess: unknown dtype {raw!r}") from None
    return raw.lower()
