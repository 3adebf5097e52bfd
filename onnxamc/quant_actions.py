"""What the quantization fields of a LayerAction mean, as plain data.

One place says which combinations are valid and which kind of action each one is, so
that policy.py (validation), passes/ (dispatch), the sensitivity table and search/
(candidate actions) agree. Imports nothing from onnxamc: anyone may import it.

Kinds (`action_kind`):
  fp32                 the layer is left as it is
  fp16                 weights stored as float16 (Cast to float, folded at load)
  int8 / int4          QDQ static quantization (onnxruntime quantize_static), weights
                       per-channel or per-tensor, uint8 activations calibrated on data
  int8-dynamic         onnxruntime quantize_dynamic: activations quantized at run time
  int8/int4-per-block  weight-only QDQ with one scale per block of `block_size` input
                       channels (opset-21 blocked DequantizeLinear), float activations
  nbits4 / nbits8      MatMul/Gemm weight-only through onnxruntime's MatMulNBits
  mixed8/4             output channels split: the least sensitive share at int4, the
                       rest int8, as two layers and a Concat + Gather that restores order
  shared<b>            weight sharing: k-means codebook of 2**b floats, indices by Gather
"""

from __future__ import annotations

from typing import Any

GRANULARITIES = ("per-channel", "per-tensor", "per-block")
QUANT_FIELDS = ("granularity", "block_size", "weight_only", "accuracy_level", "dynamic",
                "mixed_low_bits_ratio", "share_bits")
INTEGER_BITS = (8, 4)
WEIGHT_ONLY_OPS = ("MatMul", "Gemm")
DEFAULT_BLOCK = {"per-block": 32, "weight_only": 128}
SHARE_BITS_RANGE = (1, 8)
MIXED_HIGH_BITS = 8
MIXED_LOW_BITS = 4


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_quant_fields(action: Any, op_type: str | None = None) -> str | None:
    """The first problem with the quantization fields of `action`, or None."""
    bits, gran = action.bits, action.granularity
    if gran not in GRANULARITIES:
        return f"granularity must be one of {', '.join(GRANULARITIES)}, got {gran!r}"
    if not _is_int(action.block_size) or action.block_size < 0 or (
            action.block_size and (action.block_size & (action.block_size - 1)
                                   or not 4 <= action.block_size <= 1024)):
        return f"block_size must be 0 or a power of two in [4, 1024], got {action.block_size!r}"
    if not isinstance(action.weight_only, bool) or not isinstance(action.dynamic, bool):
        return "weight_only and dynamic must be true or false"
    if not _is_int(action.accuracy_level) or not 0 <= action.accuracy_level <= 4:
        return f"accuracy_level must be an integer in [0, 4], got {action.accuracy_level!r}"
    ratio = action.mixed_low_bits_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        return f"mixed_low_bits_ratio must be a number in [0, 1), got {ratio!r}"
    share = action.share_bits
    if not _is_int(share) or (share and not SHARE_BITS_RANGE[0] <= share <= SHARE_BITS_RANGE[1]):
        return f"share_bits must be 0 or an integer in [1, 8], got {share!r}"
    if bits not in INTEGER_BITS:
        if gran != "per-channel" or action.block_size or action.weight_only or action.dynamic \
                or ratio or action.accuracy_level:
            return f"granularity, block_size, weight_only, dynamic and mixed_low_bits_ratio " \
                   f"need bits 8 or 4, got bits={bits}"
        if share and bits != 32:
            return "share_bits keeps float weights: use it with bits=32"
        if share and action.sparsity:
            return "share_bits and sparsity cannot be combined (clustering moves the zeros)"
        return None
    if share:
        return "share_bits keeps float weights: use it with bits=32"
    if action.block_size and gran != "per-block" and not action.weight_only:
        return "block_size applies to granularity per-block or weight_only only"
    if action.accuracy_level and not action.weight_only:
        return "accuracy_level applies to weight_only (MatMulNBits) only"
    if action.weight_only:
        if action.dynamic or ratio or gran == "per-tensor":
            return "weight_only (MatMulNBits) is blocked: no dynamic, per-tensor or mixing"
        if action.block_size and action.block_size < 16:
            return "weight_only (MatMulNBits) needs block_size >= 16"
        if op_type is not None and op_type not in WEIGHT_ONLY_OPS:
            return f"weight_only (MatMulNBits) applies to MatMul and Gemm, not {op_type}"
    if action.dynamic and (bits != 8 or gran == "per-block" or ratio):
        return "dynamic activations need bits=8 per-channel or per-tensor, without mixing"
    if ratio and (bits != MIXED_HIGH_BITS or gran != "per-channel"):
        return "mixed_low_bits_ratio needs bits=8 per-channel (the low part is int4)"
    if ratio and op_type == "ConvTranspose":
        return "mixed_low_bits_ratio does not support ConvTranspose"
    return None


def action_kind(action: Any) -> str:
    """The name of the quantization action (see the module docstring)."""
    if action.share_bits:
        return f"shared{action.share_bits}"
    if action.bits == 32:
        return "fp32"
    if action.bits == 16:
        return "fp16"
    if action.weight_only:
        return f"nbits{action.bits}"
    if action.mixed_low_bits_ratio:
        return f"mixed{MIXED_HIGH_BITS}/{MIXED_LOW_BITS}"
    if action.dynamic:
        return "int8-dynamic"
    if action.granularity == "per-block":
        return f"int{action.bits}-per-block"
    return f"int{action.bits}"


def block_size_of(action: Any) -> int:
    """The block size an action uses (its own, else the default for its kind)."""
    if action.block_size:
        return action.block_size
    return DEFAULT_BLOCK["weight_only" if action.weight_only else "per-block"]
