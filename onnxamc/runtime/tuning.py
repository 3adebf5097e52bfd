"""MetaSchedule tuning with one persistent database per target, reused across trials
and runs.

A search evaluates many candidates whose layers mostly share shapes (channel counts
rounded to a multiple of 8 keep the distinct shapes few). Each fused kernel is a
MetaSchedule task keyed structurally; a task that already has a record in the target's
database is never tuned again, so the tuning budget is spent only on new shapes. The
database is MetaSchedule's JSON pair (database_workload.json, database_tuning_record.json)
in the target's `tuning_database` folder: append-only lines, safe to keep across runs.
Boards are tuned through the same tracker and key as they are timed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

BUILDER_TIMEOUT_S = 120.0  # per candidate kernel; shared 2-core machines need the slack


@dataclass
class TuningReport:
    tasks: int
    tuned_now: int  # tasks that had no record and were tuned in this call
    trials: int
    seconds: float


LAST_REPORT: list[TuningReport] = []  # the most recent report, for tools and tests


def prepare_for_tuning(mod, tgt):
    """The passes MetaSchedule's task extraction and database application expect."""
    import tvm
    from tvm import relax
    from tvm.relax import transform

    with tgt:
        return tvm.transform.Sequential([transform.CanonicalizeBindings(),
                                         relax.pipeline.zero_pipeline()])(mod)


def tune(mod, tgt, database_dir: Path, trials: int, remote=None,
         cross_compiler: str | None = None) -> TuningReport:
    """Tune the tasks of `mod` that the database has no record of, with at most `trials`
    measured candidates in all (a share of it per new task)."""
    from tvm.s_tir import meta_schedule as ms

    start = time.perf_counter()
    database_dir.mkdir(parents=True, exist_ok=True)
    tasks = ms.relax_integration.extract_tasks(mod, tgt)
    db = ms.database.JSONDatabase(work_dir=str(database_dir))
    new = [t for t in tasks if db.query_tuning_record(t.dispatched[0], tgt, "main") is None]
    if new and trials > 0:
        per_task = max(1, math.ceil(trials / len(new)))
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            new, work_dir=str(database_dir), seed=0)
        ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(database_dir),
                           max_trials_global=per_task * len(new), max_trials_per_task=per_task,
                           num_trials_per_iter=min(per_task, 16),
                           builder=_builder(cross_compiler), runner=_runner(remote),
                           database=db)
    report = TuningReport(len(tasks), len(new) if trials > 0 else 0,
                          trials if new else 0, time.perf_counter() - start)
    LAST_REPORT[:] = [report]
    return report


def compile_tuned(mod, tgt, database_dir: Path, trials: int, remote=None,
                  cross_compiler: str | None = None):
    """Tune what is new, then compile with every record the database holds."""
    import tvm
    from tvm.relax import transform

    mod = prepare_for_tuning(mod, tgt)
    tune(mod, tgt, database_dir, trials, remote, cross_compiler)
    with tgt:
        mod = transform.MetaScheduleApplyDatabase(str(database_dir))(mod)
    return tvm.compile(mod, target=tgt)


def _builder(cross_compiler: str | None):
    from tvm.s_tir import meta_schedule as ms

    if not cross_compiler:
        return ms.builder.LocalBuilder(max_workers=1, timeout_sec=BUILDER_TIMEOUT_S)

    def export(module) -> str:  # runs in the builder's worker process
        import tempfile

        from tvm.support import cc

        path = tempfile.mkdtemp(prefix="onnxamc-ms-") + "/kernel.so"
        module.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
        return path
    return ms.builder.LocalBuilder(max_workers=1, timeout_sec=BUILDER_TIMEOUT_S,
                                   f_export=export)


def _runner(remote):
    """Measure on this machine, or on the board through the tracker and its key."""
    from tvm.s_tir import meta_schedule as ms

    if remote is None:
        return ms.runner.LocalRunner(timeout_sec=BUILDER_TIMEOUT_S)
    config = ms.runner.RPCConfig(tracker_host=remote.tracker_host,
                                 tracker_port=remote.tracker_port, tracker_key=remote.key,
                                 session_timeout_sec=int(remote.timeout))
    return ms.runner.RPCRunner(rpc_config=config)
