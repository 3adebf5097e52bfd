"""The search loop: one Optuna study, proposing policies, scoring them through an
evaluator callable that api.py builds. It never edits or runs a model itself.

Running the same search again continues the study: `n_trials` is the study's total
of evaluated trials, trials killed mid-run are marked failed and their policy is queued
again, and an identical policy is never evaluated twice. An optional accuracy predictor
skips candidates predicted far worse (pruned trials, outside the budget).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import optuna

from onnxamc.errors import DeviceUnreachableError, EvaluationError, SearchError
from onnxamc.policy import Policy
from onnxamc.search.objective import Objective, Shaping, objective_values
from onnxamc.search.pareto import pareto_indices
from onnxamc.search.space import SearchSpace
from onnxamc.search.storage import open_storage

Evaluate = Callable[[Policy], dict]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
CONSTRAINT = "objective"  # the trial constraint Optuna's samplers see (<= 0: feasible)
MAX_ROUNDS = 20  # optimize() rounds that refill the budget after predictor skips


@dataclass
class SearchResult:
    study: optuna.Study
    best: optuna.trial.FrozenTrial | None
    feasible: bool
    policy: Policy | None
    new_trials: int
    seconds: float
    pareto: list[optuna.trial.FrozenTrial] = field(default_factory=list)
    cache_hits: int = 0
    predictor: dict = field(default_factory=dict)  # skipped, audited, wrong, ...

    @property
    def trials_per_minute(self) -> float:
        return 60.0 * self.new_trials / self.seconds if self.seconds > 0 else math.nan


def open_study(storage: str, name: str, objective: Objective, fingerprint: str,
               sampler: optuna.samplers.BaseSampler | None = None,
               seed: int | None = None) -> optuna.Study:
    """Create the study, or load it if it exists and belongs to this model."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = sampler or optuna.samplers.TPESampler(
        seed=seed, multivariate=True, n_startup_trials=8)
    try:
        study = optuna.create_study(storage=open_storage(storage), study_name=name,
                                    directions=list(objective.directions), sampler=sampler,
                                    load_if_exists=True)
    except ValueError as exc:  # e.g. the stored study has another direction
        raise SearchError(f"study {name!r} in {storage}: {exc}") from None
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", fingerprint)
        study.set_user_attr("objective", objective.describe())
    elif stored != fingerprint:
        raise SearchError(f"study {name!r} in {storage} was made for another model "
                          f"(fingerprint {stored}, this model is {fingerprint}); "
                          "choose another --study name")
    return study


def recover_interrupted(study: optuna.Study) -> int:
    """Queue again the policies of trials cut off by a kill (left RUNNING; marked failed
    here) or by Ctrl-C (failed, flagged "interrupted"), so nothing proposed is lost.

    Assumes one process per study at a time, as the CLI runs it; parallel workers on a
    shared database rely on Optuna's heartbeat instead. Returns how many were queued.
    """
    storage = study._storage
    requeued = set(study.user_attrs.get("requeued_trials", []))
    waiting = [t.system_attrs.get("fixed_params") for t in
               study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))]
    recovered = 0
    for trial in study.get_trials(deepcopy=False):
        killed = trial.state == optuna.trial.TrialState.RUNNING
        stopped = (trial.state == optuna.trial.TrialState.FAIL
                   and trial.user_attrs.get("interrupted") and trial.number not in requeued)
        if not (killed or stopped):
            continue
        if killed:
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        # a trial killed while setting its params holds only some: queue the whole
        # policy it was given (an enqueued one), else what it had chosen so far
        params = trial.system_attrs.get("fixed_params") or trial.params
        if params and params not in waiting:
            study.enqueue_trial(params)  # not skip_if_exists: the failed twin exists
        requeued.add(trial.number)
        recovered += 1
    if recovered:
        study.set_user_attr("requeued_trials", sorted(requeued))
    return recovered


