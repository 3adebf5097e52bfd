"""One latency measurement at a time per device, on a core of its own.

Workers build and score candidates in parallel; timing must not overlap, or two
processes would share the cores they time on and corrupt each other's ratios. A file
lock keyed by the target (one per device on this machine; remote boards queue in their
RPC tracker instead) makes measurements take turns, across processes and across
studies. While it holds the lock, the measuring thread is pinned to the measurement
core; workers leave that core to it while they compute (`share_machine`).

Another core is not enough on its own: the cores share caches, memory bandwidth and, on
a virtual machine, the host's scheduling. So the workers' heavy compute runs in steps
(`compute_step`: a candidate's build, its session, one evaluation or calibration batch):
a step starts only while no worker measures, and a measurement waits for the steps in
progress to end before it starts. Measuring then has the machine to itself. (When
compute only waited before each batch or build, a third of a 2-worker search's
measurements on 2 cores ran beside the other worker's build and were flagged busy.)
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


def steps_path(key: str) -> Path:
    """The lock compute steps hold shared and a measurement takes exclusive."""
    return lock_path(key).with_suffix(".steps")


def measurement_core() -> int | None:
    """The core measurements run on: the last of the cores this process started with
    (None with a single core, or where affinity cannot be set)."""
    return max(_START_CORES) if _START_CORES and len(_START_CORES) > 1 else None


def share_machine(key: str | None) -> None:
    """This process is one of several workers on this machine: keep its compute off the
    measurement core, and, with the lock `key` of a device of this machine (None for a
    remote board), let its heavy compute wait for measurements on it."""
    global _QUIET, _STEPS
    core = measurement_core()
    if core is not None:
        os.sched_setaffinity(0, _START_CORES - {core})
    _close_quiet()
    if key is not None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        _QUIET = open(lock_path(key), "a")  # kept open: steps only flock them
        _STEPS = open(steps_path(key), "a")


def stop_sharing_machine() -> None:
    """Compute on every core again, never waiting (the other workers are gone)."""
    if measurement_core() is not None:
        os.sched_setaffinity(0, _START_CORES)
    _close_quiet()


@contextmanager
def compute_step() -> Iterator[None]:
    """One step of heavy compute of a worker sharing the machine: it starts once no
    other worker measures (at once, four system calls, when none does), and a
    measurement waits for it to end. Steps inside a step are part of it."""
    global _DEPTH
    locks = _STEPS is not None and not _DEPTH and not _MEASURING
    if locks:
        fcntl.flock(_QUIET, fcntl.LOCK_SH)  # waits while a measurement holds the device
        fcntl.flock(_QUIET, fcntl.LOCK_UN)
        fcntl.flock(_STEPS, fcntl.LOCK_SH)
    _DEPTH += 1
    try:
        yield
    finally:
        _DEPTH -= 1
        if locks:
            fcntl.flock(_STEPS, fcntl.LOCK_UN)


@contextmanager
def _steps_stopped() -> Iterator[None]:
    """Inside a measurement: the other workers' steps in progress have ended and new
    ones wait. A measurement made inside one of this process's own steps does not wait
    (another worker waiting for the device inside its step would never end it)."""
    global _MEASURING
    waits = _STEPS is not None and not _DEPTH
    if waits:
        fcntl.flock(_STEPS, fcntl.LOCK_EX)
    _MEASURING = True
    try:
        yield
    finally:
        _MEASURING = False
        if waits:
            fcntl.flock(_STEPS, fcntl.LOCK_UN)


def _close_quiet() -> None:
    global _QUIET, _STEPS
    for handle in (_QUIET, _STEPS):
        if handle is not None:
            handle.close()
    _QUIET = _STEPS = None


@contextmanager
def exclusive_measurement(key: str, pin: bool = True) -> Iterator[dict]:
    """Hold the device's lock (waiting for it) and, with `pin`, run on the measurement
    core; yields {"core": the core or None, "waited": seconds spent waiting}."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(lock_path(key), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        before = _allowed()
        core = measurement_core() if pin else None
        try:
            with _steps_stopped():
                info = {"core": None, "waited": time.perf_counter() - start}
                if core is not None:
                    os.sched_setaffinity(0, {core})
                    info["core"] = core
                yield info
        finally:
            if core is not None and before:
                os.sched_setaffinity(0, before)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _allowed() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


_START_CORES = _allowed()
_QUIET: IO | None = None  # the device lock file this process's compute gives way to
_STEPS: IO | None = None  # its steps lock: held shared while a compute step runs
_DEPTH = 0  # compute steps this process is inside
_MEASURING = False  # this process measures: its own steps meanwhile never wait
