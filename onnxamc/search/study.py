"""The search loop: one Optuna study, proposing policies, scoring them through an
evaluator callable that api.py builds. It never edits or runs a model itself.

Running the same search again continues the study: `n_trials` is the study's total,
trials killed mid-run are marked failed and their policy is queued again, and an
identical policy is never evaluated twice.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Callable

import optuna

from onnxamc.errors import EvaluationError, SearchError
from onnxamc.policy import Policy
from onnxamc.search.objective import Objective
from onnxamc.search.space import SearchSpace
from onnxamc.search.storage import open_storage

Evaluate = Callable[[Policy], dict]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
CONSTRAINT = "objective"  # the trial constraint Optuna's samplers see (<= 0: feasible)


@dataclass
class SearchResult:
    study: optuna.Study
    best: optuna.trial.FrozenTrial | None
    feasible: bool
    policy: Policy | None
    new_trials: int
    seconds: float

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
                                    direction=objective.direction, sampler=sampler,
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
        if trial.params and trial.params not in waiting:
            study.enqueue_trial(trial.params)  # not skip_if_exists: the failed twin exists
        requeued.add(trial.number)
        recovered += 1
    if recovered:
        study.set_user_attr("requeued_trials", sorted(requeued))
    return recovered


def run_search(study: optuna.Study, space: SearchSpace, objective: Objective,
               evaluate: Evaluate, n_trials: int, timeout: float | None = None,
               progress: bool = True, seeds: list[Policy] | None = None) -> SearchResult:
    """Run trials until the study holds `n_trials` finished ones or `timeout` passes."""
    recover_interrupted(study)
    if not study.trials:
        for seed in seeds if seeds is not None else space.seeds():
            study.enqueue_trial(space.params_of(seed), skip_if_exists=True)
    cache = {_key(t.params): t.user_attrs for t in study.get_trials(states=FINISHED)
             if "metrics" in t.user_attrs}

    def objective_fn(trial: optuna.Trial) -> float:
        policy = space.suggest(trial)
        key = _key(trial.params)
        if key in cache:  # an identical policy was measured already
            attrs = cache[key]
            trial.set_user_attr("cached_from", attrs.get("trial_number"))
            metrics = attrs["metrics"]
        else:
            try:
                metrics = evaluate(policy)
            except KeyboardInterrupt:
                trial.set_user_attr("interrupted", True)
                raise
            except EvaluationError as exc:
                trial.set_user_attr("error", str(exc))
                raise
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("trial_number", trial.number)
        trial.set_constraint(CONSTRAINT, objective.constraint(metrics))
        cache[key] = {"metrics": metrics, "trial_number": trial.number}
        return objective.value(metrics)

    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = max(0, n_trials - done)
    start = time.time()
    bar = None
    if progress and remaining:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_trials, initial=done, desc="search", unit="trial", dynamic_ncols=True)
    callbacks = []
    if bar is not None:
        def update(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            bar.update(1)
            best = best_trial(study, objective)
            if best is not None:
                bar.set_postfix_str(_summary(best[0].user_attrs.get("metrics", {})))
        callbacks.append(update)
    try:
        if remaining:
            study.optimize(objective_fn, n_trials=remaining, timeout=timeout,
                           callbacks=callbacks, catch=(EvaluationError,), gc_after_trial=False)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.time() - start
    best = best_trial(study, objective)
    new = len(study.get_trials(deepcopy=False, states=FINISHED)) - done
    if best is None:
        return SearchResult(study, None, False, None, new, seconds)
    trial, feasible = best
    return SearchResult(study, trial, feasible, space.policy_from_params(trial.params), new, seconds)


def best_trial(study: optuna.Study, objective: Objective):
    """The best feasible trial; if none is feasible, the least infeasible one."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if CONSTRAINT in t.constraints]
    if not trials:
        return None
    feasible = [t for t in trials if t.constraints[CONSTRAINT] <= 0]
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
