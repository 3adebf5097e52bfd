"""Several workers on one study: who is running what, and who is dead.

Each trial records the worker that runs it (host, process id, the process's start
time). A RUNNING trial is another worker's business while that worker lives: it is
recovered (failed, its policy queued again) only when its process is gone from this
host, or, on a storage with heartbeats (PostgreSQL), when Optuna finds its heartbeat
stale. A trial stopped by Ctrl-C is failed with "interrupted" and queued again too.
Everything that queues is done under the study lock, so a policy is queued once.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass

import optuna

from onnxamc.search.storage import mark_failed

WORKER = "worker"  # trial user attribute: {"host", "pid", "started"}
REQUEUED = "requeued_trials"  # study user attribute: trial numbers queued again
WORKERS = "workers_joined"  # study user attribute: how many workers have joined
RUNNING = (optuna.trial.TrialState.RUNNING,)


@dataclass(frozen=True)
class WorkerId:
    host: str
    pid: int
    started: int | None  # the process's start time in clock ticks since boot (Linux)

    @classmethod
    def this(cls) -> "WorkerId":
        return cls(socket.gethostname(), os.getpid(), _start_time(os.getpid()))

    def to_dict(self) -> dict:
        return {"host": self.host, "pid": self.pid, "started": self.started}

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


def is_dead(record: dict | None, heartbeat: bool = False) -> bool:
    """Whether the worker of a trial is known to be gone: a process of this host that
    no longer exists (or whose pid now belongs to a later process). A RUNNING trial
    without a record was cut off before it got one (workers record themselves while
    they hold the study lock), unless a heartbeat storage says otherwise."""
    if not record:
        return not heartbeat
    if record.get("host") != socket.gethostname():
        return False  # another machine's worker: its heartbeat decides
    pid = int(record.get("pid", 0))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    fields = _stat(pid)
    if fields is not None and fields[0] in ("Z", "X"):  # killed, not yet reaped
        return True
    started = record.get("started")
    return started is not None and fields is not None and int(fields[19]) != started


def join(study: optuna.Study) -> int:
    """This worker's number in the study (0 for the first ever): call under the lock.
    Samplers are seeded with seed + number so workers do not propose the same policies."""
    number = int(study.user_attrs.get(WORKERS, 0))
    study.set_user_attr(WORKERS, number + 1)
    return number


def recover(study: optuna.Study, heartbeat: bool = False) -> int:
    """Queue again the policies of trials cut off by a dead worker or by Ctrl-C; call
    under the study lock. With `heartbeat`, Optuna first fails (and retries) trials
    whose heartbeat went stale. Returns how many were queued here."""
    if heartbeat:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    cut = [t for t in study.get_trials(deepcopy=False, states=(
        optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL))
        if t.state == optuna.trial.TrialState.RUNNING or t.user_attrs.get("interrupted")]
    if not cut:
        return 0
    requeued = set(study.user_attrs.get(REQUEUED, []))
    waiting = [t.system_attrs.get("fixed_params") for t in
               study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))]
    recovered = 0
    for trial in cut:
        if trial.number in requeued:
            continue
        dead = trial.state == optuna.trial.TrialState.RUNNING and \
            is_dead(trial.user_attrs.get(WORKER), heartbeat)
        if trial.state == optuna.trial.TrialState.RUNNING and not dead:
            continue
        if dead and not mark_failed(study, trial):
            continue
        # a trial killed while setting its params holds only some: queue the whole
        # policy it was given (an enqueued one), else what it had chosen so far
        params = trial.system_attrs.get("fixed_params") or trial.params
        if params and params not in waiting:
            study.enqueue_trial(params, user_attrs={"retry_of": trial.number})
            waiting.append(params)
        requeued.add(trial.number)
        recovered += 1
    if recovered:
        study.set_user_attr(REQUEUED, sorted(requeued))
    return recovered


def running_elsewhere(study: optuna.Study, me: WorkerId) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials of other workers that may be alive."""
    mine = me.to_dict()
    return [t for t in study.get_trials(deepcopy=False, states=RUNNING)
            if t.user_attrs.get(WORKER) != mine and
            not is_dead(t.user_attrs.get(WORKER), heartbeat=True)]


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields if len(fields) > 19 else None
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields is not None else None
