"""End to end on an emulated aarch64 board (tools/emulated_board.py): the agent installed
by the board's own pip in an arm64 Debian, run under QEMU user emulation, reached through
a tracker on this host, exactly as a Raspberry Pi would be.

All slow (run with --runslow): the first build of the board takes minutes (it is cached
in ~/.cache/onnxamc/arm64-board, or $ONNXAMC_BOARD_DIR), the agent takes a minute to
start emulated, and a model runs 50-200x slower than on this host. They need the Debian
packages mmdebstrap, proot, qemu-user-static and gcc-aarch64-linux-gnu, and are skipped
without them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest

pytest.importorskip("tvm")

from onnxamc import api  # noqa: E402
from onnxamc.errors import UnsupportedOnTargetError  # noqa: E402
from onnxamc.runtime import make_session  # noqa: E402
from onnxamc.runtime.measure import TargetMeter  # noqa: E402
from onnxamc.runtime.target import load_target  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "emulated_board.py"
BOARD_DIR = Path(os.environ.get("ONNXAMC_BOARD_DIR", "~/.cache/onnxamc/arm64-board")).expanduser()
HOST_TOOLS = {"mmdebstrap": "mmdebstrap", "proot": "proot",
              "qemu-aarch64-static": "qemu-user-static",
              "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu"}
KEY = "arm64-qemu"
EMULATED_MARK = "qemu-aarch64 user mode"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxamc.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built() -> Path:
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        pytest.skip(f"the emulated board needs the Debian packages {' '.join(missing)}")
    done = subprocess.run([sys.executable, str(SCRIPT), "--dir", str(BOARD_DIR), "build"],
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-2000:]
    return BOARD_DIR


def serve_board(key: str, tracker: str | None = None) -> types.SimpleNamespace:
    """`tools/emulated_board.py serve` until it prints that the board is registered."""
    argv = [sys.executable, str(SCRIPT), "--dir", str(BOARD_DIR), "serve", "--key", key,
            "--port", str(free_port())]
    argv += ["--tracker", tracker] if tracker else ["--tracker-port", str(free_port())]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    line = proc.stdout.readline()  # "emulated arm64 board serving: key K at tracker T; ..."
    if "serving" not in line:
        stop_board(proc)
        pytest.fail(f"the board did not start: {line}{proc.stderr.read()[-2000:]}")
    state = json.loads((BOARD_DIR / f"serve-{key}.json").read_text())
    ort, tvm = state["targets"]
    return types.SimpleNamespace(proc=proc, tracker=state["tracker"], key=key,
                                 agent_pid=state["agent_pid"], ort=Path(ort), tvm=Path(tvm))


def stop_board(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


@pytest.fixture(scope="module")
def board(built):
    serving = serve_board(KEY)
    try:
        yield serving
    finally:
        stop_board(serving.proc)


def test_probe_sees_the_key(board):
    result = run_cli("targets", board.ort, board.tvm, "--probe")
    rows = [l for l in result.stdout.splitlines() if l.startswith(KEY)]
    assert len(rows) == 2 and all(f"remote:{KEY}@{board.tracker}" in r for r in rows), \
        result.stdout
    assert all("  ok  " in r for r in rows), result.stdout


@pytest.mark.parametrize("runtime", ["ort", "tvm"])
def test_bench_returns_latencies_labelled_emulated(board, runtime):
    result = run_cli("bench", ROOT / "models" / "resnet20.onnx", "--target",
                     getattr(board, runtime), "--runs", "3", "--eval-samples", "100")
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(l for l in result.stdout.splitlines() if l.startswith("resnet20.onnx"))
    assert float(row.split()[2]) > 0  # median latency in ms
    assert f"EMULATED: latency measured on an emulated board ({EMULATED_MARK}" in result.stdout


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict:
    """The bundled models as shipped, int8 and pruned, made by `onnxamc apply`."""
    folder = tmp_path_factory.mktemp("variants")
    made = {}
    for model in ("resnet20", "mobilenetv2"):
        source = ROOT / "models" / f"{model}.onnx"
        made[model] = {"fp32": source}
        for variant, uniform in (("int8", "bits=8"), ("pruned", "keep=0.5")):
            path = folder / f"{model}-{variant}.onnx"  # int8 as asked, not as it pays here
            result = run_cli("apply", source, "--uniform", uniform, "--no-latency-guard",
                             "-o", path)
            assert result.returncode == 0, result.stderr[-2000:]
            made[model][variant] = path
    return made


# max |board - host| allowed, relative to the largest |host output|. fp32 is the same
# arithmetic in another order (measured: below 5e-7). int8 kernels may round a
# requantization step differently (measured: ResNet-20 0.6%, MobileNetV2 5.4%, the same
# on both runtimes; this host's TVM and its onnxruntime differ by as much).
TOLERANCE = {"fp32": 1e-5, "int8": 0.06, "pruned": 1e-5}


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.mark.parametrize("runtime", ["ort", "tvm"])
@pytest.mark.parametrize("variant", ["fp32", "int8", "pruned"])
@pytest.mark.parametrize("model", ["resnet20", "mobilenetv2"])
def test_board_outputs_equal_the_hosts(board, variants, model, variant, runtime):
    proto = onnx.load(variants[model][variant])
    feed = api.data_for(proto, "fashion-mnist", 1).one()
    meter = TargetMeter(load_target(getattr(board, runtime)))
    try:
        prepared = meter.prepare(proto, feed)
    except UnsupportedOnTargetError as exc:
        pytest.fail(f"{model} {variant} on {runtime}: {exc}")
    on_board = meter.outputs(prepared, feed)
    on_host = make_session(proto, 1).run(None, feed)
    assert meter.device_info["machine"] == "aarch64" and meter.emulated
    assert [o.shape for o in on_board] == [o.shape for o in on_host]
    worst, scale = max_diff(on_board, on_host), max(float(np.max(np.abs(h))) for h in on_host)
    print(f"\nOUTPUTS {model} {variant} {runtime}: max abs diff {worst:.3g} "
          f"(largest output {scale:.3g}); argmax board {int(on_board[0].argmax())} "
          f"host {int(on_host[0].argmax())}")
    assert worst <= TOLERANCE[variant] * scale
    assert on_board[0].argmax() == on_host[0].argmax()


def search_command(target: Path, output: Path, trials: int, *extra: str) -> list[str]:
    return ["search", ROOT / "models" / "resnet20.onnx", "--target", target, "--trials",
            str(trials), "--runs", "3", "--verify-runs", "3", "--eval-samples", "100",
            "--calibration-samples", "32", "--actions", "prune=0.5:1:0.25,quant",
            "-o", output, "--no-progress", *extra]


def completed(journal: Path) -> list[optuna.trial.FrozenTrial]:
    from onnxamc.search import open_storage

    storage = open_storage(journal)
    name = optuna.study.get_all_study_names(storage)[0]
    return optuna.load_study(study_name=name, storage=storage).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))


def test_search_measures_every_candidate_on_the_board(board, tmp_path):
    refused = run_cli(*search_command(board.ort, tmp_path / "s.onnx", 3))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "is emulated" in refused.stderr
    assert not (tmp_path / "s.onnx").exists()

    result = run_cli(*search_command(board.ort, tmp_path / "s.onnx", 3, "--allow-emulated"))
    assert result.returncode == 0, result.stderr[-3000:]
    trials = completed(tmp_path / "s.journal")
    assert len(trials) == 3
    for t in trials:
        metrics = t.user_attrs["metrics"]
        assert metrics["target"] == f"{KEY}-ort" and metrics["latency"]["median_ms"] > 0
        assert EMULATED_MARK in metrics["emulated"]
    assert "EMULATED" in result.stderr and (tmp_path / "s.onnx").exists()


@pytest.fixture
def tracker():
    proc = subprocess.Popen([sys.executable, "-m", "onnxamc.cli", "device", "tracker",
                             "--port", str(free_port())], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    try:
        yield line.split(" on ")[1].split(";")[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_killed_agent_stops_the_search_which_resumes(built, tracker, tmp_path):
    """Kill the emulated agent in the middle of a search: one line, exit 2, the trial it
    cut off is queued again; a new agent and the same command finish the study. Then the
    board stops cleanly on SIGTERM: no process of it left, its ports free."""
    key = KEY + "-kill"
    first = serve_board(key, tracker)
    cmd = [sys.executable, "-m", "onnxamc.cli",
           *map(str, search_command(first.ort, tmp_path / "k.onnx", 4, "--allow-emulated"))]
    search = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 1500
        while time.time() < deadline and search.poll() is None:
            time.sleep(2)
            with contextlib.suppress(Exception):
                if len(completed(tmp_path / "k.journal")) >= 1:
                    break
        assert search.poll() is None, search.stderr.read()[-2000:]
        os.killpg(first.agent_pid, signal.SIGKILL)  # the agent: proot, qemu, TVM's worker
        stderr = search.communicate(timeout=900)[1]
    finally:
        if search.poll() is None:
            search.kill()
        stop_board(first.proc)
    assert search.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "unreachable" in stderr and key in stderr
    kept = len(completed(tmp_path / "k.journal"))
    assert 1 <= kept < 4

    second = serve_board(key, tracker)
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(completed(tmp_path / "k.journal")) == 4
    finally:
        _assert_stops_cleanly(second)


def _assert_stops_cleanly(serving) -> None:
    import psutil

    groups = {serving.proc.pid, serving.agent_pid}  # the launcher's, the emulated agent's
    group = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) in groups]
    ports = [c.laddr.port for p in group for c in _listening(p)]
    assert stop_board(serving.proc) == 0
    _, alive = psutil.wait_procs(group, timeout=30)
    assert not alive, f"left behind: {alive}"
    assert ports and all(_port_is_free(port) for port in ports)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _listening(process) -> list:
    with contextlib.suppress(Exception):
        return [c for c in process.net_connections("tcp") if c.status == "LISTEN"]
    return []


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
