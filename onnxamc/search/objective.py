"""Objectives: what makes one measured policy better than another.

Each has `directions` (one per value), `value(metrics)` (`values(metrics)` where there
are several) and `constraint(metrics)` (≤ 0 means feasible), which Optuna's samplers
model directly through trial constraints (`Trial.set_constraint`):

- LatencyBudget: the best accuracy with latency ≤ `ratio` × the original's.
- AccuracyBound: the lowest latency with an accuracy drop ≤ `max_drop`.
- AmcReward: AMC's reward −error · log(resource), resource = effective MACs or latency,
  with a resource target (resource-constrained) or an accuracy-drop bound
  (accuracy-constrained).
- Weighted: accuracy − λ · (latency/original + size/original).
- MultiObjective: (accuracy, latency ratio, size ratio): the study keeps a Pareto front.

Objectives read a `Metrics` object (onnxamc.metrics) by attribute. Quality is whatever
named metric the run uses; "drop" is how much worse than the original, in its units.
`Shaping` adds to single objectives an optional diversity bonus and a penalty per
removed layer; run_search supplies both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from onnxamc.search.pick import PickRule, parse_pick


from onnxamc.metrics import Metrics


def _unsupported(metrics: Metrics) -> bool:
    """The target's runtime could not run the candidate: infeasible whatever else holds."""
    return not metrics.supported


def _error(metrics: Metrics) -> float:
    """AMC's error: the metric's own error term (top1: 1 - accuracy, snr: the noise-to-
    signal ratio...), or 1 - quality for metrics stored before it had one."""
    return metrics.error if metrics.error is not None else 1.0 - metrics.quality


def goodness(metrics: Metrics) -> float:
    """The quality as a number where higher is better, whatever the metric's direction."""
    return metrics.quality if metrics.higher_is_better else -metrics.quality


class SingleObjective:
    """One value to optimise in `self.direction`."""

    @property
    def directions(self) -> tuple[str, ...]:
        return (self.direction,)


@dataclass(frozen=True)
class LatencyBudget(SingleObjective):
    ratio: float
    direction: str = "maximize"

    @property
    def label(self) -> str:
        return f"latency{self.ratio:g}"

    def describe(self) -> str:
        return f"best accuracy with latency <= {self.ratio:g} x original"

    def value(self, metrics: Metrics) -> float:
        return goodness(metrics)

    def constraint(self, metrics: Metrics) -> float:
        return math.inf if _unsupported(metrics) else metrics.latency_ratio - self.ratio


@dataclass(frozen=True)
class AccuracyBound(SingleObjective):
    max_drop: float
    direction: str = "minimize"

    @property
    def label(self) -> str:
        return f"maxdrop{self.max_drop:g}"

    def describe(self) -> str:
        return f"lowest latency with accuracy drop <= {self.max_drop:g}"

    def value(self, metrics: Metrics) -> float:
        return metrics.latency_ratio

    def constraint(self, metrics: Metrics) -> float:
        return math.inf if _unsupported(metrics) else metrics.quality_drop - self.max_drop


@dataclass(frozen=True)
class AmcReward(SingleObjective):
    """AMC (He et al. 2018): reward −error · log(resource). With `target` the resource
    ratio must stay ≤ target (resource-constrained, what DDPG's action wall enforces);
    with `max_drop` the accuracy drop is bounded instead (accuracy-constrained)."""

    resource: str = "macs"  # "macs" (effective MACs from the layer table) or "latency"
    target: float | None = None
    max_drop: float | None = None
    direction: str = "maximize"

    @property
    def label(self) -> str:
        bound = f"{self.target:g}" if self.target is not None else f"drop{self.max_drop or 0:g}"
        return f"amc-{self.resource}{bound}"

    def describe(self) -> str:
        bound = (f"{self.resource} <= {self.target:g} x original" if self.target is not None
                 else f"accuracy drop <= {self.max_drop or 0:g}")
        return f"AMC reward -error * log({self.resource}) with {bound}"

    def value(self, metrics: Metrics) -> float:
        if self.resource == "latency":
            if _unsupported(metrics):
                return -_error(metrics) * math.log(1e12)  # worse than any measured
            amount = 1000.0 * metrics.latency.median_ms  # microseconds, > 1
        else:
            amount = metrics.effective_macs
        return -_error(metrics) * math.log(max(amount, 1.0 + 1e-9))

    def resource_ratio(self, metrics: Metrics) -> float:
        return metrics.latency_ratio if self.resource == "latency" else \
            metrics.effective_macs_ratio

    def constraint(self, metrics: Metrics) -> float:
        if _unsupported(metrics):
            return math.inf
        if self.target is not None:
            return self.resource_ratio(metrics) - self.target
        return metrics.quality_drop - (self.max_drop or 0.0)


