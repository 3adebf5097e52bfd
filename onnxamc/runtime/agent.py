"""The device agent (`onnxamc device serve`): TVM's RPC server plus onnxamc functions.

One protocol and one queue for both runtimes: the board registers with a TVM RPC tracker
under a device key; the host asks the tracker for a session on that key, then either
uploads an exported TVM library and times it with TVM's own time_evaluator, or uploads
ONNX bytes and calls `onnxamc.agent.time_onnx`, which times the model with onnxruntime
on the board and returns JSON (per-run milliseconds, median, p90, CV, device), or
`onnxamc.agent.run_onnx`, which writes the model's outputs for a feed to a file the host
downloads (to check the board computes what the host computes).

An agent under emulation (qemu user mode) says so in its description: latency measured
there means nothing, and the host labels it and keeps it out of searches.

TVM RPC has no authentication: whoever reaches the port can run code on the board. The
agent binds to 127.0.0.1 unless told otherwise; reach it through `ssh -L` or keep it on
a trusted network.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from onnxamc.errors import OnnxAmcWarning

TIME_ONNX = "onnxamc.agent.time_onnx"
DESCRIBE = "onnxamc.agent.describe"
RUN_ONNX = "onnxamc.agent.run_onnx"
EMULATED_ENV = "ONNXAMC_EMULATED"  # set by tools/emulated_board.py: how the board is emulated
_X86_CPUINFO = ("GenuineIntel", "AuthenticAMD", "vendor_id")
NO_AUTH_WARNING = ("TVM RPC has no authentication: anyone who reaches {host}:{port} can run "
                   "code on this machine. Use it on a trusted network only, or keep the "
                   "default 127.0.0.1 and reach it through `ssh -L`.")


def emulation() -> str | None:
    """How this process is emulated, or None on real hardware.

    The emulated board's launcher sets $ONNXAMC_EMULATED; qemu user mode started any
    other way shows an aarch64 process the x86 host's /proc/cpuinfo."""
    marked = os.environ.get(EMULATED_ENV, "").strip()
    if marked:
        return marked
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return None
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    if any(mark in cpuinfo for mark in _X86_CPUINFO):
        return f"qemu user mode ({platform.machine()} process on an x86 host)"
    return None


def describe_device() -> dict:
    """What the host records next to each remote measurement."""
    info = {"machine": platform.machine(), "system": platform.system(),
            "release": platform.release(), "node": platform.node(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "emulated": emulation()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu part")):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/device-tree/model") as f:  # Raspberry Pi, Jetson
            info["board"] = f.read().strip("\x00\n ")
    except OSError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    import tvm

    info["tvm"] = tvm.__version__
    return info


def _session_and_feed(model_file: str, feed_file: str, config: dict):
    """An onnxruntime session for an uploaded model, configured as the host asked."""
    import tvm

    from onnxamc.runtime.ort_target import target_session
    from onnxamc.runtime.target import Target

    workpath = tvm.get_global_func("tvm.rpc.server.workpath")
    target = Target("remote", "onnxruntime", config.get("device", "cpu"),
                    int(config.get("threads", 1)),
                    provider_options=config.get("provider_options", {}),
                    io_binding=bool(config.get("io_binding", True)))
    with np.load(workpath(feed_file)) as data:
        feed = {k: data[k] for k in data.files}
    return target_session(workpath(model_file), target), feed, target, workpath


def time_onnx(model_file: str, feed_file: str, config_json: str) -> str:
    """Time an uploaded ONNX model with onnxruntime here; JSON with per-run ms."""
    from onnxamc.runtime.ort_target import session_runner

    config = json.loads(config_json)
    session, feed, target, _ = _session_and_feed(model_file, feed_file, config)
    run = session_runner(session, feed, target)
    for _ in range(int(config.get("warmup", 10))):
        run()
    samples = []
    for _ in range(int(config.get("runs", 50))):
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) * 1e3)
    return json.dumps({"samples_ms": samples, "device": describe_device()})


def run_onnx(model_file: str, feed_file: str, config_json: str) -> str:
    """Run an uploaded ONNX model once on a feed; the outputs go to an .npz file in the
    session's work directory (arr_0, arr_1, ... in output order), whose name is returned
    for the host to download."""
    session, feed, _, workpath = _session_and_feed(model_file, feed_file,
                                                   json.loads(config_json))
    name = f"{model_file}.outputs.npz"
    with open(workpath(name), "wb") as f:
        np.savez(f, *session.run(None, feed))
    return name


def register_functions() -> None:
    """Runs in the RPC server process before it listens (server_init_callback)."""
    import tvm_ffi

    tvm_ffi.register_global_func(TIME_ONNX, time_onnx, override=True)
    tvm_ffi.register_global_func(RUN_ONNX, run_onnx, override=True)
    tvm_ffi.register_global_func(DESCRIBE, lambda: json.dumps(describe_device()), override=True)


def serve(host: str = "127.0.0.1", port: int = 9090, port_end: int = 9199,
          tracker: tuple[str, int] | None = None, key: str = "", silent: bool = False):
    """Start the agent; returns the tvm.rpc.Server (its .port; stop it with `stop`)."""
    from tvm import rpc

    if host not in ("127.0.0.1", "localhost", "::1"):
        warnings.warn(NO_AUTH_WARNING.format(host=host, port=port), OnnxAmcWarning, stacklevel=2)
    with _children_ignore_sigint(), _import_path_shared():
        return rpc.Server(host, port, port_end, tracker_addr=tracker, key=key, silent=silent,
                          server_init_callback=register_functions)


@contextlib.contextmanager
def _import_path_shared():
    """The server runs in a fresh Python process: let it import this very onnxamc
    (PYTHONPATH while it starts, then as it was: the caller's environment is its own)."""
    here = str(Path(__file__).resolve().parents[2])
    before = os.environ.get("PYTHONPATH")
    paths = (before or "").split(os.pathsep)
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *[p for p in paths if p]])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def start_tracker(host: str = "127.0.0.1", port: int = 9190, port_end: int = 9199,
                  silent: bool = True):
    """A TVM RPC tracker (the queue of devices by key); returns it (.port; `stop` it)."""
    from tvm.rpc.tracker import Tracker

    if host not in ("127.0.0.1", "localhost", "::1"):
        warnings.warn(NO_AUTH_WARNING.format(host=host, port=port), OnnxAmcWarning, stacklevel=2)
    with _children_ignore_sigint():
        return Tracker(host, port, port_end, silent=silent)


@contextlib.contextmanager
def _children_ignore_sigint():
    """TVM serves from a child Python process, in our process group: Ctrl-C in a terminal
    reaches it too, and it dies with a traceback of its own. Started while SIGINT is
    ignored, it keeps ignoring it (Python installs no handler for an ignored SIGINT), and
    the parent, which does get Ctrl-C, stops it with `stop`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stop(server) -> None:
    """Stop a tvm.rpc Server or Tracker and every process under it, without a traceback.

    TVM's own Tracker.terminate asks the tracker to stop through 127.0.0.1, which is
    refused when it listens on another address; killing TVM's worker process (and its
    session processes first) works whatever the address, and frees the port."""
    worker = getattr(server, "proc", None)
    if worker is None:
        return
    server.proc = None
    process = getattr(worker, "_proc", None)  # the subprocess.Popen of TVM's worker
    with contextlib.suppress(Exception):
        worker.kill()  # PopenWorker.kill: its children recursively (psutil), then the worker
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(10)
