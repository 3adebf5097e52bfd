"""A lock per study, across processes and machines: what workers do one at a time.

Workers take it to set a new study up (seed policies enqueued once), to claim a trial
of the budget (so N workers run the study's `--trials`, not N times as many) and to
recover the trials of dead workers (each queued again once). A journal or SQLite file
is locked with fcntl on a file beside it (one machine); PostgreSQL with an advisory
lock on a connection of its own (any number of machines); an in-memory study with a
thread lock. The lock is held for milliseconds, never while a model is evaluated.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from pathlib import Path

import optuna

from onnxamc.search.storage import backend_of, spec_of

_THREAD_LOCKS: dict[int, threading.Lock] = {}


class StudyLock:
    """acquire() / release(), also as a context manager; re-entrant it is not."""

    def __init__(self, storage, spec: str, study_name: str):
        self._release = None
        self._acquire = self._choose(storage, spec, study_name)

    @classmethod
    def of(cls, study: optuna.Study) -> "StudyLock":
        """The lock of `study`, whatever storage holds it."""
        return cls(study._storage, spec_of(study), study.study_name)

    def _choose(self, storage, spec: str, study_name: str):
        text = str(spec)
        backend = backend_of(storage)
        if isinstance(backend, optuna.storages.RDBStorage) and text.startswith("postgres"):
            return self._advisory(backend, study_name)
        path = _lock_file(text)
        if path is not None:
            return self._file(path)
        lock = _THREAD_LOCKS.setdefault(id(storage), threading.Lock())

        def acquire():
            lock.acquire()
            self._release = lock.release
        return acquire

    def _file(self, path: Path):
        def acquire():
            handle = open(path, "a")
            fcntl.flock(handle, fcntl.LOCK_EX)

            def release():
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            self._release = release
        return acquire

    def _advisory(self, storage, study_name: str):
        from sqlalchemy import text

        key = int.from_bytes(hashlib.sha1(study_name.encode()).digest()[:8], "big", signed=True)

        def acquire():
            connection = storage.engine.connect()
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})

            def release():
                try:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                finally:
                    connection.close()
            self._release = release
        return acquire

    def acquire(self) -> None:
        self._acquire()

    def release(self) -> None:
        """Release if held (safe to call twice)."""
        release, self._release = self._release, None
        if release is not None:
            release()

    @property
    def held(self) -> bool:
        return self._release is not None

    def __enter__(self) -> "StudyLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_file(spec: str) -> Path | None:
    """The file to flock for a file-backed storage, or None."""
    if spec.startswith("sqlite:///"):
        return Path(spec[len("sqlite:///"):] + ".onnxamc-lock")
    if "://" in spec or spec == ":memory:":
        return None
    return Path(spec + ".onnxamc-lock")
