"""Host side of remote measurement: a session on a device key through the TVM tracker.

Every wait is bounded: the tracker must answer a TCP connect, must list at least one
device under the key, and must hand out a session within the target's timeout; a
failed attempt is retried `retries` times. Anything else is DeviceUnreachableError with
one line that names the tracker and key.
"""

from __future__ import annotations

import io
import json
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from onnxamc.errors import DeviceUnreachableError, OnnxAmcError
from onnxamc.runtime.agent import DESCRIBE, RUN_ONNX, TIME_ONNX
from onnxamc.runtime.target import Remote, Target


class RemoteSession:
    """One RPC session on one board (the tracker lends the board to us alone)."""

    def __init__(self, target: Target):
        assert target.remote is not None
        self.target = target
        self.remote: Remote = target.remote
        self.session = _request_with_retries(self.remote)
        self._feed_names: dict[int, str] = {}

    def close(self) -> None:
        self.session = None

    def __enter__(self) -> "RemoteSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        return json.loads(self._call(DESCRIBE))

    def upload(self, data: bytes | str | Path, suffix: str) -> str:
        name = f"onnxamc-{uuid.uuid4().hex[:12]}{suffix}"
        if isinstance(data, (str, Path)):
            data = Path(data).read_bytes()
        self._guard(lambda: self.session.upload(bytearray(data), name))
        return name

    def upload_feed(self, feed: dict[str, np.ndarray]) -> str:
        key = id(feed)
        if key not in self._feed_names:
            buf = io.BytesIO()
            np.savez(buf, **feed)
            self._feed_names[key] = self.upload(buf.getvalue(), ".npz")
        return self._feed_names[key]

    def _ort_config(self, **extra) -> str:
        return json.dumps({"threads": self.target.threads, "device": self.remote.device,
                           "provider_options": self.target.provider_options,
                           "io_binding": self.target.io_binding, **extra})

    def time_onnx(self, model_name: str, feed: dict[str, np.ndarray], warmup: int,
                  runs: int) -> list[float]:
        """Per-run ms of an uploaded ONNX model under onnxruntime on the board."""
        reply = json.loads(self._call(TIME_ONNX, model_name, self.upload_feed(feed),
                                      self._ort_config(warmup=warmup, runs=runs)))
        return reply["samples_ms"]

    def onnx_outputs(self, model_name: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs of an uploaded ONNX model for a feed, computed by onnxruntime on
        the board and downloaded."""
        name = self._call(RUN_ONNX, model_name, self.upload_feed(feed), self._ort_config())
        data = self._guard(lambda: bytes(self.session.download(name)))
        with np.load(io.BytesIO(data)) as arrays:
            return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]

    def load_tvm(self, library_name: str, feed: dict[str, np.ndarray]):
        """A Relax VM on the board for an uploaded library, with inputs set."""
        import tvm
        from tvm import relax

        def load():
            dev = self.session.cuda(0) if self.remote.device == "cuda" else self.session.cpu(0)
            if self.remote.device == "cpu":
                self.session.get_function("runtime.config_threadpool")(1, self.target.threads)
            vm = relax.VirtualMachine(self.session.load_module(library_name), dev)
            inputs = [tvm.runtime.tensor(np.ascontiguousarray(v), dev) for v in feed.values()]
            vm.set_input("main", *inputs)
            return vm, dev, inputs
        return self._guard(load)

    def time_tvm(self, loaded, warmup: int, runs: int) -> list[float]:
        vm, dev, _ = loaded

        def timed():
            if warmup:
                vm.time_evaluator("invoke_stateful", dev, number=1, repeat=warmup)("main")
            result = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=runs)("main")
            return [r * 1e3 for r in result.results]
        return self._guard(timed)

    def tvm_outputs(self, loaded) -> list[np.ndarray]:
        """The outputs of a loaded library for the inputs it was loaded with, copied back."""
        from onnxamc.runtime.tvm_build import flatten_outputs

        vm, _, inputs = loaded
        return self._guard(lambda: [t.numpy() for t in flatten_outputs(vm["main"](*inputs))])

    def _call(self, name: str, *args):
        return self._guard(lambda: self.session.get_function(name)(*args))

    def _guard(self, fn):
        """Run an RPC call; a dropped connection becomes DeviceUnreachableError."""
        try:
            return _with_timeout(fn, self.remote.timeout, self._what())
        except OnnxAmcError:
            raise
        except Exception as exc:
            text = str(exc).strip().splitlines()
            if any(s in str(exc) for s in ("Socket", "socket", "closed", "Connection", "RPC")):
                raise DeviceUnreachableError(f"{self._what()} is unreachable: connection lost "
                                             f"({text[-1] if text else type(exc).__name__})") \
                    from None
            raise

    def _what(self) -> str:
        return f"device {self.remote.key!r} at tracker {self.remote.tracker}"


def _with_timeout(fn, timeout: float, what: str):
    """fn() in a thread; DeviceUnreachableError if it takes longer than `timeout`."""
    box: dict = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise DeviceUnreachableError(f"{what} is unreachable: no answer within {timeout:g} s "
                                     "(the target file's remote.timeout)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def tracker_summary(remote: Remote, timeout: float | None = None) -> dict:
    """The tracker's view: servers by key and queue lengths (bounded connect)."""
    from tvm.rpc import base
    from tvm.rpc.base import TrackerCode

    timeout = remote.timeout if timeout is None else timeout
    where = f"tracker {remote.tracker}"
    try:
        sock = socket.create_connection((remote.tracker_host, remote.tracker_port),
                                        timeout=min(timeout, 10.0))
    except OSError as exc:
        raise DeviceUnreachableError(f"{where} is unreachable ({exc.strerror or exc}); is "
                                     "`onnxamc device tracker` running, or the ssh -L tunnel "
                                     "up?") from None
    try:
        sock.settimeout(timeout)
        import struct

        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        magic = struct.unpack("<i", base.recvall(sock, 4))[0]
        if magic != base.RPC_TRACKER_MAGIC:
            raise DeviceUnreachableError(f"{where} is not a TVM RPC tracker")
        base.sendjson(sock, [TrackerCode.SUMMARY])
        reply = base.recvjson(sock)
        return reply[1]
    except (OSError, RuntimeError) as exc:
        raise DeviceUnreachableError(f"{where} is unreachable: it did not answer "
                                     f"({(str(exc).splitlines() or [type(exc).__name__])[0]})") \
            from None
    finally:
        sock.close()


def devices_under_key(remote: Remote) -> int:
    summary = tracker_summary(remote)
    return sum(1 for s in summary.get("server_info", [])
               if s.get("key", "").split(":")[-1] == remote.key)


def require_device(remote: Remote) -> None:
    """DeviceUnreachableError unless the tracker answers and lists the key."""
    if devices_under_key(remote) == 0:
        raise DeviceUnreachableError(_no_device(remote))


def _no_device(remote: Remote) -> str:
    return (f"device {remote.key!r} is unreachable: none registered under that key at tracker "
            f"{remote.tracker} (is `onnxamc device serve --tracker ... --key {remote.key}` "
            "running on the board?)")


def _request_with_retries(remote: Remote):
    from tvm import rpc

    last = None
    for attempt in range(remote.retries + 1):
        if attempt:
            time.sleep(min(2.0 * attempt, 5.0))
        try:
            if devices_under_key(remote) == 0:
                last = DeviceUnreachableError(_no_device(remote))
                continue
            tracker = rpc.connect_tracker(remote.tracker_host, remote.tracker_port)
            try:
                return _with_timeout(
                    lambda: tracker.request(remote.key, priority=1,
                                            session_timeout=max(remote.timeout * 4, 60),
                                            max_retry=1),
                    remote.timeout, f"device {remote.key!r} at tracker {remote.tracker}")
            finally:
                tracker.close()
        except DeviceUnreachableError as exc:
            last = exc
        except (RuntimeError, OSError) as exc:
            last = DeviceUnreachableError(f"device {remote.key!r} at tracker {remote.tracker} is "
                                          f"unreachable: session refused "
                                          f"({str(exc).splitlines()[0]})")
    raise last


def export_for_upload(executable, target: Target) -> bytes:
    """The library the board will load (cross-compiled when the target says so), as
    bytes: the temporary folder it is written to is removed at once."""
    from onnxamc.runtime.tvm_build import export

    with tempfile.TemporaryDirectory(prefix="onnxamc-lib-") as directory:
        return export(executable, Path(directory) / "model.so", target.cross_compiler) \
            .read_bytes()
