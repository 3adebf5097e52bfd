"""`package.module:name` entry points: a torch factory, a user's metric or data function.

The current directory is importable, as it is for `python -m`, so a module beside the
command line is found.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from onnxamc.errors import OnnxAmcError


def is_entry_point(text: str) -> bool:
    """`pkg.mod:name`: a module path, a colon, an attribute (no path separators)."""
    module, sep, attr = text.partition(":")
    return bool(sep and module and attr and "/" not in text and "\\" not in text
                and all(part.isidentifier() for part in module.split("."))
                and attr.isidentifier())


def import_entry(entry: str, what: str, error: type[OnnxAmcError]) -> Any:
    """The object `entry` names, or a one-line `error` saying why not."""
    module_name, sep, attr = entry.partition(":")
    if not sep or not module_name or not attr:
        raise error(f"{what} {entry!r} is not of the form package.module:name")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise error(f"cannot import {module_name!r} for the {what}: {type(exc).__name__}: "
                    f"{_first_line(exc)}") from None
    found = getattr(module, attr, None)
    if found is None:
        raise error(f"module {module_name!r} has no attribute {attr!r}")
    return found


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
