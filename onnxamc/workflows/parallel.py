"""`--workers N`: N processes on this machine evaluate one study's trials.

This process is worker 0; it starts N-1 more (multiprocessing, spawn: each loads the
model, data and calibration itself) that run the same search loop on the same storage
and stop when the study's budget is spent, then it re-measures and writes the result
alone. Measurements take turns on the device lock (runtime/device_lock.py) and run on a
core the workers' compute leaves free, while the other workers' batches wait. Other
machines join by running the same command against the same PostgreSQL storage; nothing
here is needed for that.

As with any multiprocessing program, a script that calls the API with workers > 1
must guard its entry point with `if __name__ == "__main__":`. A worker's arguments
(model, settings, data given as arrays) travel in a file, not through the start pipe:
the spawn start writes them into a pipe and blocks until the child has read them all,
so a child that died while starting (such an unguarded script) hung its parent forever.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import time
from dataclasses import replace

import optuna

from onnxamc.errors import SearchError
from onnxamc.search.storage import is_shared

JOIN_SECONDS = 30.0  # for workers to finish their trial after an interrupt


class Workers:
    """Context manager: the extra worker processes of one search."""

    def __init__(self, run, config, plan, output, seconds: float | None, measuring):
        self.count = config.workers
        self.quiet_key = quiet_key(measuring)
        self.run, self.config, self.plan, self.output = run, config, plan, output
        self.deadline = None if seconds is None else time.time() + seconds
        self.processes: list[multiprocessing.Process] = []
        self.arguments: str | None = None  # the file the extra workers read theirs from
        self.started = time.time()
        if self.count > 1 and not is_shared(plan.storage):
            raise SearchError("--workers needs a storage other processes can open (a "
                              "journal file or a database URL), not :memory:")

    def __enter__(self) -> "Workers":
        if self.count <= 1:
            return self
        from onnxamc.runtime.device_lock import share_machine

        context = multiprocessing.get_context("spawn")
        model = self.run.model
        run_config = replace(self.run.config, progress=False)
        config = replace(self.config, workers=1, profile=False, warm_start=None,
                         warm_start_from=None, sensitivity=None)
        self.arguments = _write_arguments((model, self.run.context.name, run_config, config,
                                           str(self.output), self.deadline))
        for number in range(1, self.count):
            process = context.Process(target=_worker_from_file, args=(self.arguments,),
                                      name=f"onnxamc-worker-{number}", daemon=False)
            process.start()
            self.processes.append(process)
        share_machine(self.quiet_key)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if not self.processes:
            _remove(self.arguments)
            return
        from onnxamc.runtime.device_lock import stop_sharing_machine

        stop_sharing_machine()
        if kind is not None:  # Ctrl-C or an error here: the others stop too (their
            for p in self.processes:  # trial is marked interrupted and queued again)
                if p.is_alive():
                    os.kill(p.pid, signal.SIGINT)
        failed = []
        for p in self.processes:
            p.join(None if kind is None else JOIN_SECONDS)
            if p.is_alive():
                p.kill()
                p.join()
            if p.exitcode not in (0, None) and kind is None:
                failed.append(f"{p.name} exited with {p.exitcode}")
        _remove(self.arguments)
        if failed:
            print(f"onnxamc: warning: {'; '.join(failed)} (their trials are queued again)",
                  file=sys.stderr)

    def refreshed(self, result, study: optuna.Study, plan):
        """The result again, from the study as all workers left it."""
        if self.count <= 1:
            return result
        from onnxamc.search.results import best_trial, pareto_front
        from onnxamc.search.study import _evaluated

        result.new_trials = _evaluated(study) - result.initial
        result.seconds = time.time() - self.started
        best = best_trial(study, plan.goal)
        result.pareto = pareto_front(study)
        if best is not None:
            result.best, result.feasible = best
            result.policy = plan.space.policy_from_params(best[0].params)
        return result


def quiet_key(measuring) -> str | None:
    """The device lock the workers' compute waits on: a device of this machine (a
    remote board is timed far from our compute)."""
    return None if measuring.target.is_remote else measuring.meter.lock_key


def _write_arguments(arguments: tuple) -> str:
    with tempfile.NamedTemporaryFile(prefix="onnxamc-worker-", suffix=".pickle",
                                     delete=False) as handle:
        pickle.dump(arguments, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return handle.name


def _remove(path: str | None) -> None:
    if path is not None and os.path.exists(path):
        os.unlink(path)


def _worker_from_file(path: str) -> None:
    with open(path, "rb") as handle:
        arguments = pickle.load(handle)
    worker_main(*arguments)


def worker_main(model, name, run_config, config, output, deadline) -> None:
    """One extra worker: the same search loop on the same study, no confirmation."""
    import logging
    from pathlib import Path

    from onnxamc.runtime.device_lock import share_machine
    from onnxamc.search import run_search
    from onnxamc.workflows.candidates import TrialEvaluator
    from onnxamc.workflows.run import Run
    from onnxamc.workflows.searching import _open, _sampler, plan_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger().setLevel(logging.ERROR)
    run = Run(model, run_config)
    run.context.name = name
    measuring = run.evaluator(measure_energy=False, allow_emulated=config.allow_emulated)
    share_machine(quiet_key(measuring))
    plan = plan_search(run, config, Path(output), measuring)  # as the first worker's
    study = _open(run, config, plan)
    seconds = None if deadline is None else deadline - time.time()
    if seconds is not None and seconds <= 0:
        return
    evaluator = TrialEvaluator(run, measuring)
    try:
        run_search(study, plan.space, plan.goal, evaluator, config.trials, seconds,
                   progress=False, seeds=[], shaping=config.shaping,
                   use_pruner=config.pruner != "none",
                   make_sampler=lambda n: _sampler(run, config, plan, n))
    except KeyboardInterrupt:
        sys.exit(130)
