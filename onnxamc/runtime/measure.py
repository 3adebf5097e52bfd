"""Latency of models on one Target, whatever its runtime and wherever its device.

`TargetMeter.prepare` turns a model into what the target runs (an onnxruntime session,
a TVM VM, or the bytes to upload to a board); `timing` measures several prepared models
side by side: interleaved run by run on this machine (one measurement at a time per
device, on its own core, with the other processes' CPU use read alongside), or in
alternating blocks within one RPC session on a board; `outputs` computes a prepared
model's outputs where it runs. A model the runtime cannot take raises
UnsupportedOnTargetError from `prepare`.

A board whose agent says it is emulated (qemu) is labelled in `emulated`; a meter made
with `allow_emulated=False` (the search's) refuses it before any work: latency measured
under emulation means nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from onnxamc.errors import TargetError
from onnxamc.runtime.busy import Busy, CpuWatch
from onnxamc.runtime.latency import (LatencyStats, RatioInterval, ratio_intervals, repeat_for,
                                     stats_of, time_interleaved)
from onnxamc.runtime.target import Target

REMOTE_ROUNDS = 3


@dataclass
class Prepared:
    """One model made ready for one target."""

    kind: str  # "onnx" | "tvm"
    run: Callable[[], object] | None = None  # local: one inference per call
    upload: bytes | Path | None = None  # remote: ONNX bytes or the exported library
    outputs: Callable[[dict], list[np.ndarray]] | None = None  # local: outputs for a feed
    build_seconds: float = 0.0
    notes: dict = field(default_factory=dict)
    session: object | None = None  # local onnxruntime on the CPU: the session itself


@dataclass
class Timing:
    """One side-by-side measurement: seconds per round of each model (paired rounds),
    and how busy the machine was meanwhile."""

    samples: np.ndarray  # (rounds, models)
    busy: Busy | None = None
    waited: float = 0.0  # seconds spent waiting for the device's lock

    @property
    def stats(self) -> list[LatencyStats]:
        return stats_of(self.samples)

    @property
    def contended(self) -> bool:
        """Whether other processes most likely took time from these rounds."""
        return self.busy is not None and self.busy.contended

    def intervals(self) -> list[RatioInterval]:
        """Each model's ratio to the first, with its bootstrap interval."""
        return ratio_intervals(self.samples)

    def extended(self, more: "Timing") -> "Timing":
        """Both measurements' rounds together (a re-measurement narrows the interval);
        the busier reading is kept."""
        busy = max((b for b in (self.busy, more.busy) if b is not None),
                   key=lambda b: b.other_cores, default=None)
        return Timing(np.concatenate([self.samples, more.samples]), busy,
                      self.waited + more.waited)


