"""Latency statistics: warm-up, repeated timed runs, interleaved across models, and the
spread of every ratio.

On shared machines an absolute time is noise; what holds is a ratio taken side by side.
`time_interleaved` runs every model once per round, rotating the order, so slow phases
of the machine hit all of them alike; with `repeat` > 1 each model runs a few times back
to back within its turn and keeps its fastest run (preemption only ever adds time).
`ratio_intervals` turns the rounds into ratios to the first model, each with a bootstrap
interval over the paired rounds: a ratio is a number with its uncertainty, never a bare
figure.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 1000


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


@dataclass(frozen=True)
class RatioInterval:
    """A latency ratio (median over the reference's median, from paired rounds) and its
    bootstrap interval at CONFIDENCE."""

    ratio: float
    low: float
    high: float
    rounds: int

    @property
    def spread(self) -> float:
        """Half the interval's width relative to the ratio (0.05: about ±5%)."""
        return (self.high - self.low) / 2 / self.ratio if self.ratio > 0 else float("inf")

    @property
    def contains_one(self) -> bool:
        """No measurable change: the interval reaches the reference's own latency."""
        return self.low <= 1.0 <= self.high

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"x{self.ratio:.3f} [{self.low:.3f}, {self.high:.3f}]"

    @classmethod
    def exact(cls, ratio: float = 1.0) -> "RatioInterval":
        """A ratio known without measuring (the unchanged model against itself)."""
        return cls(ratio, ratio, ratio, 0)


def time_interleaved(runners: Sequence[Callable[[], object]], warmup: int = 10,
                     runs: int = 50, repeat: int = 1, min_seconds: float = 0.0) -> np.ndarray:
    """Seconds of each runner per round, shape (rounds, runners): `runs` rounds (more,
    until `min_seconds` pass), each runner's time the fastest of `repeat` runs."""
    for _ in range(warmup):
        for run in runners:
            run()
    rows: list[list[float]] = []
    start = time.perf_counter()
    while len(rows) < runs or time.perf_counter() - start < min_seconds:
        row = [0.0] * len(runners)
        order = range(len(runners)) if len(rows) % 2 == 0 else reversed(range(len(runners)))
        for i in order:
            row[i] = _fastest(runners[i], repeat)
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def _fastest(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(max(repeat, 1)):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def stats_of(samples: np.ndarray) -> list[LatencyStats]:
    """LatencyStats of each column of a (rounds, models) matrix of seconds."""
    return [LatencyStats.from_samples(samples[:, i]) for i in range(samples.shape[1])]


def ratio_intervals(samples: np.ndarray, reference: int = 0, confidence: float = CONFIDENCE,
                    resamples: int = RESAMPLES, seed: int = 0) -> list[RatioInterval]:
    """The ratio of each column's median to the reference column's, with a percentile
    bootstrap interval: rounds are resampled as pairs (a round measured every model in
    the same moment of the machine), so a slow phase moves both medians together."""
    rounds = samples.shape[0]
    medians = np.median(samples, axis=0)
    point = medians / medians[reference]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, rounds, size=(resamples, rounds))
    boot = np.median(samples[picks], axis=1)  # (resamples, models)
    ratios = boot / boot[:, reference:reference + 1]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail], axis=0)
    return [RatioInterval(float(point[i]), float(min(low[i], point[i])),
                          float(max(high[i], point[i])), rounds)
            for i in range(samples.shape[1])]


def measure_interleaved(runners: Sequence[Callable[[], object]], warmup: int = 10,
                        runs: int = 50, min_seconds: float = 0.0) -> list[LatencyStats]:
    """Time each runner `runs` times (more, until `min_seconds` pass), round-robin."""
    return stats_of(time_interleaved(runners, warmup, runs, 1, min_seconds))


def repeat_for(run: Callable[[], object], round_seconds: float = 0.004) -> int:
    """How many back-to-back runs make a turn of about `round_seconds` (1 to 5): short
    models get a few tries at an unpreempted run, long ones one."""
    t0 = time.perf_counter()
    run()
    once = max(time.perf_counter() - t0, 1e-6)
    return int(max(1, min(5, round_seconds // once)))
