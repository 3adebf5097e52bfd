"""Writing files so that a crash never leaves half of one: a temporary file in the same
folder, flushed to disk, then renamed over the target (atomic on POSIX). Every file
onnxamc writes for the user (models, policies, reports and their plots, sensitivity
tables, layer tables) goes through here.

`check_writable` says before any work whether an output can be written: it creates and
removes a file where the output will go, since permission bits say nothing for root, for
read-only mounts or for /proc.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from onnxamc.errors import OnnxAmcError


class OutputError(OnnxAmcError):
    """An output path that cannot be written (a folder, no permission, no such place)."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`."""
    path = Path(path)
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_figure(figure, path: str | Path, **options) -> Path:
    """A matplotlib figure written atomically, in the format its suffix names."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".") or "png", **options)
    return path


def check_writable(path: str | Path, what: str = "output") -> Path:
    """A one-line OutputError now, not after the work: `path` must not be a folder, and
    the nearest existing folder above it must take a new file (folders still missing are
    made when the file is written, not here, so a failed command leaves none behind)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {str(path)!r} is a directory; give a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"cannot write {what} {str(path)!r}: permission denied")
    _probe(path, path.parent, what)
    return path


def check_folder_writable(folder: str | Path, what: str = "output folder") -> Path:
    """The same for a folder that will receive files (a report)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {str(folder)!r} is a file; give a folder")
    _probe(folder, folder, what)
    return folder


def _probe(path: Path, folder: Path, what: str) -> None:
    """Create and remove a file in the nearest existing folder at or above `folder`."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {what} {str(path)!r}: {str(folder)!r} is a file, "
                          "not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".onnxamc-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write {what} {str(path)!r}: "
                          f"{exc.strerror or exc} in {str(folder)!r}") from None
