"""What each runtime fuses when an op sits between QuantizeLinear / DequantizeLinear
pairs, as one flat table per runtime, and the quantization forms that pay per op.

Static int8 pays only where the runtime replaces the whole `DQ -> op -> Q` chain by an
integer kernel (or drops the pair and runs the op on int8); an op it cannot fuse (a
HardSwish, a LayerNorm, GELU's Erf) between Q/DQ pairs becomes a float island that adds
two conversions and saves nothing. The placement (passes/quant_placement.py) quantizes
whole regions of ops listed here or nothing. Every entry is checked against the
runtime itself by tests/test_quant_patterns.py: onnxruntime's optimized graph must show
the fused op named here; TVM's imported module must show float convolutions.

Roles:
  compute       the layer's own integer kernel (int8 weight + uint8 activation)
  fused         an element-wise / pooling op with a QLinear kernel of its own
  int8          the runtime drops the Q/DQ pair and runs the op on the int8 tensor
  absorbed      folded into the producer's output quantization (Relu, Clip)
Ops absent from a runtime's table stay float and bound a region.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COMPUTE, FUSED, INT8, ABSORBED = "compute", "fused", "int8", "absorbed"

# onnxruntime CPU execution provider, QDQ format, u8 activations / s8 weights
# (onnxruntime/core/optimizer/qdq_transformer/selectors_actions). op -> (role, fused op)
ORT_CPU: dict[str, tuple[str, str]] = {
    "Conv": (COMPUTE, "QLinearConv"),
    "Gemm": (COMPUTE, "QGemm"),
    "MatMul": (COMPUTE, "QLinearMatMul"),
    "Add": (FUSED, "QLinearAdd"),
    "Mul": (FUSED, "QLinearMul"),
    "Concat": (FUSED, "QLinearConcat"),
    "GlobalAveragePool": (FUSED, "QLinearGlobalAveragePool"),
    "AveragePool": (FUSED, "QLinearAveragePool"),
    "Sigmoid": (FUSED, "QLinearSigmoid"),
    "LeakyRelu": (FUSED, "QLinearLeakyRelu"),
    "MaxPool": (INT8, "MaxPool"),
    "Reshape": (INT8, "Reshape"),
    "Transpose": (INT8, "Transpose"),
    "Flatten": (INT8, "Flatten"),
    "Squeeze": (INT8, "Squeeze"),
    "Unsqueeze": (INT8, "Unsqueeze"),
    "Resize": (INT8, "Resize"),
    "Relu": (ABSORBED, ""),
    "Clip": (ABSORBED, ""),
}

# Apache TVM 0.27 (Relax): the ONNX frontend imports QuantizeLinear / DequantizeLinear
# as R.quantize / R.dequantize and legalizes them to float arithmetic; the conv2d /
# matmul between them stays float32 (there is no QNN dialect in Relax). So nothing
# fuses: static QDQ only adds conversions there, and every op bounds a region.
# (tests/test_quant_patterns.py reads the imported module to keep this honest.)
TVM: dict[str, tuple[str, str]] = {}

RUNTIMES: dict[str, dict[str, tuple[str, str]]] = {"onnxruntime": ORT_CPU, "tvm": TVM}

# Minimum multiply-accumulates a region must do per element it converts at its borders
# (one QuantizeLinear in, one DequantizeLinear out) for int8 to win on onnxruntime's CPU
# kernels: a depthwise 3x3 (9 MACs per output) between float activations loses, a
# pointwise 1x1 over 64+ channels wins. Measured on the zoo's convnets (see
# tools/bench_quant.py); a property of the kernels, not of machine load.
MIN_MACS_PER_BORDER_ELEMENT = {"onnxruntime": 24.0, "tvm": float("inf")}


@dataclass(frozen=True)
class QuantForm:
    """One quantization form a layer may take: a name and the LayerAction fields."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


STATIC_INT8 = QuantForm("int8-static", {"bits": 8})
DYNAMIC_INT8 = QuantForm("int8-dynamic", {"bits": 8, "dynamic": True})
NBITS4 = QuantForm("int4-weight-only", {"bits": 4, "weight_only": True, "block_size": 32,
                                        "accuracy_level": 4})
EMBEDDING_INT8 = QuantForm("embedding-int8", {"bits": 8, "weight_only": True})
EMBEDDING_INT4 = QuantForm("embedding-int4", {"bits": 4, "weight_only": True})

# op -> forms that pay on each runtime, the preferred one first. Convolutions: static
# int8 (QLinearConv). MatMul of transformers: dynamic int8 (static QDQ ruins attention
# activations; MatMulIntegerToFloat / DynamicQuantizeMatMul), or 4-bit weight-only.
# Gemm (a classifier head after a conv trunk): static, or dynamic. Gather of a constant
# table (embeddings): weight-only (GatherBlockQuantized).
FORMS: dict[str, dict[str, list[QuantForm]]] = {
    "onnxruntime": {
        "Conv": [STATIC_INT8],
        "ConvTranspose": [STATIC_INT8],
        "Gemm": [STATIC_INT8, DYNAMIC_INT8, NBITS4],
        "MatMul": [DYNAMIC_INT8, NBITS4],
        "Gather": [EMBEDDING_INT8, EMBEDDING_INT4],
    },
    "tvm": {  # static QDQ runs in float there (see TVM above); MatMulInteger imports
        "MatMul": [DYNAMIC_INT8],  # as an integer matmul
        "Gemm": [DYNAMIC_INT8],
    },
}


def table_for(runtime: str) -> dict[str, tuple[str, str]]:
    """The fusion table of a runtime ("onnxruntime" or "tvm")."""
    if runtime not in RUNTIMES:
        raise ValueError(f"no quantization pattern table for runtime {runtime!r}; "
                         f"known: {', '.join(RUNTIMES)}")
    return RUNTIMES[runtime]


def forms_for(op_type: str, runtime: str = "onnxruntime") -> list[QuantForm]:
    """The quantization forms that pay for a layer of `op_type` on `runtime` (preferred
    first; empty: the layer stays float)."""
    table_for(runtime)
    return list(FORMS[runtime].get(op_type, []))


def role(op_type: str, runtime: str = "onnxruntime") -> str | None:
    """compute / fused / int8 / absorbed, or None for an op the runtime keeps float."""
    entry = table_for(runtime).get(op_type)
    return entry[0] if entry else None


def preferred_int8(op_type: str, runtime: str = "onnxruntime") -> dict[str, Any] | None:
    """The LayerAction fields of the int8 form that pays best for `op_type` (static for
    convolutions, dynamic for transformer MatMuls), or None when no int8 form pays."""
    forms = [f for f in forms_for(op_type, runtime) if f.fields.get("bits") == 8]
    return dict(forms[0].fields) if forms else None
