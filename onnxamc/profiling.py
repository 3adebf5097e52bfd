"""Where a search trial's time goes: named phases, timed in wall and CPU seconds.

Code that does a costly step wraps it in `phase("quality")`; nothing is recorded unless
a `Profile` is active (`with Profile() as p:`), so the timers cost one global read
otherwise. Phases nest: a phase inside "apply prune" is recorded as
"apply prune > reconstruct". CPU seconds are the process's (all its threads): on a
machine other jobs load, wall time grows and CPU time does not, so CPU time is what
a trial would take on idle cores.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

_active: "Profile | None" = None
_stack: list[str] = []


@dataclass
class PhaseTime:
    wall: float = 0.0
    cpu: float = 0.0
    count: int = 0


@dataclass
class Profile:
    """Accumulated phase times of everything run while it is active."""

    phases: dict[str, PhaseTime] = field(default_factory=dict)

    def __enter__(self) -> "Profile":
        global _active
        self._previous, _active = _active, self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = self._previous

    def add(self, name: str, wall: float, cpu: float) -> None:
        entry = self.phases.setdefault(name, PhaseTime())
        entry.wall += wall
        entry.cpu += cpu
        entry.count += 1

    def table(self, trials: int, total_wall: float, total_cpu: float) -> str:
        """Seconds per trial of each phase (nested phases indented under theirs)."""
        per = max(trials, 1)
        rows = [_row("phase", "wall s/trial", "cpu s/trial", "calls", "share")]
        for name in sorted(self.phases, key=lambda n: n.split(" > ")):
            t = self.phases[name]
            label = "  " * name.count(" > ") + name.rsplit(" > ", 1)[-1]
            rows.append(_row(label, f"{t.wall / per:.3f}", f"{t.cpu / per:.3f}", str(t.count),
                             f"{100 * t.wall / max(total_wall, 1e-9):.1f}%"))
        top = [t for n, t in self.phases.items() if " > " not in n]
        rows.append(_row("other (sampler, storage, waiting)",
                         f"{max(total_wall - sum(t.wall for t in top), 0.0) / per:.3f}",
                         f"{max(total_cpu - sum(t.cpu for t in top), 0.0) / per:.3f}", "", ""))
        rows.append(_row("trial total", f"{total_wall / per:.3f}", f"{total_cpu / per:.3f}",
                         str(trials), ""))
        return "\n".join(rows)


def _row(label: str, *cells: str) -> str:
    return f"{label:40s}" + "".join(f"{c:>14s}" for c in cells)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block under `name` when a Profile is active."""
    if _active is None:
        yield
        return
    profile = _active
    full = " > ".join(_stack + [name])
    _stack.append(name)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        _stack.pop()
        profile.add(full, time.perf_counter() - wall, time.process_time() - cpu)


def clock() -> tuple[float, float]:
    """(wall, cpu) now, for totals measured around a profiled run."""
    return time.perf_counter(), time.process_time()
