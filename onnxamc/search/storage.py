"""Study storage: a journal file by default, an RDB URL (PostgreSQL, SQLite) on request.

The study is also the policy database: trial params are the policy, user attributes
the measured metrics. Several processes share one: a journal file on one machine,
PostgreSQL across machines (with Optuna's heartbeat, so a killed worker's trial is
failed and run again). What a user can get wrong here is a one-line SearchError: a
missing driver, a server that does not answer within CONNECT_TIMEOUT, a file that is
not a journal, a journal torn by a crash.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import optuna

from onnxamc.errors import SearchError, first_line, warn

RDB_SCHEMES = ("sqlite://", "postgresql://", "postgresql+", "postgres://", "mysql://",
               "mysql+")
POSTGRES_DRIVERS = {"psycopg": "psycopg", "psycopg2": "psycopg2"}  # URL driver: module
CONNECT_TIMEOUT = 10  # seconds to reach a database server and hear from it
SCHEMA_RACE_TRIES = 5  # opens tried while other workers create a fresh database's tables
HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 60  # a trial silent this long belongs to a dead worker: failed, retried
MAX_RETRY = 3  # a trial whose worker died is run again at most this often


def open_storage(spec: str | Path, create: bool = True):
    """`path/to/file.journal` (any plain path), an SQLAlchemy URL, or `:memory:` (kept in
    this process only: tests and benchmarks, where a journal's fsync per write costs
    more than a synthetic trial). With `create=False` a missing journal is an error
    instead of a new empty file (reading a study must not make one)."""
    text = str(spec)
    if text == ":memory:":
        return optuna.storages.InMemoryStorage()
    if text.startswith(RDB_SCHEMES):
        return _open_rdb(text)
    if "://" in text:
        raise SearchError(f"unsupported storage URL {text!r}: use a journal file path or "
                          "sqlite:// / postgresql:// URL")
    return _open_journal(Path(text), create)


def is_shared(spec: str | Path) -> bool:
    """Whether other processes can open the same storage (workers need one that is)."""
    return str(spec) != ":memory:"


def _open_rdb(url: str):
    import warnings

    url = postgres_url(url)
    kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback",
                    None) or optuna.storages.RetryFailedTrialCallback
    attempt = 0
    while True:
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_INTERVAL,
                    grace_period=GRACE_PERIOD,
                    heartbeat_stale_trial_callback=retry(max_retry=MAX_RETRY))
        except Exception as exc:
            attempt += 1
            if attempt < SCHEMA_RACE_TRIES and _lost_schema_race(exc):
                time.sleep(0.2 * attempt)  # another worker is creating the tables
                continue
            raise SearchError(f"cannot open study storage {_redacted(url)!r}: "
                              f"{first_line(exc)}") from None


def _lost_schema_race(exc: Exception) -> bool:
    """Workers started together on a fresh database (a Kubernetes Job of N pods) all
    create Optuna's tables; PostgreSQL lets one win and tells the others the type or
    table already exists. Opening again then finds the tables made."""
    text = str(exc).lower()
    return "already exists" in text or "duplicate key" in text or "uniqueviolation" in text


def postgres_url(url: str) -> str:
    """The URL with a PostgreSQL driver that is installed: `postgresql://` (SQLAlchemy
    2.1 means psycopg 3 by it) and `postgresql+psycopg2://` both work with either
    psycopg 3 or psycopg2; without either, one line says what to install."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres") and not scheme.startswith("postgresql+"):
        return url
    asked = scheme.partition("+")[2] or None
    if asked is not None and asked not in POSTGRES_DRIVERS:
        return url  # another SQLAlchemy dialect driver (pg8000, asyncpg...): as given
    installed = [d for d, module in POSTGRES_DRIVERS.items()
                 if importlib.util.find_spec(module) is not None]
    if not installed:
        raise SearchError("a PostgreSQL storage needs a driver: pip install 'onnxamc[dist]' "
                          "(psycopg2) or psycopg")
    driver = asked if asked in installed else installed[0]
    return f"postgresql+{driver}{sep}{rest}"


