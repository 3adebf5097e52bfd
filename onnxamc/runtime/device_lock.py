"""One latency measurement at a time per device, on a core of its own.

Workers build and score candidates in parallel; timing must not overlap, or two
processes would share the cores they time on and corrupt each other's ratios. A file
lock keyed by the target (one per device on this machine; remote boards queue in their
RPC tracker instead) makes measurements take turns, across processes and across
studies. While it holds the lock, the measuring thread is pinned to the measurement
core; workers leave that core to it while they compute (`share_machine`).

Another core is not enough on its own: the cores share caches and memory bandwidth. So
the workers' heavy compute (evaluation and calibration batches) also gives way: between
batches it waits while a measurement holds the device's lock (`wait_for_quiet`), and
what a measurement then overlaps is at most one batch, inside its warm-up.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

LOCK_DIR = Path(tempfile.gettempdir()) / "onnxamc-locks"


def lock_path(key: str) -> Path:
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return LOCK_DIR / f"measure-{digest}.lock"


def measurement_core() -> int | None:
    """The core measurements run on: the last of the cores this process started with
    (None with a single core, or where affinity cannot be set)."""
    return max(_START_CORES) if _START_CORES and len(_START_CORES) > 1 else None


def share_machine(key: str | None) -> None:
    """This process is one of several workers on this machine: keep its compute off the
    measurement core, and, with the lock `key` of a device of this machine (None for a
    remote board), let its heavy compute wait for measurements on it."""
    global _QUIET
    core = measurement_core()
    if core is not None:
        os.sched_setaffinity(0, _START_CORES - {core})
    _close_quiet()
    if key is not None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        _QUIET = open(lock_path(key), "a")  # kept open: batches only flock it


def stop_sharing_machine() -> None:
    """Compute on every core again, never waiting (the other workers are gone)."""
    if measurement_core() is not None:
        os.sched_setaffinity(0, _START_CORES)
    _close_quiet()


def wait_for_quiet() -> None:
    """Between two batches of heavy compute: returns at once (two system calls) unless
    another worker is measuring, then as soon as it is done."""
    if _QUIET is not None:
        fcntl.flock(_QUIET, fcntl.LOCK_SH)
        fcntl.flock(_QUIET, fcntl.LOCK_UN)


def _close_quiet() -> None:
    global _QUIET
    if _QUIET is not None:
        _QUIET.close()
        _QUIET = None


@contextmanager
def exclusive_measurement(key: str, pin: bool = True) -> Iterator[dict]:
    """Hold the device's lock (waiting for it) and, with `pin`, run on the measurement
    core; yields {"core": the core or None, "waited": seconds spent waiting}."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(lock_path(key), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        info = {"core": None, "waited": time.perf_counter() - start}
        before = _allowed()
        core = measurement_core() if pin else None
        try:
            if core is not None:
                os.sched_setaffinity(0, {core})
                info["core"] = core
            yield info
        finally:
            if info["core"] is not None and before:
                os.sched_setaffinity(0, before)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _allowed() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


_START_CORES = _allowed()
_QUIET: IO | None = None  # the device lock file this process's compute gives way to
