"""Quantize layers, each in its form (see onnxamc.actions.quantize): the passes of the
forms run in a fixed order, each on its own layers.

Static QDQ must see the final float weights it calibrates and rounds, so the channel
split of mixed layers runs first; the graph edits onnxruntime's quantizers cannot
express (per-block QDQ, MatMulNBits, fp16 storage) run last, on layers the quantizers
left alone.
"""

from __future__ import annotations

from typing import Any, Mapping

import onnx

from onnxamc.passes.blockwise import quantize_blockwise
from onnxamc.passes.channel_mix import split_channels
from onnxamc.passes.embedding_quant import embedding_gathers, quantize_embeddings
from onnxamc.passes.fp16 import weights_to_fp16
from onnxamc.graph.model import copy_model
from onnxamc.passes.graph_edit import ensure_opset
from onnxamc.passes.matmul_nbits import quantize_matmul_nbits
from onnxamc.passes.quantize import WeightSpec, quantize_dynamic_layers, quantize_static_layers


def quantize_layers(model: onnx.ModelProto, actions: Mapping[str, Any],
                    forms: Mapping[str, str], job) -> onnx.ModelProto:
    """`actions`: {layer: LayerAction} of the layers to quantize, `forms` their forms."""
    from onnxamc.actions.quantize import block_size_of

    if not actions:
        return model
    out = copy_model(model)
    if any(a.bits == 4 and forms[n] != "nbits4" for n, a in actions.items()) \
            or any(forms[n].startswith("mixed") for n in actions):
        out = ensure_opset(out)  # int4 QDQ and blocked DequantizeLinear are opset 21
    static: dict[str, WeightSpec] = {}
    mixed = {n: a.mixed_low_bits_ratio for n, a in actions.items() if forms[n].startswith("mixed")}
    if mixed:
        out, static = split_channels(out, mixed)
    static.update({n: WeightSpec(a.bits, a.granularity == "per-channel")
                   for n, a in actions.items() if forms[n] in ("int8", "int4")})
    if static:
        out = quantize_static_layers(out, static, job.feeds("static quantization"),
                                     job.calibration_method, job.runtime, job.int8_threshold,
                                     ranges_dir=job.cache.ranges_dir if job.cache else None)
    out = quantize_blockwise(out, {n: (a.bits, block_size_of(a)) for n, a in actions.items()
                                   if forms[n].endswith("per-block")})
    out = quantize_matmul_nbits(out, {n: (a.bits, block_size_of(a), a.accuracy_level)
                                      for n, a in actions.items() if forms[n].startswith("nbits")})
    out = weights_to_fp16(out, [n for n in actions if forms[n] == "fp16"])
    dynamic = {n: a.granularity == "per-channel" for n, a in actions.items()
               if forms[n] == "int8-dynamic"}
    if not dynamic:
        return out
    out = quantize_dynamic_layers(out, dynamic)  # embedding tables come along, as in
    return quantize_embeddings(out, {name: 8 for name in embedding_gathers(out)})  # ORT's
