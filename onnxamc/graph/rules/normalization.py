"""Normalization rules: per-channel scale and bias follow the channels."""

from __future__ import annotations

from onnxamc.graph.tracer import Tracer, Unsupported


def norm_channel_first(t: Tracer, i: int, node) -> None:
    """BatchNormalization / InstanceNormalization: per-channel constants on axis 1.
    InstanceNormalization over channels on a later axis (GroupNorm as exported: reshape
    to (N, groups, -1)) normalises over them, like LayerNormalization."""
    lay = t.layout(node.input[0])
    if lay is not None and lay.axis > 1 and node.op_type == "InstanceNormalization":
        t.mixed.append(lay.atoms)
        t.set(node.output[0], lay.axis, lay.atoms)
        return
    if lay is None or lay.axis != 1:
        raise Unsupported("channels not on axis 1")
    if len(node.output) > 1 and any(node.output[1:]):
        raise Unsupported("training-mode outputs")
    for k, name in enumerate(node.input[1:], start=1):
        t.param(i, k, 0, lay.atoms, importance=(k == 1))
    t.set(node.output[0], 1, lay.atoms)


def layer_norm(t: Tracer, i: int, node) -> None:
    """LayerNormalization: when the channel axis is normalised, scale and bias follow it
    wherever they come from (initializer or Constant node; the statistics then run over
    the kept channels)."""
    lay = t.layout(node.input[0])
    rank = t.rank(node.input[0])
    first = int(t.attr(node, "axis", -1)) % rank
    if len(node.output) > 1 and any(node.output[1:]):
        raise Unsupported("mean / inv_std outputs")
    if lay.axis >= first:
        t.mixed.append(lay.atoms)
        for k, name in enumerate(node.input[1:3], start=1):
            ax = t.rank(name) - (rank - lay.axis) if name else -1
            if ax >= 0:  # else broadcast over the channels
                t.param(i, k, ax, lay.atoms, importance=(k == 1))
    t.set(node.output[0], lay.axis, lay.atoms)


def group_norm(t: Tracer, i: int, node) -> None:
    """GroupNormalization: every group keeps the same positions (num_groups stays)."""
    lay = t.layout(node.input[0])
    groups = int(t.attr(node, "num_groups"))
    if lay is None or lay.axis != 1 or len(lay.atoms) % groups:
        raise Unsupported("channels not on axis 1")
    grid = lay.atoms.reshape(groups, -1)
    for row in grid[1:]:
        t.atoms.union(grid[0], row)
    t.mixed.append(lay.atoms)
    for k, name in enumerate(node.input[1:3], start=1):
        shape = t.shape(name)
        if shape and shape[0] == len(lay.atoms) and groups < len(lay.atoms):
            t.param(i, k, 0, lay.atoms, importance=(k == 1))
    t.set(node.output[0], 1, lay.atoms)


RULES = {"BatchNormalization": norm_channel_first, "InstanceNormalization": norm_channel_first,
         "LayerNormalization": layer_norm, "GroupNormalization": group_norm}
