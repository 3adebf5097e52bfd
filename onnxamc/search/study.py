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

import inspect
import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import optuna

from onnxamc.errors import EvaluationError, SearchError
from onnxamc.metrics import Metrics
from onnxamc.policy import Policy
from onnxamc.search.fidelity import Checkpoint, Stop
from onnxamc.search.locks import StudyLock
from onnxamc.search.objective import AccuracyBound, Objective, Shaping, objective_values
from onnxamc.search.results import CONSTRAINT, best_trial, is_feasible, metrics_of, pareto_front
from onnxamc.search.space import SearchSpace
from onnxamc.search.storage import open_storage
from onnxamc.search.workers import WORKER, WorkerId, join, recover, running_elsewhere

Evaluate = Callable[..., Metrics]  # (policy) or (policy, checkpoint) -> Metrics
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
SEEDED = "seeded"  # study user attribute: the seed policies were queued
POLL = 1.0  # seconds between looks at the study while other workers finish
DUPLICATE_WAIT = 600.0  # longest wait for another worker evaluating the same policy
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

    with StudyLock(study._storage, _spec_of(study), study.study_name):
        return recover(study, is_heartbeat_enabled(study._storage))


class _Scorer:
    """The objective function Optuna calls: policy → metrics (or the cached ones of an
    identical policy) → the values and constraint the study stores."""

    def __init__(self, study, space, objective, evaluate, shaping, predictor, use_cache,
                 use_pruner, me):
        self.study, self.space, self.objective = study, space, objective
        self.evaluate, self.shaping, self.predictor = evaluate, shaping, predictor
        self.use_cache, self.use_pruner, self.me = use_cache, use_pruner, me
        self.staged = len(inspect.signature(evaluate).parameters) >= 2
        self.cache: dict[str, tuple[dict, int, str | None]] = {}
        self.tried: list[list[float]] = []
        self.hits = self.stopped = 0
        self.lock: StudyLock | None = None
        self.last: int | None = None  # number of the last trial this worker ran
        self._seen: set[int] = set()
        self.tried_loaded = False
        self.best_latency: float | None = None
        self._refresh()

    def __call__(self, trial: optuna.Trial):
        trial.set_user_attr(WORKER, self.me.to_dict())  # before the lock goes: see recover
        if self.lock is not None:
            self.lock.release()  # held from the budget check until this trial existed
        self.last = trial.number
        policy = self.space.suggest(trial)
        key, vector = _key(trial.params), self.space.vector(trial.params)
        known = self._known(trial, key) if self.use_cache else None
        if known is not None:  # an identical policy was measured already
            stored, number, stopped = known
            trial.set_user_attr("cached_from", number)
            self.hits += 1
            if stopped is not None:
                trial.set_user_attr("metrics", stored)
                trial.set_user_attr("stopped", stopped)
                raise optuna.TrialPruned(stopped)
            metrics = Metrics.from_dict(stored)
        else:
            metrics = self._measure(trial, policy, vector, key)
        stored = metrics.to_dict()
        trial.set_user_attr("metrics", stored)
        self.cache[key] = (stored, trial.number, None)
        trial.set_constraint(CONSTRAINT, self.objective.constraint(metrics))
        novelty = _novelty(vector, self.tried)
        self.tried.append(vector)
        removed = sum(1 for a in policy.layers.values() if a.remove)
        return objective_values(self.objective, metrics, self.shaping, novelty, removed)

    def _measure(self, trial, policy, vector, key) -> Metrics:
        if self.predictor is not None and self.predictor.should_skip(self.study, trial, vector):
            raise optuna.TrialPruned("predicted far worse than the best so far")
        try:
            if self.staged:
                metrics = self.evaluate(policy, self._checkpoint(trial))
            else:
                metrics = self.evaluate(policy)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except EvaluationError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        except Stop as stop:
            self._store_stopped(trial, stop, key)
            raise optuna.TrialPruned(stop.reason) from None
        self._add_cost_model(metrics, trial.params)
        if self.predictor is not None:
            self.predictor.record(self.study, trial, vector, metrics)
        return metrics

    def _store_stopped(self, trial, stop: Stop, key: str) -> None:
        self._add_cost_model(stop.metrics, trial.params)
        stored = stop.metrics.to_dict()
        trial.set_user_attr("metrics", stored)
        trial.set_user_attr("stopped", stop.reason)
        self.cache[key] = (stored, trial.number, stop.reason)
        self.stopped += 1

    def _add_cost_model(self, metrics: Metrics, params: dict) -> None:
        metrics.effective_macs = self.space.macs(params)
        metrics.effective_macs_ratio = metrics.effective_macs / max(self.space.total_macs, 1)

    def _checkpoint(self, trial) -> Checkpoint:
        self._refresh()
        best = self.best_latency if isinstance(self.objective, AccuracyBound) else None
        return Checkpoint(trial, self.objective, best,
                          seeded="fixed_params" in self.study._storage.get_trial_system_attrs(
                              trial._trial_id),
                          use_pruner=self.use_pruner,
                          annotate=lambda m: self._add_cost_model(m, trial.params))

    def _known(self, trial, key: str):
        """The stored result of an identical policy: from this worker's cache, the study,
        or (waiting for it) another worker evaluating it now."""
        if key not in self.cache:
            self._refresh()
        if key in self.cache:
            return self.cache[key]
        deadline = time.monotonic() + DUPLICATE_WAIT
        while time.monotonic() < deadline:
            twins = [t for t in running_elsewhere(self.study, self.me)
                     if t.number < trial.number and _key(t.params) == key]
            if not twins:
                return None
            time.sleep(POLL)
            self._refresh()
            if key in self.cache:
                return self.cache[key]
        return None

    def _refresh(self) -> None:
        """Add the trials finished since the last look (by any worker) to the cache."""
        for t in self.study.get_trials(deepcopy=False, states=FINISHED):
            if t.number in self._seen:
                continue
            self._seen.add(t.number)
            if not self.tried_loaded:
                self.tried.append(self.space.vector(t.params))
            if "metrics" in t.user_attrs and "cached_from" not in t.user_attrs:
                self.cache.setdefault(_key(t.params), (t.user_attrs["metrics"], t.number,
                                                       t.user_attrs.get("stopped")))
                self._note_latency(t)
        self.tried_loaded = True

    def _note_latency(self, trial: optuna.trial.FrozenTrial) -> None:
        """Keep the upper end of the best feasible trusted latency ratio so far (what a
        candidate must surely beat to matter to a lowest-latency objective)."""
        if trial.state != optuna.trial.TrialState.COMPLETE or CONSTRAINT not in trial.constraints \
                or not is_feasible(trial):
            return
        m = trial.user_attrs["metrics"]
        if m.get("latency_ratio") is None or "uncertain" in (m.get("latency_flags") or []):
            return
        high = (m.get("latency_interval") or {}).get("high", m["latency_ratio"])
        self.best_latency = high if self.best_latency is None else min(self.best_latency, high)


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

    lock = lock or StudyLock(study._storage, _spec_of(study), study.study_name)
    heartbeat = is_heartbeat_enabled(study._storage)
    with lock:
        recover(study, heartbeat)
        worker = join(study)
        if not study.user_attrs.get(SEEDED):
            _enqueue_seeds(study, seeds if seeds is not None else space.seeds(), space)
    if make_sampler is not None:
        study.sampler = make_sampler(worker)
    me = WorkerId.this()
    scorer = _Scorer(study, space, objective, evaluate, shaping, predictor, use_cache,
                     use_pruner, me)
    done, start = _evaluated(study), time.time()
    bar = _ProgressBar(objective, n_trials, done) if progress and n_trials > done else None
    mine: list[int] = []
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


def _novelty(vector: list[float], tried: list[list[float]]) -> float:
    """Mean L1 distance to the nearest policy already tried, in [0, 1]."""
    if not tried or not vector:
        return 1.0
    return min(sum(abs(a - b) for a, b in zip(vector, v)) for v in tried) / len(vector)


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


def _spec_of(study: optuna.Study) -> str:
    """The storage spec other processes open (for the study lock's file or server)."""
    storage = study._storage
    backend = getattr(storage, "_backend", None)
    if backend is not None and hasattr(backend, "_file_path"):
        return str(backend._file_path)
    if isinstance(storage, optuna.storages.RDBStorage):
        return storage.url
    return ":memory:"


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)
