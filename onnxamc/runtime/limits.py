"""What the installed onnxruntime loads: its newest IR version and opset per domain.

onnxruntime publishes neither number, and its operator tables list opsets still under
development that it refuses to load; so each number is found by asking it to load a
one-node model stamped with that version (a few milliseconds each, once per process).
graph/checks.py compares a model with these limits before any work starts.
"""

from __future__ import annotations

from functools import lru_cache

import onnx
from onnx import TensorProto, helper

from onnxamc.graph.checks import RuntimeLimits

STANDARD_PROBE_OPSET = 13  # a released opset every supported onnxruntime loads
MAX_STEPS = 8  # versions tried below the newest one onnx or the runtime names


@lru_cache(maxsize=1)
def onnxruntime_limits() -> RuntimeLimits:
    import onnxruntime as ort

    ir = _newest(onnx.IR_VERSION, lambda v: _loads(v, {"": STANDARD_PROBE_OPSET}))
    opsets: dict[str, int] = {}
    for domain, newest in _domains().items():
        base = {} if domain == "" else {"": STANDARD_PROBE_OPSET}
        found = _newest(newest, lambda v: _loads(ir, {**base, domain: v}))
        if found:
            opsets[domain] = found
    return RuntimeLimits(f"onnxruntime {ort.__version__}", ir, opsets)


def _domains() -> dict[str, int]:
    """Each domain onnxruntime has kernels for, with the newest opset it names (onnx's
    own for the standard domain)."""
    from onnxruntime.capi import _pybind_state as C

    newest: dict[str, int] = {"": onnx.defs.onnx_opset_version()}
    for schema in C.get_all_operator_schema():
        domain = "" if schema.domain == "ai.onnx" else schema.domain
        newest[domain] = max(newest.get(domain, 1), schema.since_version)
    kernel_domains = {k.domain for k in C.get_all_opkernel_def()} | {""}
    return {d: v for d, v in newest.items() if d in kernel_domains}


def _newest(start: int, loads) -> int:
    for version in range(start, max(start - MAX_STEPS, 0), -1):
        if loads(version):
            return version
    return 0


def _loads(ir_version: int, opsets: dict[str, int]) -> bool:
    import onnxruntime as ort

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v)
                                                    for d, v in opsets.items()])
    model.ir_version = ir_version
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), options,
                             providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True
