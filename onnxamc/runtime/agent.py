"""The device agent (`onnxamc device serve`): TVM's RPC server plus onnxamc functions.

One protocol and one queue for both runtimes: the board registers with a TVM RPC tracker
under a device key; the host asks the tracker for a session on that key, then either
uploads an exported TVM library and times it with TVM's own time_evaluator, or uploads
ONNX bytes and calls `onnxamc.agent.time_onnx`, which times the model with onnxruntime
on the board and returns JSON (per-run milliseconds, median, p90, CV, device).

TVM RPC has no authentication: whoever reaches the port can run code on the board. The
agent binds to 127.0.0.1 unless told otherwise; reach it through `ssh -L` or keep it on
a trusted network.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

TIME_ONNX = "onnxamc.agent.time_onnx"
DESCRIBE = "onnxamc.agent.describe"
NO_AUTH_WARNING = ("TVM RPC has no authentication: anyone who reaches {host}:{port} can run "
                   "code on this machine. Use it on a trusted network only, or keep the "
                   "default 127.0.0.1 and reach it through `ssh -L`.")


def describe_device() -> dict:
    """What the host records next to each remote measurement."""
    info = {"machine": platform.machine(), "system": platform.system(),
            "release": platform.release(), "node": platform.node(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}
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


def time_onnx(model_file: str, feed_file: str, config_json: str) -> str:
    """Time an uploaded ONNX model with onnxruntime here; JSON with per-run ms."""
    import tvm

    from onnxamc.runtime.ort_target import session_runner, target_session
    from onnxamc.runtime.target import Target

    workpath = tvm.get_global_func("tvm.rpc.server.workpath")
    config = json.loads(config_json)
    target = Target("remote", "onnxruntime", config.get("device", "cpu"),
                    int(config.get("threads", 1)),
                    provider_options=config.get("provider_options", {}),
                    io_binding=bool(config.get("io_binding", True)))
    with np.load(workpath(feed_file)) as data:
        feed = {k: data[k] for k in data.files}
    session = target_session(workpath(model_file), target)
    run = session_runner(session, feed, target)
    for _ in range(int(config.get("warmup", 10))):
        run()
    samples = []
    for _ in range(int(config.get("runs", 50))):
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) * 1e3)
    return json.dumps({"samples_ms": samples, "device": describe_device()})


def register_functions() -> None:
    """Runs in the RPC server process before it listens (server_init_callback)."""
    import tvm_ffi

    tvm_ffi.register_global_func(TIME_ONNX, time_onnx, override=True)
    tvm_ffi.register_global_func(DESCRIBE, lambda: json.dumps(describe_device()), override=True)


def serve(host: str = "127.0.0.1", port: int = 9090, port_end: int = 9199,
          tracker: tuple[str, int] | None = None, key: str = "", silent: bool = False):
    """Start the agent; returns the tvm.rpc.Server (its .port, .terminate())."""
    from tvm import rpc

    if host not in ("127.0.0.1", "localhost", "::1"):
        warnings.warn(NO_AUTH_WARNING.format(host=host, port=port), stacklevel=2)
    _share_import_path()
    return rpc.Server(host, port, port_end, tracker_addr=tracker, key=key, silent=silent,
                      server_init_callback=register_functions)


def _share_import_path() -> None:
    """The server runs in a fresh Python process: let it import this very onnxamc."""
    here = str(Path(__file__).resolve().parents[2])
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *[p for p in paths if p]])


def start_tracker(host: str = "127.0.0.1", port: int = 9190, port_end: int = 9199,
                  silent: bool = True):
    """A TVM RPC tracker (the queue of devices by key); returns it (.port, .terminate())."""
    from tvm.rpc.tracker import Tracker

    if host not in ("127.0.0.1", "localhost", "::1"):
        warnings.warn(NO_AUTH_WARNING.format(host=host, port=port), stacklevel=2)
    return Tracker(host, port, port_end, silent=silent)
