"""Latency ratios with their spread, measured interleaved in local onnxruntime.

`Measure` is `models -> [Ratio]` (ratios to the first model) so that any target can
supply its own; `interleaved_ratios` is the local onnxruntime one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import onnx

@dataclass(frozen=True)
class Ratio:
    """Latency of a model over the reference's: median of per-round ratios, and the
    half-width of their interquartile range (the noise of that median's rounds)."""

    median: float
    spread: float
    rounds: int

    @property
    def standard_error(self) -> float:
        """Of the median, for normal-like rounds: sigma ~ 1.48 x half-IQR, se ~ 1.25
        sigma / sqrt(n)."""
        return 1.86 * self.spread / max(self.rounds, 1) ** 0.5

    def __str__(self) -> str:
        return f"x{self.median:.3f} ± {self.spread:.3f} ({self.rounds} interleaved rounds)"


Measure = Callable[[Sequence[onnx.ModelProto]], list[Ratio]]


def interleaved_ratios(feed: dict[str, np.ndarray], threads: int = 1, runs: int = 60,
                       warmup: int = 10, round_ms: float = 5.0) -> Measure:
    """A `measure` for local onnxruntime: every round runs all models (order rotating);
    each model's per-round time over the first model's, as a median with its spread.

    Within a round each model runs back to back until about `round_ms` have passed and
    keeps its fastest run: being preempted only ever adds time, so on a shared machine
    the fastest of a few runs is what the model costs and the rounds stop scattering."""
    from onnxamc.runtime import make_session

    def measure(models: Sequence[onnx.ModelProto]) -> list[Ratio]:
        sessions = [make_session(m, threads) for m in models]
        for _ in range(warmup):
            for s in sessions:
                s.run(None, feed)
        t0 = time.perf_counter()
        sessions[0].run(None, feed)
        repeat = max(1, min(20, int(round_ms / 1e3 / max(time.perf_counter() - t0, 1e-6))))
        times = np.zeros((runs, len(sessions)))
        for r in range(runs):
            order = range(len(sessions)) if r % 2 == 0 else reversed(range(len(sessions)))
            for i in order:
                times[r, i] = _fastest(sessions[i], feed, repeat)
        ratios = times / times[:, :1]
        out = []
        for i in range(len(sessions)):
            q1, q2, q3 = np.percentile(ratios[:, i], [25, 50, 75])
            out.append(Ratio(float(q2), float(q3 - q1) / 2, runs))
        return out

    return measure


def _fastest(session, feed: dict[str, np.ndarray], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - t0)
    return best
