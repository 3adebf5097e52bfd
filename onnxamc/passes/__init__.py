"""Compression passes: ONNX in, ONNX out, one file per action.

`apply_policy` runs them in a fixed order: weight edits first (sparsity, weight
sharing, the channel split of mixed layers), then onnxruntime's static and dynamic
quantization, which must see the final float weights it calibrates and rounds, then the
graph passes onnxruntime cannot express (per-block QDQ, MatMulNBits, fp16 storage) on
layers the quantizers left alone.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import onnx

from onnxamc.graph import analyze
from onnxamc.passes.blockwise import quantize_blockwise
from onnxamc.passes.channel_mix import split_channels
from onnxamc.passes.fp16 import weights_to_fp16
from onnxamc.passes.graph_edit import ensure_opset, named_copy
from onnxamc.passes.matmul_nbits import quantize_matmul_nbits
from onnxamc.passes.quantize import (CALIBRATION_METHODS, WeightSpec, quantize_dynamic_layers,
                                     quantize_int8, quantize_static_layers)
from onnxamc.passes.sparsity import magnitude_sparsity, prune_by_magnitude
from onnxamc.passes.weight_sharing import share_weights
from onnxamc.policy import Policy
from onnxamc.quant_actions import action_kind, block_size_of

CalibrationFeeds = Callable[[], Iterable[dict[str, np.ndarray]]]

__all__ = ["CALIBRATION_METHODS", "apply_policy", "magnitude_sparsity", "prune_by_magnitude",
           "quantize_int8", "quantize_static_layers"]


def apply_policy(model: onnx.ModelProto, policy: Policy,
                 calibration: CalibrationFeeds | None = None,
                 calibration_method: str = "minmax") -> onnx.ModelProto:
    """The compressed model for `policy` (validated against `model` first).

    `calibration` returns feed dicts of calibration data; it is only called when the
    policy quantizes activations statically.
    """
    info = analyze(model)
    policy.validate({layer.name: layer.op_type for layer in info.layers}, info.fingerprint)
    out = magnitude_sparsity(model, info.layers, policy.sparsities())
    kinds = {name: action_kind(a) for name, a in policy.layers.items()}
    actions = policy.layers
    if any(k != "fp32" for k in kinds.values()):
        out = named_copy(out)
    if any(a.bits == 4 and k != "nbits4" for k, a in zip(kinds.values(), actions.values())) \
            or any(k.startswith("mixed") for k in kinds.values()):
        out = ensure_opset(out)  # int4 QDQ and blocked DequantizeLinear are opset 21
    out = share_weights(out, {n: a.share_bits for n, a in actions.items()
                              if kinds[n].startswith("shared")})
    mixed = {n: a.mixed_low_bits_ratio for n, a in actions.items() if kinds[n].startswith("mixed")}
    static: dict[str, WeightSpec] = {}
    if mixed:
        out, static = split_channels(out, mixed)
    static.update({n: WeightSpec(a.bits, a.granularity == "per-channel")
                   for n, a in actions.items() if kinds[n] in ("int8", "int4")})
    if static:
        if calibration is None:
            raise ValueError("static quantization needs calibration data")
        out = quantize_static_layers(out, static, calibration(), calibration_method)
    out = quantize_dynamic_layers(out, {n: a.granularity == "per-channel"
                                        for n, a in actions.items() if kinds[n] == "int8-dynamic"}) \
        if "int8-dynamic" in kinds.values() else out
    out = quantize_blockwise(out, {n: (a.bits, block_size_of(a)) for n, a in actions.items()
                                   if kinds[n].endswith("per-block")})
    out = quantize_matmul_nbits(out, {n: (a.bits, block_size_of(a), a.accuracy_level)
                                      for n, a in actions.items() if kinds[n].startswith("nbits")})
    return weights_to_fp16(out, [n for n in actions if kinds[n] == "fp16"])
