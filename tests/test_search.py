"""Search: real Optuna studies on a real journal file, real models, real sessions."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from onnxamc import api
from onnxamc.errors import SearchError
from onnxamc.metrics import Metrics
from onnxamc.policy import Policy
from onnxamc.search import AccuracyBound, LatencyBudget, make_objective

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # stopped early counts
KILL_TRIALS = 40  # enough that the kill lands mid-run even when trials are fast (idle machine)


def _search(tiny_cnn, tmp_path, trials, **kw):
    kw = {"data": "digits", "calibration": "digits", "eval_samples": 300,
          "calibration_samples": 64, "runs": 10, "verify_runs": 20,
          "progress": False, **kw}
    return api.search(tiny_cnn, trials=trials, output=tmp_path / "out.onnx", **kw)


def test_ten_trial_search_finishes_and_writes_model_and_policy(tiny_cnn, tmp_path):
    outcome = _search(tiny_cnn, tmp_path, 10)
    study = outcome.result.study
    assert len(study.get_trials(states=FINISHED)) == 10
    assert outcome.model_path.exists() and outcome.policy_path.exists()
    policy = Policy.load(outcome.policy_path)
    assert policy.fingerprint == api.analyze(tiny_cnn).fingerprint
    trial = study.trials[0]
    assert {"quality", "latency_ratio", "size_bytes", "macs"} <= set(trial.user_attrs["metrics"])
    # the written model is the best policy applied; it runs and meets the bound
    assert outcome.compressed.quality_drop <= 0.02
    assert outcome.result.feasible
    assert json.loads(outcome.policy_path.read_text())["meta"]["trial"] == outcome.result.best.number


def test_same_call_continues_the_study(tiny_cnn, tmp_path):
    first = _search(tiny_cnn, tmp_path, 4)
    before = {t.number: t.params for t in first.result.study.get_trials(states=FINISHED)}
    second = _search(tiny_cnn, tmp_path, 7)
    after = {t.number: t.params for t in second.result.study.get_trials(states=FINISHED)}
    assert len(after) == 7 and second.result.new_trials == 3
    assert all(after[n] == p for n, p in before.items())


def test_identical_policy_is_not_evaluated_twice(tiny_cnn, tmp_path):
    calls = []
    from onnxamc.search import LayerSlot, SearchSpace, open_study, run_search

    space = SearchSpace([LayerSlot("a", "Conv", takes=frozenset({"quant"}))], actions=["quant"])
    objective = AccuracyBound(0.01)
    study = open_study(str(tmp_path / "s.journal"), "s", objective, "fp")

    def evaluate(policy):
        calls.append(policy.action("a").bits)
        return Metrics(quality=0.9, quality_drop=0.0,
                       latency_ratio=1.0 if policy.action("a").bits == 32 else 0.5)

    run_search(study, space, objective, evaluate, n_trials=6, progress=False)
    assert len(study.trials) == 6 and sorted(calls) == [8, 32]  # only two distinct policies
    assert sum("cached_from" in t.user_attrs for t in study.trials) == 4


def test_objectives():
    m = Metrics(quality=0.9, quality_drop=0.02, latency_ratio=0.5)
    assert LatencyBudget(0.6).constraint(m) < 0 and LatencyBudget(0.4).constraint(m) > 0
    assert AccuracyBound(0.01).constraint(m) > 0 and AccuracyBound(0.05).constraint(m) < 0
    assert make_objective() == AccuracyBound(0.01)
    with pytest.raises(ValueError):
        make_objective(latency=0.5, max_drop=0.1)


def test_study_of_another_model_is_refused(tiny_cnn, resnet20, tmp_path):
    _search(tiny_cnn, tmp_path, 1, study="shared")
    with pytest.raises(SearchError, match="made for another model"):
        api.search(resnet20, trials=1, storage=tmp_path / "out.journal", study="shared",
                   output=tmp_path / "r.onnx", progress=False, eval_samples=10)


def test_killed_search_resumes_without_losing_trials(tiny_cnn, tmp_path):
    """SIGKILL a running `onnxamc search`, run the same command again: the study
    continues, finished trials are kept, the interrupted one is queued again."""
    storage = tmp_path / "kill.journal"
    cmd = [sys.executable, "-m", "onnxamc.cli", "search", str(tiny_cnn), "--data", "digits",
           "--calibration", "digits", "--calibration-samples", "64", "--eval-samples", "300",
           "--runs", "10", "--trials", str(KILL_TRIALS), "--storage", str(storage), "--study", "kill",
           "-o", str(tmp_path / "k.onnx"), "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    from onnxamc.search import open_storage

    deadline = time.time() + 120
    done = []
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if storage.exists():
            try:
                study = optuna.load_study(study_name="kill", storage=open_storage(storage))
                done = study.get_trials(states=FINISHED)
            except KeyError:
                continue
            if len(done) >= 3:
                break
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = {t.number: t.params for t in done}
    assert 3 <= len(kept) < KILL_TRIALS

    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    study = optuna.load_study(study_name="kill", storage=open_storage(storage))
    finished = {t.number: t.params for t in study.get_trials(states=FINISHED)}
    assert len(finished) == KILL_TRIALS
    assert all(finished[n] == p for n, p in kept.items())
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    finished_params = list(finished.values())
    # re-run, not lost (a trial killed while its params were being set holds only some)
    assert all(any(t.params.items() <= p.items() for p in finished_params)
               for t in failed if t.params)
    assert (tmp_path / "k.onnx").exists()


def test_trial_cut_off_by_a_kill_is_queued_again(tmp_path):
    """A trial left RUNNING (its process was killed) is marked failed and its policy is
    evaluated by the next run, so the proposal is not lost."""
    from onnxamc.search import LayerSlot, SearchSpace, open_study, run_search

    space = SearchSpace([LayerSlot("a", "Conv"), LayerSlot("b", "Gemm")])
    objective = AccuracyBound(0.01)
    study = open_study(str(tmp_path / "s.journal"), "s", objective, "fp")
    cut = study.ask()
    cut_policy = space.suggest(cut)  # the process "dies" here: the trial stays RUNNING
    seen = []

    def evaluate(policy):
        seen.append(policy.to_dict()["layers"])
        return Metrics(quality=0.9, quality_drop=0.0, latency_ratio=1.0)

    run_search(study, space, objective, evaluate, n_trials=3, progress=False, seeds=[])
    states = {t.number: t.state for t in study.trials}
    assert states[cut.number] == optuna.trial.TrialState.FAIL
    assert cut_policy.to_dict()["layers"] in seen
    assert len(study.get_trials(states=FINISHED)) == 3
