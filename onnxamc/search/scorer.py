"""The objective function Optuna calls, one per worker: policy → metrics → the values
and constraint the study stores.

The study is the cache: an identical policy measured before (by any worker, also one
stopped early) is not measured again, and a duplicate of a policy another worker is
evaluating right now waits for that result. The evaluator may take a Checkpoint
(search.fidelity) and stop early: the trial is then PRUNED with what was measured.
"""

from __future__ import annotations

import inspect
import json
import time

import optuna

from onnxamc.errors import DeviceUnreachableError, EvaluationError
from onnxamc.metrics import Metrics
from onnxamc.search.fidelity import Checkpoint, Stop
from onnxamc.search.locks import StudyLock
from onnxamc.search.objective import AccuracyBound, objective_values
from onnxamc.search.results import CONSTRAINT, is_feasible
from onnxamc.search.workers import WORKER, running_elsewhere

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
POLL = 1.0  # seconds between looks at another worker's evaluation of the same policy
DUPLICATE_WAIT = 600.0  # longest wait for another worker evaluating the same policy


class Scorer:
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
        except (KeyboardInterrupt, DeviceUnreachableError):  # the next run re-tries it
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


def _novelty(vector: list[float], tried: list[list[float]]) -> float:
    """Mean L1 distance to the nearest policy already tried, in [0, 1]."""
    if not tried or not vector:
        return 1.0
    return min(sum(abs(a - b) for a, b in zip(vector, v)) for v in tried) / len(vector)


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)
