"""Objectives: what makes one measured policy better than another.

Both are single-objective with a constraint (≤ 0 means feasible), which Optuna's
TPE sampler models directly through trial constraints (`Trial.set_constraint`):

- LatencyBudget: the best accuracy with latency ≤ `ratio` × the original's.
- AccuracyBound: the lowest latency with an accuracy drop ≤ `max_drop`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _unsupported(metrics: dict) -> bool:
    """The target's runtime could not run the candidate: infeasible whatever else holds."""
    return metrics.get("supported") is False


@dataclass(frozen=True)
class LatencyBudget:
    ratio: float
    direction: str = "maximize"

    @property
    def label(self) -> str:
        return f"latency{self.ratio:g}"

    def describe(self) -> str:
        return f"best accuracy with latency <= {self.ratio:g} x original"

    def value(self, metrics: dict) -> float:
        return metrics["accuracy"]

    def constraint(self, metrics: dict) -> float:
        return math.inf if _unsupported(metrics) else metrics["latency_ratio"] - self.ratio


@dataclass(frozen=True)
class AccuracyBound:
    max_drop: float
    direction: str = "minimize"

    @property
    def label(self) -> str:
        return f"maxdrop{self.max_drop:g}"

    def describe(self) -> str:
        return f"lowest latency with accuracy drop <= {self.max_drop:g}"

    def value(self, metrics: dict) -> float:
        return metrics["latency_ratio"]

    def constraint(self, metrics: dict) -> float:
        return math.inf if _unsupported(metrics) else metrics["accuracy_drop"] - self.max_drop


Objective = LatencyBudget | AccuracyBound


def make_objective(latency: float | None = None, max_drop: float | None = None) -> Objective:
    if latency is not None and max_drop is not None:
        raise ValueError("give either a latency budget or an accuracy-drop bound, not both")
    if latency is not None:
        if not 0 < latency <= 10:
            raise ValueError(f"latency budget must be a ratio of the original in (0, 10], got {latency}")
        return LatencyBudget(latency)
    bound = 0.01 if max_drop is None else max_drop
    if not 0 <= bound < 1:
        raise ValueError(f"max accuracy drop must be in [0, 1), got {bound}")
    return AccuracyBound(bound)
