"""Study storage: a journal file by default, an RDB URL (PostgreSQL, SQLite) on request.

The study is also the policy database: trial params are the policy, user attributes
the measured metrics.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from onnxamc.errors import SearchError

RDB_SCHEMES = ("sqlite://", "postgresql://", "postgresql+psycopg2://", "mysql://")


def open_storage(spec: str | Path):
    """`path/to/file.journal` (any plain path), an SQLAlchemy URL, or `:memory:` (kept in
    this process only: tests and benchmarks, where a journal's fsync per write costs
    more than a synthetic trial)."""
    text = str(spec)
    if text == ":memory:":
        return optuna.storages.InMemoryStorage()
    if text.startswith(RDB_SCHEMES):
        try:
            return optuna.storages.RDBStorage(text, heartbeat_interval=60, grace_period=120)
        except Exception as exc:
            raise SearchError(f"cannot open study storage {text!r}: "
                              f"{str(exc).splitlines()[0]}") from None
    if "://" in text:
        raise SearchError(f"unsupported storage URL {text!r}: use a journal file path or "
                          "sqlite:// / postgresql:// URL")
    path = Path(text)
    if path.is_dir():
        raise SearchError(f"study storage {text!r} is a directory; give a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as exc:
        raise SearchError(f"cannot open journal file {text!r}: {str(exc).splitlines()[0]}") from None


def mark_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Mark a trial another process left RUNNING as failed. Optuna's public API only
    finishes trials of this process; this is the one place that reaches its storage."""
    study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
