"""The search loop: one Optuna study, proposing policies, scoring them through an
evaluator callable that the workflow layer builds. It never edits or runs a model.

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
from onnxamc.metrics import Metrics
from onnxamc.policy import Policy
from onnxamc.search.objective import Objective, Shaping, objective_values
from onnxamc.search.results import CONSTRAINT, best_trial, metrics_of, pareto_front
from onnxamc.search.space import SearchSpace
from onnxamc.search.storage import mark_failed, open_storage

Evaluate = Callable[[Policy], Metrics]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
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
               settings: dict | None = None) -> optuna.Study:
    """Create the study, or load it if it exists and belongs to this model. `settings`
    (how the objective was given) are stored so reports can rebuild it."""
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
        study.set_user_attr("objective_settings", settings or {})
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
            mark_failed(study, trial)
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


class _Scorer:
    """The objective function Optuna calls: policy → metrics (or the cached ones of an
    identical policy) → the values and constraint the study stores."""

    def __init__(self, study, space, objective, evaluate, shaping, predictor, use_cache):
        self.study, self.space, self.objective = study, space, objective
        self.evaluate, self.shaping, self.predictor = evaluate, shaping, predictor
        self.use_cache = use_cache
        self.cache = {_key(t.params): (t.user_attrs["metrics"], t.number)
                      for t in study.get_trials(states=FINISHED) if "metrics" in t.user_attrs}
        self.tried = [space.vector(t.params)
                      for t in study.get_trials(deepcopy=False, states=FINISHED)]
        self.hits = 0

    def __call__(self, trial: optuna.Trial):
        policy = self.space.suggest(trial)
        key, vector = _key(trial.params), self.space.vector(trial.params)
        if self.use_cache and key in self.cache:  # an identical policy was measured already
            stored, number = self.cache[key]
            trial.set_user_attr("cached_from", number)
            metrics = Metrics.from_dict(stored)
            self.hits += 1
        else:
            metrics = self._measure(trial, policy, vector)
        stored = metrics.to_dict()
        trial.set_user_attr("metrics", stored)
        self.cache[key] = (stored, trial.number)
        trial.set_constraint(CONSTRAINT, self.objective.constraint(metrics))
        novelty = _novelty(vector, self.tried)
        self.tried.append(vector)
        removed = sum(1 for a in policy.layers.values() if a.remove)
        return objective_values(self.objective, metrics, self.shaping, novelty, removed)

    def _measure(self, trial, policy, vector) -> Metrics:
        if self.predictor is not None and self.predictor.should_skip(self.study, trial, vector):
            raise optuna.TrialPruned("predicted far worse than the best so far")
        try:
            metrics = self.evaluate(policy)
        except (KeyboardInterrupt, DeviceUnreachableError):  # the next run re-tries it
            trial.set_user_attr("interrupted", True)
            raise
        except EvaluationError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        metrics.effective_macs = self.space.macs(trial.params)
        metrics.effective_macs_ratio = metrics.effective_macs / max(self.space.total_macs, 1)
        if self.predictor is not None:
            self.predictor.record(self.study, trial, vector, metrics)
        return metrics


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
    scorer = _Scorer(study, space, objective, evaluate, shaping, predictor, use_cache)
    done, start = _evaluated(study), time.time()
    bar = _progress_bar(study, objective, n_trials, done) if progress else None
    quiet = _QuietStop()  # the caller says in one line why the search stopped
    optuna.logging.get_logger("optuna.study._optimize").addFilter(quiet)
    try:
        for _ in range(MAX_ROUNDS):  # trials the predictor skipped do not use the budget
            remaining = n_trials - _evaluated(study)
            left = None if timeout is None else timeout - (time.time() - start)
            if remaining <= 0 or (left is not None and left <= 0):
                break
            before = len(study.trials)
            study.optimize(scorer, n_trials=remaining, timeout=left,
                           callbacks=[bar] if bar else [], catch=(EvaluationError,),
                           gc_after_trial=False)
            _stop_if_all_failed(study, study.trials[before:])
    finally:
        optuna.logging.get_logger("optuna.study._optimize").removeFilter(quiet)
        if bar is not None:
            bar.close()
    seconds = time.time() - start
    new = _evaluated(study) - done
    stats = predictor.report(study) if predictor is not None else {}
    best = best_trial(study, objective)
    if best is None:
        return SearchResult(study, None, False, None, new, seconds, pareto_front(study),
                            scorer.hits, stats)
    trial, feasible = best
    return SearchResult(study, trial, feasible, space.policy_from_params(trial.params), new,
                        seconds, pareto_front(study), scorer.hits, stats)


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


class _ProgressBar:
    """A tqdm bar over the study's evaluated trials, showing the best so far."""

    def __init__(self, objective: Objective, total: int, initial: int):
        from tqdm.auto import tqdm

        self.objective = objective
        self.bar = tqdm(total=total, initial=initial, desc="search", unit="trial",
                        dynamic_ncols=True)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            return
        self.bar.update(1)
        best = best_trial(study, self.objective)
        if best is not None:
            m = metrics_of(best[0])
            self.bar.set_postfix_str(f"{m.describe_quality()}, lat x{m.latency_ratio:.2f}"
                                     if m.latency_ratio is not None else m.describe_quality())

    def close(self) -> None:
        self.bar.close()


def _progress_bar(study, objective, n_trials: int, done: int) -> _ProgressBar | None:
    return _ProgressBar(objective, n_trials, done) if n_trials > done else None


def _stop_if_all_failed(study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> None:
    """A study in which every candidate failed will not get better by more of the same:
    stop with the first failure's reason instead of writing nothing useful."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if trials and not complete and all(t.state == optuna.trial.TrialState.FAIL for t in trials):
        reason = next((t.user_attrs["error"] for t in trials if "error" in t.user_attrs),
                      "no reason recorded")
        raise SearchError(f"all {len(trials)} candidates of this run failed; the first: "
                          f"{reason}")


def _novelty(vector: list[float], tried: list[list[float]]) -> float:
    """Mean L1 distance to the nearest policy already tried, in [0, 1]."""
    if not tried or not vector:
        return 1.0
    return min(sum(abs(a - b) for a, b in zip(vector, v)) for v in tried) / len(vector)


def _evaluated(study: optuna.Study) -> int:
    """Trials that count against the budget: evaluated ones, and candidates that failed
    to build or run (their policy is a result too); not predictor skips, not trials cut
    off by a kill or Ctrl-C (their policy is queued again)."""
    counted = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.COMPLETE:
            counted += 1
        elif t.state == optuna.trial.TrialState.PRUNED and "skipped" not in t.user_attrs:
            counted += 1
        elif t.state == optuna.trial.TrialState.FAIL and "error" in t.user_attrs:
            counted += 1
    return counted


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)
