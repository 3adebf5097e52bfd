"""Compression passes: ONNX in, ONNX out, one file per action.

`apply_policy` runs them in a fixed order: structural passes first (remove blocks,
prune channels with optional reconstruction, low-rank), which keep node names so that
the policy's layer names still resolve; then weight edits (sparsity, weight sharing,
the channel split of mixed layers); then onnxruntime's static and dynamic quantization,
which must see the final float weights it calibrates and rounds; last the graph passes
onnxruntime cannot express (per-block QDQ, MatMulNBits, fp16 storage) on layers the
quantizers left alone.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import onnx

from onnxamc.graph import analyze
from onnxamc.passes.blockwise import quantize_blockwise
from onnxamc.passes.channel_mix import split_channels
from onnxamc.passes.embedding_quant import embedding_gathers, quantize_embeddings
from onnxamc.passes.fp16 import weights_to_fp16
from onnxamc.passes.graph_edit import ensure_opset, named_copy
from onnxamc.passes.low_rank import low_rank
from onnxamc.passes.matmul_nbits import quantize_matmul_nbits
from onnxamc.passes.prune_channels import prune_channels
from onnxamc.passes.quantize import (CALIBRATION_METHODS, WeightSpec, quantize_dynamic_layers,
                                     quantize_int8, quantize_static_layers)
from onnxamc.passes.remove_blocks import remove_blocks
from onnxamc.passes.sparsity import magnitude_sparsity, prune_by_magnitude
from onnxamc.passes.weight_sharing import share_weights
from onnxamc.policy import LOW_RANK_OPS, Policy
from onnxamc.quant_actions import action_kind, block_size_of

CalibrationFeeds = Callable[[], Iterable[dict[str, np.ndarray]]]

__all__ = ["CALIBRATION_METHODS", "apply_policy", "magnitude_sparsity", "prune_by_magnitude",
           "low_rank", "prune_channels", "quantize_int8", "quantize_static_layers",
           "remove_blocks", "structural_fit"]


def apply_policy(model: onnx.ModelProto, policy: Policy,
                 calibration: CalibrationFeeds | None = None,
                 calibration_method: str = "minmax", reconstruct: bool = False,
                 channel_multiple: int = 8, importance: str = "l1", *,
                 runtime: str = "onnxruntime", int8_threshold: float | None = 0.0
                 ) -> onnx.ModelProto:
    """The compressed model for `policy` (validated against `model` first).

    `calibration` returns feed dicts of calibration data; it is only called when the
    policy quantizes activations statically, or prunes channels with `reconstruct`.
    Static int8 goes around whole regions that `runtime` fuses, never around a float op
    (quant_placement). `int8_threshold`: the MACs per converted element a region must
    do to be quantized; 0 (default) quantizes every layer the policy names, None takes
    the runtime's bar (regions that do not pay stay float; the latency guard's choice).
    """
    info = analyze(model)
    policy.validate({layer.name: layer.op_type for layer in info.layers}, info.fingerprint)
    out = remove_blocks(model, policy.removals()) if policy.removals() else model
    names = set(analyze(out).layer_names) if out is not model else set(info.layer_names)
    keeps = {n: k for n, k in policy.keeps().items() if n in names}
    if keeps:
        if reconstruct and calibration is None:
            raise ValueError("reconstruction needs calibration data")
        out = prune_channels(out, keeps, channel_multiple, importance,
                             calibration if reconstruct else None)
    ranks = {n: r for n, r in policy.ranks().items() if n in names}
    out = low_rank(out, ranks) if ranks else out
    if out is not model:
        info = analyze(out)
    present = set(info.layer_names)
    out = magnitude_sparsity(out, info.layers, {n: s for n, s in policy.sparsities().items()
                                                if n in present})
    actions = {n: a for n, a in policy.layers.items() if n in present}
    kinds = {name: action_kind(a) for name, a in actions.items()}
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
        out = quantize_static_layers(out, static, calibration(), calibration_method, runtime,
                                     int8_threshold)
    if "int8-dynamic" in kinds.values():  # embedding tables come along, as in onnxruntime's
        out = quantize_dynamic_layers(out, {n: a.granularity == "per-channel"  # dynamic int8
                                            for n, a in actions.items() if kinds[n] == "int8-dynamic"})
        out = quantize_embeddings(out, {name: 8 for name in embedding_gathers(out)})
    out = quantize_blockwise(out, {n: (a.bits, block_size_of(a)) for n, a in actions.items()
                                   if kinds[n].endswith("per-block")})
    out = quantize_matmul_nbits(out, {n: (a.bits, block_size_of(a), a.accuracy_level)
                                      for n, a in actions.items() if kinds[n].startswith("nbits")})
    return weights_to_fp16(out, [n for n in actions if kinds[n] == "fp16"])


def structural_fit(model: onnx.ModelProto) -> dict[str, set[str]]:
    """{layer: the structural fields it can take}: keep where its channel group is
    prunable, rank for ungrouped Conv / Gemm / MatMul, remove inside a residual block.
    Uniform policies use it to skip layers, as quantization skips unquantizable ones."""
    from onnxamc.graph.blocks import residual_blocks
    from onnxamc.graph.groups import channel_groups

    groups = channel_groups(model)
    in_blocks = {layer for block in residual_blocks(model) for layer in block.layers}
    fit: dict[str, set[str]] = {}
    for layer in analyze(model).layers:
        fields = fit.setdefault(layer.name, set())
        group = groups.group_of(layer.name)
        if group is not None and group.prunable:
            fields.add("keep")
        if layer.op_type in LOW_RANK_OPS and layer.groups == 1:
            fields.add("rank")
        if layer.name in in_blocks:
            fields.add("remove")
    return fit