def run_search(study: optuna.Study, space: SearchSpace, objective: Objective,
               evaluate: Evaluate, n_trials: int, timeout: float | None = None,
               progress: bool = True, seeds: list[Policy] | None = None,
               shaping: Shaping | None = None, predictor=None,
               use_cache: bool = True) -> SearchResult:
    """Run trials until the study holds `n_trials` evaluated ones or `timeout` passes.

    `seeds` are enqueued first on a new study (default: the space's uniform seeds);
    `predictor` (search.predictor.AccuracyPredictor) may skip candidates before they
    are evaluated; `use_cache=False` only exists to measure what the cache saves.
    """
    recover_interrupted(study)
    if not study.trials:
        for seed in seeds if seeds is not None else space.seeds():
            label = seed.meta.get("baseline")  # reports mark the uniform baselines
            study.enqueue_trial(space.params_of(seed), skip_if_exists=True,
                                user_attrs={"baseline": label} if label else None)
    cache = {_key(t.params): t.user_attrs for t in study.get_trials(states=FINISHED)
             if "metrics" in t.user_attrs}
    tried = [space.vector(t.params) for t in study.get_trials(deepcopy=False, states=FINISHED)]
    hits = [0]

    def objective_fn(trial: optuna.Trial):
        policy = space.suggest(trial)
        key = _key(trial.params)
        vector = space.vector(trial.params)
        if use_cache and key in cache:  # an identical policy was measured already
            attrs = cache[key]
            trial.set_user_attr("cached_from", attrs.get("trial_number"))
            metrics = attrs["metrics"]
            hits[0] += 1
        else:
            if predictor is not None and predictor.should_skip(study, trial, vector):
                raise optuna.TrialPruned("predicted far worse than the best so far")
            try:
                metrics = evaluate(policy)
            except (KeyboardInterrupt, DeviceUnreachableError):  # the next run re-tries it
                trial.set_user_attr("interrupted", True)
                raise
            except EvaluationError as exc:
                trial.set_user_attr("error", str(exc))
                raise
            if predictor is not None:
                predictor.record(study, trial, vector, metrics)
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("trial_number", trial.number)
        scored = {**metrics, **space_metrics(space, trial.params, vector, tried)}
        trial.set_constraint(CONSTRAINT, objective.constraint(scored))
        cache[key] = {"metrics": metrics, "trial_number": trial.number}
        tried.append(vector)
        return objective_values(objective, scored, shaping)

    done = _evaluated(study)
    start = time.time()
    bar = None
    if progress and n_trials > done:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_trials, initial=done, desc="search", unit="trial", dynamic_ncols=True)
    callbacks = []
    if bar is not None:
        def update(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if trial.state != optuna.trial.TrialState.COMPLETE:
                return
            bar.update(1)
            best = best_trial(study, objective)
            if best is not None:
                bar.set_postfix_str(_summary(best[0].user_attrs.get("metrics", {})))
        callbacks.append(update)
    quiet = _QuietStop()  # the caller says in one line why the search stopped
    optuna.logging.get_logger("optuna.study._optimize").addFilter(quiet)
    try:
        for _ in range(MAX_ROUNDS):  # trials the predictor skipped do not use the budget
            remaining = n_trials - _evaluated(study)
            left = None if timeout is None else timeout - (time.time() - start)
            if remaining <= 0 or (left is not None and left <= 0):
                break
            study.optimize(objective_fn, n_trials=remaining, timeout=left,
                           callbacks=callbacks, catch=(EvaluationError,), gc_after_trial=False)
    finally:
        optuna.logging.get_logger("optuna.study._optimize").removeFilter(quiet)
        if bar is not None:
            bar.close()
    seconds = time.time() - start
    new = _evaluated(study) - done
    stats = predictor.report(study) if predictor is not None else {}
    front = pareto_front(study)
    best = best_trial(study, objective)
    if best is None:
        return SearchResult(study, None, False, None, new, seconds, front, hits[0], stats)
    trial, feasible = best
    return SearchResult(study, trial, feasible, space.policy_from_params(trial.params), new,
                        seconds, front, hits[0], stats)


class _QuietStop:
    """Drops Optuna's log of a trial that stopped the search (an unreachable device,
    Ctrl-C): its traceback and its "failed with value None" line. The trial is queued
    again on the next run, and the caller reports the reason in one line."""

    STOPS = (DeviceUnreachableError, KeyboardInterrupt)

    def __init__(self):
        self.dropping = False

    def filter(self, record) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.STOPS):
            self.dropping = True
            return False
        if self.dropping and "failed with value" in record.getMessage():
            self.dropping = False
            return False
        return True


def space_metrics(space: SearchSpace, params: dict, vector: list[float],
                  tried: list[list[float]]) -> dict:
    """What the layer table tells of a policy without running it: effective MACs, how
    many layers it removes, and how unlike the policies already tried it is."""
    macs = space.macs(params)
    removed = sum(1 for name, value in params.items()
                  if (name.endswith(":remove") and value is True)
                  or (name.endswith(":keep") and not isinstance(value, bool) and value == 0))
    novelty = 1.0
    if tried and vector:
        novelty = min(sum(abs(a - b) for a, b in zip(vector, v)) for v in tried) / len(vector)
    return {"effective_macs": macs,
            "effective_macs_ratio": macs / space.total_macs if space.total_macs else 1.0,
            "removed_layers": removed, "novelty": novelty}


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible completed trials that no other one dominates (multi-objective studies);
    the trials are sorted by their first value."""
    if len(study.directions) < 2:
        return []
    trials = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if t.values is not None and t.constraints.get(CONSTRAINT, 0.0) <= 0
              and "cached_from" not in t.user_attrs]
    directions = ["maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize"
                  for d in study.directions]
    front = [trials[i] for i in pareto_indices([t.values for t in trials], directions)]
    return sorted(front, key=lambda t: (t.values[0], t.number))


def _evaluated(study: optuna.Study) -> int:
    """Finished trials that count against the budget (predictor skips do not)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED)
               if t.state == optuna.trial.TrialState.COMPLETE or "skipped" not in t.user_attrs)


def best_trial(study: optuna.Study, objective: Objective):
    """(trial, whether it meets the goal): the best feasible trial; if none is feasible,
    the least infeasible one. For a multi-objective study: the member of the front that
    the objective's pick rule chooses (search.pick; by default the fastest within its
    drop bound, 1 point unless given)."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if CONSTRAINT in t.constraints]
    if not trials:
        return None
    feasible = [t for t in trials if t.constraints[CONSTRAINT] <= 0]
    if feasible and len(objective.directions) > 1:
        picked = objective.pick_rule.choose([t.user_attrs.get("metrics", {}) for t in feasible])
        if picked is not None:
            return feasible[picked[0]], picked[1]
        return max(feasible, key=lambda t: (t.values[0], -t.number)), True
    if feasible:
        sign = -1 if objective.direction == "maximize" else 1
        return min(feasible, key=lambda t: (sign * t.value, t.number)), True
    return min(trials, key=lambda t: t.constraints[CONSTRAINT]), False


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def _summary(metrics: dict) -> str:
    parts = []
    if metrics.get("accuracy") is not None:
        parts.append(f"acc {metrics['accuracy']:.4f}")
    if metrics.get("latency_ratio") is not None:
        parts.append(f"lat x{metrics['latency_ratio']:.2f}")
    return ", ".join(parts)
