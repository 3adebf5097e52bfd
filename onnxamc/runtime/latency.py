"""Latency statistics: warm-up, repeated timed runs, interleaved across models.

On shared machines an absolute time is noise; what holds is a ratio of medians taken
side by side. `measure_interleaved` runs every candidate once per round, rotating the
order, so slow phases of the machine hit all of them alike.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p90_ms: float
    cv: float  # coefficient of variation (std / mean) of the timed runs
    runs: int

    @classmethod
    def from_samples(cls, seconds: Sequence[float]) -> "LatencyStats":
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        mean = float(ms.mean())
        return cls(float(np.median(ms)), float(np.percentile(ms, 90)),
                   float(ms.std() / mean) if mean > 0 else 0.0, len(ms))

    def to_dict(self) -> dict:
        return asdict(self)


def measure_interleaved(runners: Sequence[Callable[[], object]], warmup: int = 10,
                        runs: int = 50, min_seconds: float = 0.0) -> list[LatencyStats]:
    """Time each runner `runs` times (more, until `min_seconds` pass), round-robin."""
    for _ in range(warmup):
        for run in runners:
            run()
    samples: list[list[float]] = [[] for _ in runners]
    start = time.perf_counter()
    rounds = 0
    while rounds < runs or time.perf_counter() - start < min_seconds:
        order = range(len(runners))
        if rounds % 2:
            order = reversed(order)
        for i in order:
            t0 = time.perf_counter()
            runners[i]()
            samples[i].append(time.perf_counter() - t0)
        rounds += 1
    return [LatencyStats.from_samples(s) for s in samples]
