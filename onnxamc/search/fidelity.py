"""Multi-fidelity: a trial's evaluation may stop before it has cost everything.

The evaluator measures a candidate in stages (latency first, then quality on growing
slices of the evaluation data) and shows each stage to a `Checkpoint`, which stops it
(raises `Stop`) when what is known already decides:

- latency: a latency-bounded objective stops a candidate whose ratio interval lies above
  the bound (stored as infeasible, with its latency, no quality run); a lowest-latency
  objective stops a candidate surely slower than its best feasible policy;
- quality on a slice: a drop surely beyond the bound (three standard errors over it on
  that slice) stops it; for single objectives Optuna's pruner (successive halving or
  Hyperband) compares the objective so far with other trials at the same slice.

Seed policies (enqueued uniform baselines, warm starts) always run to the end. Stopped
trials stay in the study as PRUNED with what was measured; they are never results.
"""

from __future__ import annotations

import math

import optuna

from onnxamc.metrics import PERCENT_METRICS, Metrics
from onnxamc.search.objective import (AccuracyBound, AmcReward, LatencyBudget, MultiObjective,
                                      Objective)

PRUNERS = ("halving", "hyperband", "none")
REDUCTION = 3  # each slice is 3x the previous; halving keeps the best third
MIN_SLICE = 200  # samples: below this a quality figure is too noisy to stop on
SURE = 3.0  # standard errors a drop must exceed the bound by to stop on it
PENALTY = 10.0  # objective units per unit of constraint violation, for the pruner


class Stop(Exception):
    """Stop evaluating this candidate: `reason` says why; metrics so far are kept."""

    def __init__(self, reason: str, metrics: Metrics):
        super().__init__(reason)
        self.reason, self.metrics = reason, metrics


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=REDUCTION)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=REDUCTION ** 2,
                                              reduction_factor=REDUCTION)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; use one of {', '.join(PRUNERS)}")


def slices(total: int) -> list[int]:
    """Sample counts of the growing slices, the last one all `total`: each REDUCTION
    times the previous, none below MIN_SLICE (one slice for small sets)."""
    sizes = [total]
    while sizes[0] // REDUCTION >= MIN_SLICE and len(sizes) < 3:
        sizes.insert(0, math.ceil(sizes[0] / REDUCTION))
    return sizes


class Checkpoint:
    """What one trial's evaluation shows after each stage; raises Stop to end it."""

    def __init__(self, trial: optuna.Trial | None, objective: Objective,
                 best_latency: float | None = None, seeded: bool = False,
                 use_pruner: bool = True, annotate=None):
        self.trial, self.objective = trial, objective
        self.best_latency = best_latency  # upper end of the best feasible trial's ratio
        self.seeded, self.use_pruner = seeded, use_pruner
        self.annotate = annotate  # adds what the search knows (cost-model MACs) to metrics

    @property
    def stops_on_latency(self) -> bool:
        """Whether a latency alone can end this trial (then a quick build is worth it)."""
        return not self.seeded and (_latency_bound(self.objective) is not None or (
            isinstance(self.objective, AccuracyBound) and self.best_latency is not None))

    def latency(self, metrics: Metrics) -> None:
        if self.annotate is not None:
            self.annotate(metrics)
        if self.seeded or metrics.latency_ratio is None:
            return
        low = (metrics.latency_interval or {}).get("low", metrics.latency_ratio)
        bound = _latency_bound(self.objective)
        if bound is not None and low > bound:
            raise Stop(f"latency x{metrics.latency_ratio:.3f} is surely above the bound "
                       f"x{bound:g}", metrics)
        if isinstance(self.objective, AccuracyBound) and self.best_latency is not None \
                and low > self.best_latency:
            raise Stop(f"latency x{metrics.latency_ratio:.3f} is surely slower than the best "
                       f"feasible policy (x{self.best_latency:.3f})", metrics)

    def quality(self, metrics: Metrics, step: int, samples: int, final: bool) -> None:
        """After the quality on `samples` samples (slice `step`: 1, 3, 9...)."""
        if self.annotate is not None:
            self.annotate(metrics)
        if self.trial is None or self.seeded:
            return
        excess = _surely_over_bound(self.objective, metrics, samples)
        if excess is not None and not final:
            raise Stop(f"quality drop {metrics.quality_drop:.4f} on {samples} samples is "
                       f"surely over the bound ({excess})", metrics)
        if len(self.objective.directions) > 1 or not self.use_pruner:
            return  # Optuna's pruners compare single objectives only
        self.trial.report(pruning_value(self.objective, metrics, samples), step)
        if not final and self.trial.should_prune():
            raise Stop(f"pruned at {samples} samples: the objective so far is not among the "
                       "best of the trials that got this far", metrics)


def pruning_value(objective: Objective, metrics: Metrics, samples: int | None = None) -> float:
    """The objective as it stands, a violated constraint folded in as a penalty. A drop
    over the bound by less than one standard error of this slice is noise, not a
    violation: penalised, it pruned good candidates on their first slice (a 200-sample
    top-1 moves by 3 points), most of all when workers fill the rungs quickly."""
    value = objective.value(metrics)
    violation = objective.constraint(metrics)
    if samples and _bounds_drop(objective):
        violation -= _standard_error(metrics, samples)
    violation = max(violation, 0.0)
    if math.isinf(violation):
        violation = 1e3
    return value - PENALTY * violation if objective.direction == "maximize" \
        else value + PENALTY * violation


def _latency_bound(objective: Objective) -> float | None:
    if isinstance(objective, LatencyBudget):
        return objective.ratio
    if isinstance(objective, AmcReward) and objective.resource == "latency":
        return objective.target
    return None


def _drop_bound(objective: Objective) -> float | None:
    if isinstance(objective, AccuracyBound):
        return objective.max_drop
    if isinstance(objective, (AmcReward, MultiObjective)) or hasattr(objective, "max_drop"):
        return getattr(objective, "max_drop", None)
    return None


def _bounds_drop(objective: Objective) -> bool:
    """Whether the objective's constraint is its quality-drop bound."""
    if isinstance(objective, AmcReward) and objective.target is not None:
        return False
    return _drop_bound(objective) is not None


def _standard_error(metrics: Metrics, samples: int) -> float:
    """The standard error of a drop measured on `samples` samples, for share metrics
    (top-1, agreement: a binomial share, known); 0 where it is not known."""
    if metrics.quality is None or metrics.metric not in PERCENT_METRICS:
        return 0.0
    q = min(max(metrics.quality, 1e-3), 1 - 1e-3)
    return math.sqrt(2 * q * (1 - q) / max(samples, 1))


def _surely_over_bound(objective: Objective, metrics: Metrics, samples: int) -> str | None:
    """How far a drop lies over the bound when it is more than SURE standard errors
    (for share metrics, whose standard error on n samples is known), else None."""
    bound = _drop_bound(objective)
    error = _standard_error(metrics, samples)
    if bound is None or metrics.quality_drop is None or error == 0.0:
        return None
    if metrics.quality_drop - bound > SURE * error:
        return f"bound {bound:g}, standard error {error:.4f}"
    return None
