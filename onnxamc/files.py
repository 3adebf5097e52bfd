"""Writing files so that a crash never leaves half of one: a temporary file in the same
folder, flushed to disk, then renamed over the target (atomic on POSIX)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from onnxamc.errors import OnnxAmcError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`."""
    path = Path(path)
    check_writable(path)
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


def check_writable(path: str | Path) -> Path:
    """A one-line error now, not after the work: the folder is made if missing, the path
    must not be a folder, and the folder must take a new file."""
    path = Path(path)
    if path.is_dir():
        raise OnnxAmcError(f"output {str(path)!r} is a directory; give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OnnxAmcError(f"cannot create the folder of {str(path)!r}: "
                           f"{exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists()
                                                         and not os.access(path, os.W_OK)):
        raise OnnxAmcError(f"cannot write {str(path)!r}: permission denied")
    return path