@dataclass(frozen=True)
class Weighted(SingleObjective):
    """accuracy − λ · (latency/original + size/original), optionally with a drop bound."""

    lam: float = 0.5
    max_drop: float | None = None
    direction: str = "maximize"

    @property
    def label(self) -> str:
        return f"weighted{self.lam:g}"

    def describe(self) -> str:
        return f"accuracy - {self.lam:g} x (latency ratio + size ratio)"

    def value(self, metrics: Metrics) -> float:
        return goodness(metrics) - self.lam * (metrics.latency_ratio + metrics.size_ratio)

    def constraint(self, metrics: Metrics) -> float:
        if _unsupported(metrics):
            return math.inf
        return 0.0 if self.max_drop is None else metrics.quality_drop - self.max_drop


@dataclass(frozen=True)
class MultiObjective:
    """(accuracy ↑, latency ratio ↓, size ratio ↓): the study's best trials are a Pareto
    front; `max_drop` optionally marks trials losing more accuracy as infeasible; `pick`
    is the rule that chooses the one policy written at the end (default: the fastest
    within `max_drop`, or within 1 point)."""

    max_drop: float | None = None
    pick: PickRule | None = None
    names: tuple[str, ...] = ("quality", "latency_ratio", "size_ratio")
    directions: tuple[str, ...] = ("maximize", "minimize", "minimize")

    @property
    def direction(self) -> str:
        raise AttributeError("a multi-objective study has several directions")

    @property
    def label(self) -> str:
        return "pareto"

    @property
    def pick_rule(self) -> PickRule:
        """The given rule, or the default: the fastest within `max_drop` (1 point)."""
        return self.pick or parse_pick(None, self.max_drop)

    def describe(self) -> str:
        front = "Pareto front of " + ", ".join(
            f"{n} ({'max' if d == 'maximize' else 'min'})" for n, d in zip(self.names, self.directions))
        return front + (f"; pick {self.pick.describe()}" if self.pick else "")

    def values(self, metrics: Metrics) -> list[float]:
        return [float(goodness(metrics)), float(metrics.latency_ratio),
                float(metrics.size_ratio)]

    def constraint(self, metrics: Metrics) -> float:
        if _unsupported(metrics):
            return math.inf
        return 0.0 if self.max_drop is None else metrics.quality_drop - self.max_drop


@dataclass(frozen=True)
class Shaping:
    """Terms added to a single objective: a bonus for policies unlike those already
    tried (mean L1 distance to the nearest one, in [0, 1]) and a penalty per removed
    layer. Both default to off."""

    diversity: float = 0.0
    removal_penalty: float = 0.0

    def adjust(self, value: float, direction: str, novelty: float, removed_layers: int) -> float:
        bonus = self.diversity * novelty - self.removal_penalty * removed_layers
        return value + bonus if direction == "maximize" else value - bonus


Objective = LatencyBudget | AccuracyBound | AmcReward | Weighted | MultiObjective
OBJECTIVES = ("constrained", "amc", "amc-latency", "weighted", "pareto")


def objective_values(objective: Objective, metrics: Metrics, shaping: Shaping | None = None,
                     novelty: float = 1.0, removed_layers: int = 0) -> float | list[float]:
    """What the study stores for `metrics`: one value, or one per direction."""
    if len(objective.directions) > 1:
        return objective.values(metrics)
    value = objective.value(metrics)
    return shaping.adjust(value, objective.direction, novelty, removed_layers) if shaping \
        else value


def parse_objective(spec: str | None, latency: float | None = None,
                    max_drop: float | None = None, pick: str | None = None) -> Objective:
    """`constrained` (default) | `amc` | `amc-latency` | `weighted[:LAMBDA]` | `pareto`;
    `latency` and `max_drop` give the target or bound where the objective takes one;
    `pick` (pareto only) the rule that chooses one policy from the front."""
    name, _, arg = (spec or "constrained").partition(":")
    if pick is not None and name != "pareto":
        raise ValueError("--pick chooses from a Pareto front: use it with --objective pareto")
    if name == "constrained":
        return make_objective(latency, max_drop)
    if latency is not None and max_drop is not None:
        raise ValueError("give either a latency budget or an accuracy-drop bound, not both")
    if name in ("amc", "amc-latency"):
        resource = "latency" if name == "amc-latency" else "macs"
        if latency is None and max_drop is None:
            latency = 0.5
        return AmcReward(resource, latency, max_drop)
    if name == "weighted":
        try:
            lam = float(arg) if arg else 0.5
        except ValueError:
            raise ValueError(f"weighted objective needs a number, e.g. weighted:0.5, got {spec!r}") from None
        return Weighted(lam, max_drop)
    if name == "pareto":
        return MultiObjective(max_drop, parse_pick(pick, max_drop))
    raise ValueError(f"unknown objective {spec!r}; use one of {', '.join(OBJECTIVES)}")


def make_objective(latency: float | None = None, max_drop: float | None = None) -> Objective:
    if latency is not None and max_drop is not None:
        raise ValueError("give either a latency budget or an accuracy-drop bound, not both")
    if latency is not None:
        if not 0 < latency <= 10:
            raise ValueError(f"latency budget must be a ratio of the original in (0, 10], got {latency}")
        return LatencyBudget(latency)
    bound = 0.01 if max_drop is None else max_drop
    if not (bound >= 0 and math.isfinite(bound)):  # the metric checks its own range
        raise ValueError(f"max quality drop must be a number >= 0, got {bound}")
    return AccuracyBound(bound)
