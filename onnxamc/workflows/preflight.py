"""Before any work: everything a command will need, checked in the order a user fixes
it, each failure one line naming the input.

A search, a sensitivity table or a training can take minutes to hours; an output that
cannot be written, a package that is not installed or a search range no policy can take
must stop the command before that work, not after it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Iterable

from onnxamc.errors import OnnxAmcError, SearchError
from onnxamc.files import check_folder_writable, check_writable

# The packages each optional part needs, and the extra of pyproject.toml that has them.
AGENT_NEEDS = {"gp": ("torch", "scipy"), "qmc": ("scipy",), "cmaes": ("cmaes",),
               "ddpg": ("torch",), "rl": ("torch",)}
TRAINING_NEEDS = ("torch", "onnx2fx")
EXPORT_NEEDS = ("torch", "onnxscript")
TORCH_NOTE = " (install torch==2.13.0 first: an unpinned torch pulls a CUDA build)"


class DependencyError(OnnxAmcError):
    """An optional package the command needs is not installed."""


def require(purpose: str, modules: Iterable[str], extra: str) -> None:
    """A one-line DependencyError naming the packages `purpose` needs and the extra that
    installs them, unless all are installed."""
    missing = [m for m in modules if not importable(m)]
    if missing:
        raise DependencyError(f"{purpose} needs {' and '.join(missing)}, not installed here: "
                              f"pip install 'onnxamc[{extra}]'"
                              + (TORCH_NOTE if "torch" in missing else ""))


def importable(module: str) -> bool:
    """Whether `module` is installed, found without importing it (torch takes seconds)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_outputs(*paths: str | Path | None) -> None:
    """Every file output writable, before the work."""
    for path in paths:
        if path is not None:
            check_writable(path)


def check_report_folder(folder: str | Path) -> None:
    check_folder_writable(folder, "report folder")


def journal_path(storage: str) -> Path | None:
    """The file of a journal storage (None for a database URL)."""
    return None if "://" in storage else Path(storage)


def check_search(config, space) -> None:
    """The agent's packages and the action ranges of a search (`config`: SearchConfig,
    `space`: search.SearchSpace)."""
    require(f"agent {config.agent}", AGENT_NEEDS.get(config.agent, ()), "search")
    check_action_ranges(space)


def check_action_ranges(space) -> None:
    """Each `--actions NAME=RANGE` holds only values the action's field takes: a range
    beyond them would fail every trial that draws from it."""
    from onnxamc.actions import SEARCHABLE, FloatRange

    for name, values in space.ranges.items():
        field = next(f for f in SEARCHABLE[name].fields if f.name == SEARCHABLE[name].search.field)
        ends = (values.low, values.high) if isinstance(values, FloatRange) else values
        for value in ends:
            problem = _field_problem(field, value)
            if problem:
                raise SearchError(f"--actions {name}: {field.name} {problem}")


def _field_problem(field, value: Any) -> str | None:
    try:
        return field.check(field.normalize(value))
    except ValueError as exc:
        return f"{exc}, got {value!r}"
