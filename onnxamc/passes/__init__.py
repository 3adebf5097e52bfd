"""Compression passes: ONNX in, ONNX out, one file per action.

`apply_policy` runs them in a fixed order: structural passes first (remove blocks,
prune channels with optional reconstruction, low-rank), which keep node names so that
the policy's layer names still resolve; then weight edits (sparsity); quantization
last, which must see the final float weights it calibrates and rounds.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import onnx

from onnxamc.graph import analyze
from onnxamc.passes.low_rank import low_rank
from onnxamc.passes.prune_channels import prune_channels
from onnxamc.passes.remove_blocks import remove_blocks
from onnxamc.passes.quantize import CALIBRATION_METHODS, quantize_int8
from onnxamc.passes.sparsity import magnitude_sparsity, prune_by_magnitude
from onnxamc.policy import LOW_RANK_OPS, Policy

CalibrationFeeds = Callable[[], Iterable[dict[str, np.ndarray]]]

__all__ = ["CALIBRATION_METHODS", "apply_policy", "magnitude_sparsity", "prune_by_magnitude",
           "low_rank", "prune_channels", "quantize_int8", "remove_blocks", "structural_fit"]


def apply_policy(model: onnx.ModelProto, policy: Policy,
                 calibration: CalibrationFeeds | None = None,
                 calibration_method: str = "minmax", reconstruct: bool = False,
                 channel_multiple: int = 8, importance: str = "l1") -> onnx.ModelProto:
    """The compressed model for `policy` (validated against `model` first).

    `calibration` returns feed dicts of calibration data; it is only called when the
    policy quantizes something, or prunes channels with `reconstruct`.
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
    int8 = [n for n in policy.layers_with_bits(8) if n in present]
    if int8:
        if calibration is None:
            raise ValueError("int8 quantization needs calibration data")
        out = quantize_int8(out, int8, calibration(), calibration_method)
    return out


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
