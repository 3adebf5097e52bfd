"""Quantization: one action with several forms, chosen by the fields of a LayerAction.

Forms (`form_of`):
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

The passes run in this order, each on the layers of its form: channel split of mixed
layers, static QDQ (which must see the final float weights it calibrates), dynamic,
per-block, MatMulNBits, fp16 storage.
"""

from __future__ import annotations

from onnxamc.actions.base import Action, Field, SearchSpec

FLOAT_BITS = 32
BITS = (32, 16, 8, 4)  # 16 = fp16 weights; 8 and 4 are integer
INTEGER_BITS = (8, 4)
QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")
WEIGHT_ONLY_OPS = ("MatMul", "Gemm")
GRANULARITIES = ("per-channel", "per-tensor", "per-block")
DEFAULT_BLOCK = {"per-block": 32, "weight_only": 128}
MIXED_HIGH_BITS, MIXED_LOW_BITS = 8, 4


def _power_of_two_block(v: int) -> bool:
    return v == 0 or (4 <= v <= 1024 and not v & (v - 1))


class Quantize(Action):
    name = "quant"
    summary = "mixed precision: fp16, int8/int4 per-channel/per-tensor/per-block, dynamic " \
              "int8, MatMulNBits, channel-wise 8/4 mixing"
    fields = (
        Field("bits", int, FLOAT_BITS, "32, 16, 8, 4",
              "32 keeps float; 16 stores fp16 weights (Cast, folded at load: smaller file, "
              "float compute); 8 / 4 quantize the weights (static QDQ through onnxruntime's "
              "`quantize_static`, uint8 activations calibrated by minmax, entropy or "
              "percentile (`--calibration-method`); int8 per-channel is what onnxruntime "
              "fuses to QLinearConv/QGemm)", lambda v: v in BITS, "one of 32, 16, 8, 4"),
        Field("granularity", str, "per-channel", "`per-channel`, `per-tensor`, `per-block`",
              "weight scales per output channel, one per tensor, or one per `block_size` "
              "input channels (per-block is weight-only, opset-21 blocked DequantizeLinear)",
              lambda v: v in GRANULARITIES, "one of per-channel, per-tensor, per-block"),
        Field("block_size", int, 0, "power of two, 4-1024 (0: default)",
              "for `per-block` (default 32) and `weight_only` (default 128)",
              _power_of_two_block, "0 or a power of two in [4, 1024]"),
        Field("weight_only", bool, False, "true / false",
              "MatMul and Gemm only: onnxruntime's MatMulNBits (4 or 8 bits, blocked), "
              "float activations"),
        Field("accuracy_level", int, 0, "0-4",
              "MatMulNBits compute accuracy (4 = int8 compute, fastest on CPU; 0 = "
              "onnxruntime default)", lambda v: 0 <= v <= 4, "an integer in [0, 4]"),
        Field("dynamic", bool, False, "true / false",
              "int8 with activations quantized at run time (`quantize_dynamic`: "
              "ConvInteger / MatMulInteger), no calibration"),
        Field("mixed_low_bits_ratio", float, 0.0, "[0, 1), with `bits: 8`",
              "channel-wise bit mixing: that share of the output channels (those int4 "
              "rounding hurts least) at int4, the rest int8, as two layers `NAME.mix8` / "
              "`NAME.mix4` whose outputs are concatenated and put back in order",
              lambda v: 0 <= v < 1, "a number in [0, 1)"),
    )
    search = SearchSpec("bits", (FLOAT_BITS, 8), identity=FLOAT_BITS, seed=8)

    def fits(self, layer, context) -> bool:
        return layer.op_type in QUANTIZABLE_OPS

    def check(self, action, op_type):
        if op_type is not None and action.bits != FLOAT_BITS and op_type not in QUANTIZABLE_OPS:
            return (f"bits={action.bits} is not supported for {op_type} layers "
                    f"(quantizable: {', '.join(QUANTIZABLE_OPS)})")
        return quant_fields_problem(action, op_type)

    def apply(self, context, layers, job):
        from onnxamc.passes.quantize_forms import quantize_layers

        forms = {n: form_of(a) for n, a in layers.items()}
        return quantize_layers(context.model, {n: a for n, a in layers.items()
                                               if forms[n] != "fp32"}, forms, job)


def quant_fields_problem(action, op_type: str | None = None) -> str | None:
    """The first combination of quantization fields that has no meaning, or None."""
    bits, gran, ratio = action.bits, action.granularity, action.mixed_low_bits_ratio
    if bits not in INTEGER_BITS:
        if gran != "per-channel" or action.block_size or action.weight_only or action.dynamic \
                or ratio or action.accuracy_level:
            return ("granularity, block_size, weight_only, dynamic, accuracy_level and "
                    f"mixed_low_bits_ratio need bits 8 or 4, got bits={bits}")
        return None
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


def form_of(action) -> str:
    """The quantization form a LayerAction asks for (see the module docstring)."""
    if action.bits == FLOAT_BITS:
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


def block_size_of(action) -> int:
    """The block size an action uses (its own, else the default for its form)."""
    if action.block_size:
        return action.block_size
    return DEFAULT_BLOCK["weight_only" if action.weight_only else "per-block"]