def _open_journal(path: Path, create: bool):
    if path.is_dir():
        raise SearchError(f"study storage {str(path)!r} is a directory; give a file path")
    if not path.exists() and not create:
        raise SearchError(f"no study storage at {str(path)!r} (give the journal file or "
                          "database URL the search wrote)")
    if path.exists():
        check_journal(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    try:
        backend = JournalFileBackend(str(path))
        repair_torn_tail(path, backend)
        return JournalStorage(backend)
    except SearchError:
        raise
    except Exception as exc:
        raise SearchError(f"cannot open journal file {str(path)!r}: {first_line(exc)}") from None


def check_journal(path: Path) -> None:
    """A one-line error unless `path` is empty or an Optuna journal: one JSON record
    with an `op_code` per line. A record that does not parse before the last line (a
    torn write that later writes were appended to) is named, with the intact trials."""
    with open(path, "rb") as f:
        head = f.read(16)
        if head.startswith(b"SQLite format 3"):
            raise SearchError(f"study storage {str(path)!r} is an SQLite database: give it "
                              f"as sqlite:///{path}")
        f.seek(0)
        lines = f.read().split(b"\n")
    complete = lines[:-1]  # the part after the last newline is checked by the repair
    trials = 0
    for number, line in enumerate(complete, start=1):
        record = _record(line)
        if record is None:
            if number == 1:
                raise SearchError(f"study storage {str(path)!r} is not an Optuna journal "
                                  "(its first line is no journal record); give a new path "
                                  "or the journal a search wrote")
            raise SearchError(f"journal {str(path)!r} is damaged at line {number} (a crash "
                              f"while writing?): {trials} trials are intact before it; keep "
                              f"the first {number - 1} lines (head -n {number - 1}) to go on")
        trials += record.get("op_code") == 4  # JournalOperation.CREATE_TRIAL


def repair_torn_tail(path: Path, backend) -> None:
    """Cut a last line without its newline (a process killed while appending), holding
    the journal's own lock so no writer is mid-append; says so on stderr."""
    from optuna.storages.journal._file import get_lock_file

    with get_lock_file(backend._lock):
        size = path.stat().st_size
        if size == 0:
            return
        with open(path, "rb+") as f:
            f.seek(max(size - 65536, 0))
            tail = f.read()
            if tail.endswith(b"\n"):
                return
            cut = tail.rfind(b"\n")
            keep = (size - len(tail) + cut + 1) if cut >= 0 else 0
            if keep == 0 and size > len(tail):
                raise SearchError(f"journal {str(path)!r} ends in a line longer than 64 KiB "
                                  "without a newline; it is damaged")
            f.truncate(keep)
    warn(f"repaired journal {path}: removed a torn last line ({size - keep} bytes, a write "
         "cut off by a crash); the trials before it are kept")


def _record(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "op_code" in record else None


def mark_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Mark a trial another process left RUNNING as failed; False if it had finished
    meanwhile. Optuna's public API only finishes trials of this process; this is the
    one place that reaches its storage."""
    try:
        return bool(study._storage.set_trial_state_values(trial._trial_id,
                                                          optuna.trial.TrialState.FAIL))
    except (RuntimeError, ValueError):  # UpdateFinishedTrialError: someone was faster
        return False


def backend_of(storage):
    """The storage behind Optuna's cache: a study's RDB storage comes wrapped in one."""
    return getattr(storage, "_backend", storage)


def spec_of(study: optuna.Study) -> str:
    """The storage spec other processes open (for the study lock's file or server)."""
    backend = backend_of(study._storage)
    if hasattr(backend, "_file_path"):
        return str(backend._file_path)
    if isinstance(backend, optuna.storages.RDBStorage):
        return backend.url
    return ":memory:"


def _redacted(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if not at or ":" not in auth:
        return url
    return f"{scheme}{sep}{auth.split(':', 1)[0]}:***@{host}"
