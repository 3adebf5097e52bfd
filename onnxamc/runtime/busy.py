"""How busy the machine was while we measured: other processes' CPU use.

Read from /proc/stat (every CPU's busy time) and /proc/self/stat (our own): what the
machine spent beyond our process, over the wall time, is the number of cores other
processes kept busy. When the measurement is pinned to one core, that core's own line
says whether anything shared it. A core of its own is not enough when every other core
is saturated: the cores share caches, memory bandwidth and, on a virtual machine, the
host's scheduling, and a ResNet-20 ratio moved by 15% beside one CPU burner on 2 cores
with its own core left free. Elsewhere than Linux the reading is None (unknown).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
SELF_STAT = Path("/proc/self/stat")
# Another process held our core this much of the time, or the other cores were busy
# within this much of all of them: the ratio may be disturbed.
CONTENDED = 0.25


@dataclass(frozen=True)
class Busy:
    other_cores: float  # cores other processes kept busy on average while we measured
    cpus: int
    core: int | None = None  # the core the measurement was pinned to
    core_taken: float | None = None  # share of that core's time others used

    @property
    def contended(self) -> bool:
        """Whether other processes most likely took time from the measurement: they
        shared its core, or kept every other core busy."""
        if self.core_taken is not None and self.core_taken > CONTENDED:
            return True
        return self.other_cores > max(self.cpus - 1 - CONTENDED, CONTENDED)

    def describe(self) -> str:
        where = f"; {100 * self.core_taken:.0f}% of core {self.core}" \
            if self.core_taken is not None else ""
        return f"other processes used {self.other_cores:.1f} of {self.cpus} cores{where}"

    def to_dict(self) -> dict:
        return asdict(self)


class CpuWatch:
    """Start it before measuring, `stop()` after: the Busy reading of the interval."""

    def __init__(self, core: int | None = None):
        self.core = core
        self._start = _snapshot(core)

    def stop(self) -> Busy | None:
        end = _snapshot(self.core)
        if self._start is None or end is None:
            return None
        wall = end[0] - self._start[0]
        if wall <= 0:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        own = (end[2] - self._start[2]) / ticks
        others = max((end[1] - self._start[1]) / ticks - own, 0.0) / wall
        taken = None
        if self.core is not None and end[3] is not None:
            taken = min(max((end[3] - self._start[3]) / ticks - own, 0.0) / wall, 1.0)
        return Busy(round(others, 3), os.cpu_count() or 1, self.core,
                    None if taken is None else round(taken, 3))


def _snapshot(core: int | None):
    """(wall, busy ticks of all CPUs, our ticks, busy ticks of `core`) or None."""
    try:
        lines = PROC_STAT.read_text().splitlines()
        own = SELF_STAT.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    total = _busy_ticks(lines[0])
    per_core = None
    if core is not None:
        per_core = next((_busy_ticks(l) for l in lines if l.startswith(f"cpu{core} ")), None)
    return time.perf_counter(), total, int(own[11]) + int(own[12]), per_core


def _busy_ticks(line: str) -> int:
    """user + nice + system + irq + softirq + steal of one /proc/stat cpu line."""
    fields = [int(v) for v in line.split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # counted in user already
    return sum(fields) - idle - guest