class TargetMeter:
    """Prepares and times models on one target (checks the target can run here first)."""

    def __init__(self, target: Target, allow_emulated: bool = True):
        self.target = target
        self.allow_emulated = allow_emulated
        self.device_info: dict | None = None
        if target.runtime == "tvm":
            from onnxamc.runtime.tvm_build import require_tvm

            require_tvm(target.name)
        elif target.device == "cuda":
            from onnxamc.runtime.ort_target import check_cuda_provider

            check_cuda_provider(target)
        if target.is_remote:  # fail before compiling anything for a board nobody serves
            from onnxamc.runtime.remote import RemoteSession, require_device

            require_device(target.remote)
            if not allow_emulated:
                with RemoteSession(target) as session:
                    self._note_device(session.describe())

    @property
    def emulated(self) -> str | None:
        """How the board that measured last is emulated (None: real hardware, or local)."""
        return (self.device_info or {}).get("emulated")

    def _note_device(self, info: dict) -> None:
        self.device_info = info
        if self.emulated and not self.allow_emulated:
            raise TargetError(
                f"target {self.target.name}: device {self.target.remote.key!r} is emulated "
                f"({self.emulated}); latency measured there means nothing, so a search does "
                "not optimise on it (--allow-emulated runs it anyway, to try the workflow)")

    def prepare(self, model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> Prepared:
        import time

        start = time.perf_counter()
        if self.target.runtime == "onnxruntime":
            prepared = self._prepare_ort(model, feed)
        else:
            prepared = self._prepare_tvm(model, feed)
        prepared.build_seconds = time.perf_counter() - start
        return prepared

    def _prepare_ort(self, model: onnx.ModelProto, feed) -> Prepared:
        data = model.SerializeToString()
        if self.target.is_remote:
            return Prepared("onnx", upload=data)
        from onnxamc.runtime.ort_target import session_runner, target_session

        session = target_session(data, self.target)
        return Prepared("onnx", run=session_runner(session, feed, self.target),
                        outputs=lambda f: session.run(None, f),
                        session=session if self.target.compute_device == "cpu" else None)

    def _prepare_tvm(self, model: onnx.ModelProto, feed) -> Prepared:
        from onnxamc.runtime.tvm_build import LocalVM, build

        executable = build(model, self.target)
        if self.target.is_remote:
            from onnxamc.runtime.remote import export_for_upload

            return Prepared("tvm", upload=export_for_upload(executable, self.target))
        vm = LocalVM(executable, self.target)
        return Prepared("tvm", run=vm.runner(feed), outputs=vm.outputs)

    def time(self, prepared: list[Prepared], feed: dict[str, np.ndarray], warmup: int = 10,
             runs: int = 50) -> list[LatencyStats]:
        return self.timing(prepared, feed, warmup, runs).stats

    def timing(self, prepared: list[Prepared], feed: dict[str, np.ndarray], warmup: int = 10,
               runs: int = 50) -> Timing:
        """The prepared models side by side. Locally: interleaved rounds under the
        device's lock, pinned to the measurement core, each turn the fastest of a few
        back-to-back runs for short models; the other processes' CPU use is read."""
        if self.target.is_remote:
            return Timing(self._time_remote(prepared, feed, warmup, runs))
        from onnxamc.runtime.device_lock import exclusive_measurement

        one_core = self.target.compute_device == "cpu" and self.target.threads == 1
        with exclusive_measurement(self.lock_key, pin=one_core) as held:
            runners = [p.run for p in prepared]
            repeat = repeat_for(runners[0])
            watch = CpuWatch(held["core"])
            samples = time_interleaved(runners, warmup, runs, repeat)
            return Timing(samples, watch.stop(), held["waited"])

    @property
    def lock_key(self) -> str:
        """Measurements with the same key take turns: one device of this machine."""
        return f"{self.target.compute_device}:{self.target.provider_options.get('device_id', 0)}"

    def _time_remote(self, prepared, feed, warmup, runs) -> np.ndarray:
        """Alternating blocks in one session: the board is ours alone while it lasts."""
        from onnxamc.runtime.remote import RemoteSession

        rounds = max(1, min(REMOTE_ROUNDS, runs))
        blocks = [runs // rounds + (r < runs % rounds) for r in range(rounds)]
        samples: list[list[float]] = [[] for _ in prepared]
        with RemoteSession(self.target) as session:
            self._note_device(session.describe())
            handles = [self._load_remote(session, p, feed) for p in prepared]
            for r, block in enumerate(blocks):
                order = range(len(prepared)) if r % 2 == 0 else reversed(range(len(prepared)))
                for i in order:
                    w = warmup if r == 0 else 1
                    if prepared[i].kind == "onnx":
                        samples[i] += session.time_onnx(handles[i], feed, w, block)
                    else:
                        samples[i] += session.time_tvm(handles[i], w, block)
        paired = min(len(s) for s in samples)  # run j of each model, in the same block
        return np.asarray([s[:paired] for s in samples], dtype=np.float64).T / 1e3

    @staticmethod
    def _load_remote(session, prepared: Prepared, feed):
        """Upload one prepared model; a TVM library is also loaded in a VM on the board."""
        if prepared.kind == "onnx":
            return session.upload(prepared.upload, ".onnx")
        return session.load_tvm(session.upload(prepared.upload, ".so"), feed)

    def outputs(self, prepared: Prepared, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The model's outputs for a feed, computed where the target runs it (on a board:
        by the board, then copied back), to compare with the host's."""
        if not self.target.is_remote:
            return [np.asarray(o) for o in prepared.outputs(feed)]
        from onnxamc.runtime.remote import RemoteSession

        with RemoteSession(self.target) as session:
            self._note_device(session.describe())
            handle = self._load_remote(session, prepared, feed)
            if prepared.kind == "onnx":
                return session.onnx_outputs(handle, feed)
            return session.tvm_outputs(handle)


def measure_models(target: Target, models: list[onnx.ModelProto], feed: dict[str, np.ndarray],
                   warmup: int = 10, runs: int = 50) -> list[LatencyStats]:
    """Latency of each model on the target, side by side (no model may be unsupported)."""
    meter = TargetMeter(target)
    return meter.time([meter.prepare(m, feed) for m in models], feed, warmup, runs)


def unavailable_reason(target: Target, probe_remote: bool = False) -> str | None:
    """Why this machine cannot measure on the target now, or None if it can.

    Remote targets are only probed (tracker and device key) when asked: that touches
    the network."""
    import shutil

    from onnxamc.errors import OnnxAmcError

    try:
        if target.runtime == "tvm":
            from onnxamc.runtime.tvm_build import require_tvm

            tvm = require_tvm(target.name)
            if target.device == "cuda" and not tvm.cuda(0).exist:
                return "no CUDA GPU visible to TVM"
            if target.cross_compiler and shutil.which(target.cross_compiler) is None:
                return f"cross compiler {target.cross_compiler} not installed"
        elif target.device == "cuda":
            from onnxamc.runtime.ort_target import check_cuda_provider

            check_cuda_provider(target)
        if target.is_remote and probe_remote:
            from onnxamc.runtime.remote import devices_under_key

            if devices_under_key(target.remote) == 0:
                return f"no device under key {target.remote.key!r} at {target.remote.tracker}"
    except OnnxAmcError as exc:
        return str(exc)
    return None
