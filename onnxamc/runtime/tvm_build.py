"""Apache TVM builds: Relax ONNX import, tvm.compile, relax.VirtualMachine, timing.

What TVM cannot import (QOperator ops such as QLinearConv, int4 QDQ, contrib-domain ops)
raises UnsupportedOnTargetError with the reason: a candidate the search scores as
infeasible, never a crash of the trial. Shapes are fixed at import (dynamic dimensions
become 1: latency is measured at batch 1), which is what lets tuning records match.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto

from onnxamc.errors import TargetError, UnsupportedOnTargetError
from onnxamc.runtime.target import Target

SUB_BYTE_TYPES = {TensorProto.INT4, TensorProto.UINT4}
for _name in ("FLOAT4E2M1", "INT2", "UINT2"):
    if hasattr(TensorProto, _name):
        SUB_BYTE_TYPES.add(getattr(TensorProto, _name))


def require_tvm(target_name: str = "tvm"):
    try:
        import tvm  # noqa: F401
        from tvm import relax  # noqa: F401
    except ImportError:
        raise TargetError(f"target {target_name} needs Apache TVM: pip install "
                          "'onnxamc[tvm]' -c constraints.txt") from None
    return tvm


def unsupported_reason(model: onnx.ModelProto) -> str | None:
    """Why TVM's Relax ONNX frontend cannot take this model, or None if it can try."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            return f"{node.op_type} from domain {node.domain!r} is not supported by TVM"
        if node.op_type not in known:
            return f"{node.op_type} is not supported by TVM's ONNX importer"
    for init in model.graph.initializer:
        if init.data_type in SUB_BYTE_TYPES:
            return (f"sub-byte tensor {init.name!r} ({TensorProto.DataType.Name(init.data_type)})"
                    " is not supported by TVM")
    return None


def input_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Static input shapes, dynamic dimensions set to 1 (batch 1)."""
    initializers = {i.name for i in model.graph.initializer}
    shapes = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        shapes[inp.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                            for d in dims]
    return shapes


def import_onnx(model: onnx.ModelProto, shapes: dict[str, list[int]] | None = None):
    """The model as a Relax IRModule with fixed shapes and inference-only ops."""
    require_tvm()
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    reason = unsupported_reason(model)
    if reason:
        raise UnsupportedOnTargetError(f"not supported on this runtime: {reason}")
    try:
        mod = from_onnx(model, shape_dict=shapes or input_shapes(model), keep_params_in_input=False)
        return relax.transform.DecomposeOpsForInference()(mod)
    except Exception as exc:  # the importer raises many types; all mean "cannot import"
        raise UnsupportedOnTargetError("not supported on this runtime: TVM could not import "
                                       f"the model: {_first_line(exc)}") from None


def tvm_target(target: Target):
    import tvm

    try:
        if target.tvm_host is not None:
            return tvm.target.Target(target.tvm_target, host=target.tvm_host)
        return tvm.target.Target(target.tvm_target)
    except Exception as exc:
        raise TargetError(f"target {target.name}: TVM rejects tvm.target "
                          f"{target.tvm_target}: {_first_line(exc)}") from None


def build(model: onnx.ModelProto, target: Target, tune: bool | None = None):
    """Compile the model for the target; with a tuning budget or stored records, through
    MetaSchedule and the target's persistent database. Returns a VMExecutable."""
    import tvm

    mod = import_onnx(model)
    tgt = tvm_target(target)
    if target.tuning_database is not None and (tune or (tune is None and target.tuning_trials)):
        from onnxamc.runtime.tuning import compile_tuned

        return compile_tuned(mod, tgt, target.tuning_database, target.tuning_trials,
                             target.remote, target.cross_compiler)
    try:
        return tvm.compile(mod, target=tgt)
    except Exception as exc:
        raise UnsupportedOnTargetError("not supported on this runtime: TVM could not compile "
                                       f"the model: {_first_line(exc)}") from None


def export(executable, path: str | Path, cross_compiler: str | None = None) -> Path:
    """Write the compiled model as a shared library (cross-compiled when asked)."""
    path = Path(path)
    if cross_compiler:
        import shutil

        from tvm.support import cc

        if shutil.which(cross_compiler) is None:
            raise TargetError(f"cross compiler {cross_compiler!r} not found (Debian: apt-get "
                              "install gcc-aarch64-linux-gnu)")
        executable.export_library(str(path), fcompile=cc.cross_compiler(cross_compiler))
    else:
        executable.export_library(str(path))
    return path


def set_threads(threads: int) -> None:
    """Size TVM's CPU thread pool (it otherwise takes every core)."""
    import tvm

    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    tvm.get_global_func("runtime.config_threadpool")(1, threads)


class LocalVM:
    """A compiled model loaded in a Relax VM on this machine's CPU or GPU."""

    def __init__(self, executable, target: Target):
        import tvm
        from tvm import relax

        self.device = tvm.cuda(0) if target.compute_device == "cuda" else tvm.cpu(0)
        if target.compute_device == "cuda" and not self.device.exist:
            raise TargetError(f"target {target.name} needs a CUDA GPU and none is visible")
        if target.compute_device == "cpu":
            set_threads(target.threads)
        self.vm = relax.VirtualMachine(executable, self.device)

    def to_device(self, feed: dict[str, np.ndarray]) -> list:
        import tvm

        return [tvm.runtime.tensor(np.ascontiguousarray(v), self.device) for v in feed.values()]

    def outputs(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.vm["main"](*self.to_device(feed))
        return [t.numpy() for t in flatten_outputs(result)]

    def runner(self, feed: dict[str, np.ndarray]) -> Callable[[], None]:
        """One inference per call, inputs already on the device; waits for the device."""
        args, main, sync = self.to_device(feed), self.vm["main"], self.device.sync
        return lambda: (main(*args), sync())

    def time_evaluator_ms(self, feed: dict[str, np.ndarray], repeat: int = 20) -> list[float]:
        """Per-run times from TVM's own time_evaluator (no Python in the loop)."""
        self.vm.set_input("main", *self.to_device(feed))
        timer = self.vm.time_evaluator("invoke_stateful", self.device, number=1, repeat=repeat)
        return [r * 1e3 for r in timer("main").results]


def flatten_outputs(result) -> list:
    """The tensors of a VM result (a tensor or nested tuples of them), in order."""
    if hasattr(result, "numpy"):
        return [result]
    return [t for item in result for t in flatten_outputs(item)]


def _first_line(exc: BaseException) -> str:
    """The line of an error that says what went wrong (not a traceback frame)."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    useful = [l for l in lines if not l.startswith(("Traceback", "File ", "^", "~"))]
    return f"{type(exc).__name__}: {(useful or lines or [''])[0]}"[:300]
