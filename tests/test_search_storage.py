"""Study storages a user gets wrong: one line each, nothing left behind (issue 15 rows of
issue 14), and the PostgreSQL URL forms."""

from __future__ import annotations

import json
import socket
import threading
import time

import optuna
import pytest

from onnxamc import api
from onnxamc.cli import main
from onnxamc.errors import OnnxAmcWarning, SearchError
from onnxamc.metrics import Metrics
from onnxamc.search import AccuracyBound, LayerSlot, MultiObjective, SearchSpace, open_study
from onnxamc.search import storage as storage_module
from onnxamc.search.storage import open_storage, postgres_url
from onnxamc.search.study import run_search


def _toy_study(path, trials=3):
    space = SearchSpace([LayerSlot("a", "Conv", takes=frozenset({"quant"}))], actions=["quant"])
    study = open_study(str(path), "s", AccuracyBound(0.01), "fp")

    def evaluate(policy):
        return Metrics(quality=0.9, quality_drop=0.0,
                       latency_ratio=1.0 if policy.action("a").bits == 32 else 0.5)

    run_search(study, space, AccuracyBound(0.01), evaluate, n_trials=trials, progress=False)
    return study


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onnxamc: error:"), err
    return err[0]


def test_storage_pointing_at_a_json_file_is_one_line(tmp_path, capsys):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"schema": 1, "layers": {}}, indent=2))
    with pytest.raises(SearchError, match="not an Optuna journal"):
        open_storage(policy)
    line = _one_line_error(capsys, ["report", "--storage", str(policy), "-o", str(tmp_path / "r")])
    assert "not an Optuna journal" in line
    assert json.loads(policy.read_text())["schema"] == 1  # untouched


def test_torn_last_line_is_repaired_and_the_study_goes_on(tmp_path):
    path = tmp_path / "s.journal"
    _toy_study(path, 3)
    with open(path, "ab") as f:
        f.write(b'{"op_code": 8, "worker_id": "x", "trial_id": 2, "user_a')  # cut by a crash
    with pytest.warns(OnnxAmcWarning, match="repaired journal"):
        study = _toy_study(path, 5)
    assert len([t for t in study.trials if t.state.is_finished()]) == 5
    assert path.read_bytes().endswith(b"\n")


def test_damaged_line_in_the_middle_names_the_intact_trials(tmp_path):
    path = tmp_path / "s.journal"
    _toy_study(path, 3)
    lines = path.read_bytes().split(b"\n")
    cut = next(i for i, line in enumerate(lines) if b'"op_code":4' in line.replace(b" ", b"")
               and i > 5)
    lines[cut] = lines[cut][: len(lines[cut]) // 2]  # torn, and later writes appended
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(SearchError, match=rf"damaged at line {cut + 1}.* intact"):
        open_storage(path)


def test_report_on_a_missing_storage_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nothing.journal"
    line = _one_line_error(capsys, ["report", "--storage", str(missing), "-o", str(tmp_path / "r")])
    assert "no study storage" in line
    assert not missing.exists()


def test_rejected_warm_start_leaves_no_journal(tiny_cnn, tmp_path):
    bad = tmp_path / "bad.policy.json"
    bad.write_text(json.dumps({"schema": 1, "layers": {"no_such_layer": {"bits": 8}}}))
    with pytest.raises(Exception):
        api.search(tiny_cnn, "digits", tmp_path / "out.onnx", trials=2, warm_start=bad,
                   progress=False)
    assert not (tmp_path / "out.journal").exists()


def test_pareto_on_a_single_objective_study_is_refused(tmp_path):
    path = tmp_path / "s.journal"
    _toy_study(path, 2)
    with pytest.raises(SearchError, match="another objective"):
        open_study(str(path), "s", MultiObjective(), "fp")
    with pytest.raises(SearchError, match="another objective"):
        open_study(str(path), "s", AccuracyBound(0.05), "fp")
    open_study(str(path), "s", AccuracyBound(0.01), "fp")  # the same one continues


def test_postgres_url_forms_take_an_installed_driver():
    pytest.importorskip("psycopg2")
    for url in ("postgresql://u@h/db", "postgresql+psycopg2://u@h/db", "postgres://u@h/db"):
        assert postgres_url(url).startswith(("postgresql+psycopg2://", "postgresql+psycopg://"))
    assert postgres_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_server_that_never_answers_times_out_in_one_line(monkeypatch):
    pytest.importorskip("psycopg2")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held = []

    def accept():  # take connections, say nothing
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setattr(storage_module, "CONNECT_TIMEOUT", 2)
    start = time.monotonic()
    with pytest.raises(SearchError, match="cannot open study storage") as info:
        open_storage(f"postgresql://u:secret@127.0.0.1:{server.getsockname()[1]}/db")
    assert time.monotonic() - start < 30
    assert "\n" not in str(info.value) and "secret" not in str(info.value)
    server.close()
    for s in held:
        s.close()


def test_a_live_workers_running_trial_is_left_alone(tmp_path):
    """A worker joining must not fail another's RUNNING trial (it did: `Cannot tell a
    FAIL trial`); a dead worker's trial is failed and its policy queued again."""
    import subprocess
    import sys

    from onnxamc.search.workers import WORKER, WorkerId, recover

    path = tmp_path / "s.journal"
    study = open_study(str(path), "s", AccuracyBound(0.01), "fp")
    live = study.ask({"a": optuna.distributions.FloatDistribution(0, 1)})
    live.set_user_attr(WORKER, WorkerId.this().to_dict())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    dead = study.ask({"a": optuna.distributions.FloatDistribution(0, 1)})
    dead.set_user_attr(WORKER, {"host": socket.gethostname(), "pid": int(gone), "started": 1})
    assert recover(study) == 1
    states = {t.number: t.state for t in study.trials}
    assert states[live.number] == optuna.trial.TrialState.RUNNING
    assert states[dead.number] == optuna.trial.TrialState.FAIL
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs["retry_of"] for t in waiting] == [dead.number]
    study.tell(live, 0.5)  # the live worker can still finish its trial


def test_a_database_study_is_locked_across_processes_not_per_thread(tmp_path):
    """Optuna wraps a study's RDB storage in a cache; the study lock must look inside,
    or workers on SQLite / PostgreSQL got a thread lock each (seeds enqueued twice, two
    workers numbered 0 and sampling with one seed)."""
    from onnxamc.search.locks import StudyLock
    from onnxamc.search.storage import spec_of

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="s")
    assert spec_of(study) == url
    lock = StudyLock.of(study)
    with lock:
        assert (tmp_path / "s.db.onnxamc-lock").exists()  # a file lock, seen by processes
