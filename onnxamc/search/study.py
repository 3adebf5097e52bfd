"""The search loop: one Optuna study, proposing policies, scoring them through an
evaluator callable that the workflow layer builds. It never edits or runs a model.

The study is the coordinator, whether one process runs it or many workers on one
journal file or one PostgreSQL database: `n_trials` is the study's total of evaluated
trials (workers claim them one at a time under the study lock, so N workers run the
budget once, not N times); the seed policies are queued once per study; trials of dead
workers are failed and their policy queued again; an identical policy is never
evaluated twice (the study is the cache, also across workers: a duplicate of a policy
another worker is evaluating waits for its result). An optional accuracy predictor
skips candidates predicted far worse (pruned, outside the budget); the evaluator may
stop a candidate early (search.fidelity): such trials are PRUNED, never results.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import optuna

from onnxamc.errors import DeviceUnreachableError, EvaluationError, SearchError
from onnxamc.metrics import Metrics
from onnxamc.policy import Policy
from onnxamc.search.locks import StudyLock
from onnxamc.search.objective import Objective, Shaping
from onnxamc.search.results import best_trial, metrics_of, pareto_front
from onnxamc.search.scorer import Scorer
from onnxamc.search.space import SearchSpace
from onnxamc.search.storage import open_storage
from onnxamc.search.workers import WorkerId, join, recover, running_elsewhere

Evaluate = Callable[..., Metrics]  # (policy) or (policy, checkpoint) -> Metrics
SEEDED = "seeded"  # study user attribute: the seed policies were queued
POLL = 1.0  # seconds between looks at the study while other workers finish
MAX_ATTEMPTS = 20  # trials per budgeted trial at most (predictor skips are free)
STOP_CHECKS = 10  # a run whose first trials all failed stops (later ones: one succeeded)


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
    stopped: int = 0  # trials this run stopped early (multi-fidelity)
    worker: int = 0  # this process's number among the study's workers
    initial: int = 0  # trials the study counted before this run

    @property
    def trials_per_minute(self) -> float:
        return 60.0 * self.new_trials / self.seconds if self.seconds > 0 else math.nan


def open_study(storage: str, name: str, objective: Objective, fingerprint: str,
               sampler: optuna.samplers.BaseSampler | None = None,
               settings: dict | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study, or load it if it exists and belongs to this model and this
    objective. `settings` (how the objective was given) are stored so reports can
    rebuild it."""
    try:
        study = optuna.create_study(storage=open_storage(storage), study_name=name,
                                    directions=list(objective.directions), sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
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
    _check_same_objective(study, name, storage, objective)
    return study


def _check_same_objective(study: optuna.Study, name: str, storage: str,
                          objective: Objective) -> None:
    """Trials scored for another objective (directions, bound) cannot be continued; the
    pick rule of a Pareto search only chooses at the end and may change."""
    wanted = [d.lower() for d in objective.directions]
    stored = [d.name.lower() for d in study.directions]
    described = study.user_attrs.get("objective")
    if stored != wanted or (described is not None and
                            _without_pick(described) != _without_pick(objective.describe())):
        raise SearchError(f"study {name!r} in {storage} was made for another objective "
                          f"({described or ', '.join(stored)}; this search: "
                          f"{objective.describe()}); choose another --study name")


def _without_pick(description: str) -> str:
    return description.split("; pick ")[0]


def recover_interrupted(study: optuna.Study) -> int:
    """Queue again the policies of trials cut off by a dead worker or by Ctrl-C (see
    search.workers.recover); returns how many were queued."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    with StudyLock.of(study):
        return recover(study, is_heartbeat_enabled(study._storage))


def run_search(study: optuna.Study, space: SearchSpace, objective: Objective,
               evaluate: Evaluate, n_trials: int, timeout: float | None = None,
               progress: bool = True, seeds: list[Policy] | None = None,
               shaping: Shaping | None = None, predictor=None,
               use_cache: bool = True, use_pruner: bool = True,
               lock: StudyLock | None = None,
               make_sampler: Callable[[int], optuna.samplers.BaseSampler] | None = None
               ) -> SearchResult:
    """Run trials until the study holds `n_trials` evaluated ones or `timeout` passes.

    `seeds` are enqueued once per study (default: the space's uniform seeds);
    `predictor` (search.predictor.AccuracyPredictor) may skip candidates before they
    are evaluated; `make_sampler(worker number)` gives this worker its own sampler (a
    seed of its own); `use_cache=False` only exists to measure what the cache saves.
    """
    from optuna.storages._heartbeat import is_heartbeat_enabled

    lock = lock or StudyLock.of(study)
    heartbeat = is_heartbeat_enabled(study._storage)
    with lock:
        recover(study, heartbeat)
        worker = join(study)
        if not study.user_attrs.get(SEEDED):
            _enqueue_seeds(study, seeds if seeds is not None else space.seeds(), space)
    if make_sampler is not None:
        study.sampler = make_sampler(worker)
    me = WorkerId.this()
    scorer = Scorer(study, space, objective, evaluate, shaping, predictor, use_cache,
                     use_pruner, me)
    done, start = _evaluated(study), time.time()
    bar = _ProgressBar(objective, n_trials, done) if progress and n_trials > done else None
    mine: list[int] = []
    quiet = _QuietStop()  # the caller says in one line why the search stopped
    optuna.logging.get_logger("optuna.study._optimize").addFilter(quiet)
    try:
        for _ in range(MAX_ATTEMPTS * n_trials):
            if timeout is not None and time.time() - start >= timeout:
                break
            if not _claim(study, lock, n_trials, me, heartbeat):
                if not running_elsewhere(study, me):
                    break
                time.sleep(POLL)  # another worker may still fail: its trial comes back
                continue
            scorer.lock, scorer.last = lock, None
            try:
                study.optimize(scorer, n_trials=1, callbacks=[bar] if bar else [],
                               catch=(EvaluationError,), gc_after_trial=False)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # our trial was failed meanwhile (a stale heartbeat): it is retried
            finally:
                lock.release()
            if scorer.last is not None:
                mine.append(scorer.last)
            if len(mine) <= STOP_CHECKS:
                trials = study.get_trials(deepcopy=False)
                _stop_if_all_failed(study, [trials[n] for n in mine if n < len(trials)],
                                    n_trials)
    finally:
        optuna.logging.get_logger("optuna.study._optimize").removeFilter(quiet)
        lock.release()
        if bar is not None:
            bar.close()
    return _result(study, space, objective, scorer, predictor, done, start, worker)


def _claim(study, lock: StudyLock, n_trials: int, me: WorkerId, heartbeat: bool) -> bool:
    """Take the lock if the budget has room for one more trial (kept until the trial
    exists, then the scorer releases it); recovers dead workers' trials first."""
    lock.acquire()
    recover(study, heartbeat)
    running = len(running_elsewhere(study, me))
    if _evaluated(study) + running < n_trials:
        return True
    lock.release()
    return False


def _enqueue_seeds(study: optuna.Study, seeds: list[Policy], space: SearchSpace) -> None:
    for seed in seeds:
        label = seed.meta.get("baseline")  # reports mark the uniform baselines
        study.enqueue_trial(space.params_of(seed), skip_if_exists=True,
                            user_attrs={"baseline": label} if label else None)
    study.set_user_attr(SEEDED, True)


def _result(study, space, objective, scorer, predictor, done, start, worker) -> SearchResult:
    seconds = time.time() - start
    new = _evaluated(study) - done
    stats = predictor.report(study) if predictor is not None else {}
    best = best_trial(study, objective)
    common = dict(pareto=pareto_front(study), cache_hits=scorer.hits, predictor=stats,
                  stopped=scorer.stopped, worker=worker, initial=done)
    if best is None:
        return SearchResult(study, None, False, None, new, seconds, **common)
    trial, feasible = best
    return SearchResult(study, trial, feasible, space.policy_from_params(trial.params), new,
                        seconds, **common)


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
        if not _counts(trial):
            return
        self.bar.update(1)
        best = best_trial(study, self.objective)
        if best is not None:
            m = metrics_of(best[0])
            self.bar.set_postfix_str(f"{m.describe_quality()}, lat x{m.latency_ratio:.2f}"
                                     if m.latency_ratio is not None else m.describe_quality())

    def close(self) -> None:
        self.bar.close()


def _stop_if_all_failed(study: optuna.Study, trials: list[optuna.trial.FrozenTrial],
                        n_trials: int) -> None:
    """A study in which every candidate failed will not get better by more of the same:
    after a few failures (and nothing else) stop with the first one's reason instead of
    writing nothing useful."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL and "error" in t.user_attrs]
    if failed and len(failed) >= min(3, n_trials) and not complete and len(failed) == len(trials):
        raise SearchError(f"all {len(failed)} candidates of this run failed; the first: "
                          f"{failed[0].user_attrs['error']}")


def _counts(t: optuna.trial.FrozenTrial) -> bool:
    """Trials that count against the budget: evaluated ones (stopped early too), and
    candidates that failed to build or run (their policy is a result too); not
    predictor skips, not trials cut off by a kill or Ctrl-C (their policy is queued
    again)."""
    if t.state == optuna.trial.TrialState.COMPLETE:
        return True
    if t.state == optuna.trial.TrialState.PRUNED:
        return "skipped" not in t.user_attrs
    return t.state == optuna.trial.TrialState.FAIL and "error" in t.user_attrs


def _evaluated(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if _counts(t))
