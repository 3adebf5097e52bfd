"""The device agent: a tracker and an agent on 127.0.0.1, remote onnxruntime and TVM
timing through them, and the unreachable error once the agent is stopped."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import types

import numpy as np
import onnx
import pytest

pytest.importorskip("tvm")

from onnxamc import api  # noqa: E402
from onnxamc.errors import DeviceUnreachableError  # noqa: E402
from onnxamc.runtime.agent import serve  # noqa: E402
from onnxamc.runtime.measure import TargetMeter, measure_models  # noqa: E402
from onnxamc.runtime.remote import devices_under_key  # noqa: E402
from onnxamc.runtime.target import target_from_dict  # noqa: E402

KEY = "onnxamc-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remote_target(runtime: str, tracker_port: int, timeout: float = 30, retries: int = 1):
    raw = {"runtime": runtime, "device": "remote",
           "remote": {"key": KEY, "tracker": f"127.0.0.1:{tracker_port}", "timeout": timeout,
                      "retries": retries}}
    if runtime == "tvm":
        raw["tvm"] = {"target": {"kind": "llvm"}}  # the "board" is this x86 host
    return target_from_dict(f"test-remote-{runtime}", raw)


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops it; kill only if it does not stop."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def tracker():
    """`onnxamc device tracker` on a free 127.0.0.1 port."""
    proc = subprocess.Popen([sys.executable, "-m", "onnxamc.cli", "device", "tracker",
                             "--port", str(free_port())], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()  # "tracker on 127.0.0.1:PORT; ..."
        assert line.startswith("tracker on 127.0.0.1:"), line
        yield types.SimpleNamespace(port=int(line.split(":")[1].split(";")[0]), proc=proc)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def agent(tracker):
    """`onnxamc device serve` as a user runs it, stopped with Ctrl-C (SIGINT)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onnxamc.cli", "device", "serve", "--port",
                             str(port), "--tracker", f"127.0.0.1:{tracker.port}", "--key", KEY],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        target = remote_target("onnxruntime", tracker.port)
        deadline = time.time() + 60
        while devices_under_key(target.remote) == 0:
            assert proc.poll() is None, "the agent exited"
            assert time.time() < deadline, "agent did not register with the tracker"
            time.sleep(0.2)
        yield proc
    finally:
        stop(proc)


def feed() -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)}


def test_remote_onnxruntime_timing(agent, tracker, tiny_cnn):
    target = remote_target("onnxruntime", tracker.port)
    meter = TargetMeter(target)
    model = onnx.load(tiny_cnn)
    stats = meter.time([meter.prepare(model, feed()), meter.prepare(model, feed())], feed(),
                       warmup=2, runs=9)
    assert [s.runs for s in stats] == [9, 9]
    assert all(s.median_ms > 0 and s.p90_ms >= s.median_ms for s in stats)
    assert meter.device_info["machine"] and "onnxruntime" in meter.device_info


def test_remote_tvm_timing(agent, tracker, tiny_cnn):
    target = remote_target("tvm", tracker.port)
    stats = measure_models(target, [onnx.load(tiny_cnn)], feed(), warmup=2, runs=6)[0]
    assert stats.runs == 6 and stats.median_ms > 0


def test_remote_bench_through_api(agent, tracker, tiny_cnn, tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(f'runtime = "onnxruntime"\ndevice = "remote"\n[remote]\nkey = "{KEY}"\n'
                    f'tracker = "127.0.0.1:{tracker.port}"\ntimeout = 30\n')
    metrics = api.bench([tiny_cnn], "digits", runs=6, eval_samples=32, target=path)[0]
    assert metrics.latency.runs == 6 and metrics.device["machine"]
    assert metrics.energy["kind"] == "estimated"  # no counter reaches over RPC


def test_stopped_agent_is_unreachable_within_timeout(tracker, tiny_cnn):
    port = free_port()
    server = serve("127.0.0.1", port, port + 1, ("127.0.0.1", tracker.port), KEY + "-gone",
                   silent=True)
    target = target_from_dict("gone", {
        "runtime": "onnxruntime", "device": "remote",
        "remote": {"key": KEY + "-gone", "tracker": f"127.0.0.1:{tracker.port}",
                   "timeout": 5, "retries": 1}})
    deadline = time.time() + 30
    while devices_under_key(target.remote) == 0:
        assert time.time() < deadline, "agent did not register with the tracker"
        time.sleep(0.2)
    server.terminate()
    start = time.time()
    with pytest.raises(DeviceUnreachableError, match=KEY + "-gone"):
        measure_models(target, [onnx.load(tiny_cnn)], feed(), warmup=1, runs=2)
    assert time.time() - start < 5 * 2 + 5


def test_stopped_tracker_is_unreachable():
    target = remote_target("onnxruntime", free_port(), timeout=3, retries=0)
    start = time.time()
    with pytest.raises(DeviceUnreachableError, match="unreachable") as info:
        measure_models(target, [], {}, runs=1)
    assert time.time() - start < 3 and "\n" not in str(info.value)


def test_agent_started_from_the_cli_prints_where_it_listens(agent):
    line = agent.stdout.readline()
    assert line.startswith("onnxamc device agent on 127.0.0.1:") and KEY in line


def test_public_host_warns_about_missing_authentication(monkeypatch):
    import tvm.rpc

    class FakeServer:
        def __init__(self, *args, **kwargs):
            self.port = args[1]
    monkeypatch.setattr(tvm.rpc, "Server", FakeServer)
    with pytest.warns(UserWarning, match="no authentication"):
        api.device_serve("0.0.0.0", 9999)


@pytest.mark.slow
def test_remote_tuning_runs_candidates_on_the_board(agent, tracker, tmp_path):
    """MetaSchedule measures candidates through the tracker and key (the RPC runner).

    Passed in 148 s here; once, with two other tunings on the same 2 cores, every
    candidate came back as a failure (run_secs 1e10, most likely the session timeout)."""
    from dataclasses import replace

    from test_tuning import matmul_model

    from onnxamc.runtime import tuning
    from onnxamc.runtime.tvm_build import build

    target = replace(remote_target("tvm", tracker.port, timeout=120), tuning_trials=2,
                     tvm_target={"kind": "llvm", "num-cores": 1},
                     tuning_database=tmp_path / "db")
    build(matmul_model(0)[0], target)
    assert tuning.LAST_REPORT[0].tuned_now == 1
    from tvm.s_tir import meta_schedule as ms

    records = ms.database.JSONDatabase(work_dir=str(tmp_path / "db")).get_all_tuning_records()
    times = [float(t) for r in records for t in (r.run_secs or [])]
    assert times and min(times) < 1.0  # measured on the agent, not a failure marker (1e10)
