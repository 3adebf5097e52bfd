"""The result of a study: which trial is best, which ones deserve a second measurement,
which one of those wins, and that choice written into the study.

One module decides, for the search, the API and the report alike (issue: the report
once charted the fastest trial even when it broke --max-drop). Built on Optuna's own
`best_trial` / `best_trials`, which respect the trial constraints; a Pareto front is
reduced to one policy by the objective's pick rule (search.pick).
"""

from __future__ import annotations

import json

import optuna

from onnxamc.metrics import Metrics
from onnxamc.search.objective import AccuracyBound, LatencyBudget, MultiObjective, Objective

CONSTRAINT = "objective"  # the trial constraint Optuna's samplers see (<= 0: feasible)
CHOSEN = "chosen_trial"  # study attribute: the trial the search wrote, after re-measuring
CONFIRM_TOP = 3  # best feasible trials of a constrained search re-measured
CONFIRM_FRONT = 16  # Pareto-front members re-measured before the pick rule chooses
COMPLETE = (optuna.trial.TrialState.COMPLETE,)


def metrics_of(trial: optuna.trial.FrozenTrial) -> Metrics:
    return Metrics.from_dict(trial.user_attrs["metrics"])


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def scored_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=COMPLETE)
            if CONSTRAINT in t.constraints and "metrics" in t.user_attrs]


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The feasible Pareto front of a multi-objective study (Optuna's best_trials), one
    trial per policy (cache hits left out), by rising first value; [] otherwise."""
    if len(study.directions) < 2:
        return []
    front = [t for t in study.best_trials if "cached_from" not in t.user_attrs]
    return sorted(front, key=lambda t: (t.values[0], t.number))


def best_trial(study: optuna.Study, objective: Objective
               ) -> tuple[optuna.trial.FrozenTrial, bool] | None:
    """(trial, whether it meets the goal): the best feasible trial; if none is feasible,
    the least infeasible one. Multi-objective: the member of the front the objective's
    pick rule chooses (by default the fastest within its drop bound)."""
    trials = scored_trials(study)
    if not trials:
        return None
    if isinstance(objective, MultiObjective):
        front = pareto_front(study)
        picked = objective.pick_rule.choose([metrics_of(t) for t in front]) if front else None
        if picked is not None:
            return front[picked[0]], picked[1]
    else:
        try:
            return study.best_trial, True
        except ValueError:  # no feasible trial
            pass
    return min(trials, key=lambda t: (t.constraints[CONSTRAINT], t.number)), False


def candidates(study: optuna.Study, objective: Objective,
               best: optuna.trial.FrozenTrial) -> list[optuna.trial.FrozenTrial]:
    """The trials worth measuring again side by side before choosing: a latency measured
    within one trial is noisy, and the best of many is often the luckiest measurement.
    Constrained objectives: their few best distinct feasible trials; Pareto: the front
    members nearest the best in latency; other objectives: the best alone."""
    if isinstance(objective, MultiObjective):
        front = pareto_front(study) or [best]
        key = metrics_of(best).latency_ratio
        return sorted(front, key=lambda t: abs(metrics_of(t).latency_ratio - key))[:CONFIRM_FRONT]
    if not isinstance(objective, (LatencyBudget, AccuracyBound)) or not is_feasible(best):
        return [best]
    sign = -1 if objective.direction == "maximize" else 1
    ranked = sorted((t for t in scored_trials(study) if is_feasible(t)),
                    key=lambda t: (sign * t.value, t.number))
    seen, chosen = set(), []
    for t in ranked:
        key = json.dumps(t.params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            chosen.append(t)
        if len(chosen) == CONFIRM_TOP:
            break
    return chosen or [best]


def choose(objective: Objective, measured: list[Metrics]) -> tuple[int, bool]:
    """(index, meets the goal) among re-measured candidates, by the new numbers. A
    latency flagged uncertain is never chosen on by its point estimate: it counts at
    the slow end of its interval (a candidate surely faster still wins; it stays
    flagged in the output)."""
    view = [m if m.trusted_latency else _at_slow_end(m) for m in measured]
    return _choose(objective, view)


def _at_slow_end(metrics: Metrics) -> Metrics:
    interval = metrics.latency_interval
    if not interval or metrics.latency_ratio is None:
        return metrics
    slow = Metrics.from_dict(metrics.to_dict())
    slow.latency_ratio = max(interval["high"], metrics.latency_ratio)
    return slow


def _choose(objective: Objective, measured: list[Metrics]) -> tuple[int, bool]:
    if isinstance(objective, MultiObjective):
        return objective.pick_rule.choose(measured) or (0, False)
    if not isinstance(objective, (LatencyBudget, AccuracyBound)):
        return 0, objective.constraint(measured[0]) <= 0
    sign = -1 if objective.direction == "maximize" else 1

    def rank(i: int):
        return (objective.constraint(measured[i]) > 0, sign * objective.value(measured[i]), i)

    best = min(range(len(measured)), key=rank)
    return best, objective.constraint(measured[best]) <= 0


def record_choice(study: optuna.Study, trial: optuna.trial.FrozenTrial, feasible: bool,
                  confirmed: Metrics) -> None:
    """Write the choice into the study, so a report made later from the storage alone
    shows what the search wrote."""
    study.set_user_attr(CHOSEN, {"trial": trial.number, "feasible": feasible,
                                 "confirmed": confirmed.to_dict()})


def chosen_trial(study: optuna.Study, objective: Objective | None = None
                 ) -> tuple[optuna.trial.FrozenTrial, bool] | None:
    """The trial the search wrote (recorded after re-measuring); for a study that ended
    before that, the best trial by the objective, constraints respected."""
    recorded = study.user_attrs.get(CHOSEN)
    if recorded is not None:
        trial = study.get_trials(deepcopy=False)[recorded["trial"]]
        return trial, bool(recorded["feasible"])
    if objective is not None:
        return best_trial(study, objective)
    if len(study.directions) == 1:  # a study that stored no objective: Optuna's own best
        try:
            return study.best_trial, True
        except ValueError:
            return None
    return None
