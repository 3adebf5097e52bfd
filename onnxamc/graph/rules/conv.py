"""Convolution rules: Conv (plain, grouped, depthwise), ConvTranspose, and the pooling and
spatial ops that keep channels on axis 1."""

from __future__ import annotations

import numpy as np

from onnxamc.graph.tracer import ConstEdit, Tracer, Unsupported


def channel_first(t: Tracer, i: int, node) -> None:
    """Pooling and spatial ops: fine while the channels are on axis 1."""
    lay = t.layout(node.input[0])
    if lay is None or lay.axis != 1:
        raise Unsupported("channels not on axis 1")
    t.set(node.output[0], 1, lay.atoms)
    if len(node.output) > 1 and node.output[1]:
        t.set(node.output[1], 1, lay.atoms)  # MaxPool indices


def conv(t: Tracer, i: int, node) -> None:
    """Conv: input channels are the weight's axis 1 (per group), output channels a new
    source. Depthwise: output channel c is input channel c (group count follows).
    Grouped: every group must keep the same positions, so positions are tied across groups."""
    w = t.shape(node.input[1])
    if not t.weight(node.input[1]) or w is None:
        raise Unsupported("weight is not a constant")
    groups = int(t.attr(node, "group", 1))
    c_out, c_in = w[0], w[1] * groups
    lay = t.layout(node.input[0])
    if lay is not None and lay.axis != 1:
        raise Unsupported("channels not on axis 1")
    bias = len(node.input) > 2 and node.input[2]
    if groups == 1:
        if lay is not None:
            t.reads(i, 1, lay.atoms, lay.atoms)
        out = t.source(i, c_out)
    elif groups == c_in and c_in > 1:  # depthwise (channel multiplier c_out / c_in)
        out = _depthwise(t, i, node, lay, c_in, c_out)
    else:
        if lay is not None:
            per_group = lay.atoms.reshape(groups, -1)
            for row in per_group[1:]:
                t.atoms.union(per_group[0], row)
            t.reads(i, 1, per_group[0], lay.atoms)
        out = t.source(i, c_out)
        grid = out.reshape(groups, -1)
        for row in grid[1:]:
            t.atoms.union(grid[0], row)
    t.param(i, 1, 0, out)
    if bias:
        t.param(i, 2, 0, out, importance=False)
    t.set(node.output[0], 1, out)


def _depthwise(t: Tracer, i: int, node, lay, c_in: int, c_out: int) -> np.ndarray:
    """Output channel c*m + j is filter j of input channel c (multiplier m = c_out / c_in).
    Over tracked channels each output follows its input channel (the group count follows).
    Over fixed channels (a model input, an op that blocks) the group count stays, so only
    the multiplier can shrink: filter j goes from every group at once."""
    multiplier = c_out // c_in
    if lay is not None:
        t.edits.append(ConstEdit("group", i, lay.atoms))
        out = np.repeat(lay.atoms, multiplier)
        t.layer_sources[t.names[i]] = out
        return out
    if multiplier == 1:
        out = t.atoms.new_source(t.names[i], c_out, f"{node.op_type} node {t.names[i]!r} "
                                 "(depthwise over fixed input channels, multiplier 1)")
        t.layer_sources[t.names[i]] = out
        return out
    out = t.source(i, c_out)
    grid = out.reshape(c_in, multiplier)
    for row in grid[1:]:
        t.atoms.union(grid[0], row)
    return out


def conv_transpose(t: Tracer, i: int, node) -> None:
    """ConvTranspose (group 1): weight is (c_in, c_out, k...)."""
    w = t.shape(node.input[1])
    if not t.weight(node.input[1]) or w is None or int(t.attr(node, "group", 1)) != 1:
        raise Unsupported("grouped or non-constant weight")
    if t.attr(node, "output_shape") is not None:
        raise Unsupported("explicit output_shape")
    lay = t.layout(node.input[0])
    if lay is not None:
        if lay.axis != 1:
            raise Unsupported("channels not on axis 1")
        t.reads(i, 0, lay.atoms, lay.atoms)
    out = t.source(i, w[1])
    t.param(i, 1, 1, out)
    if len(node.input) > 2 and node.input[2]:
        t.param(i, 2, 0, out, importance=False)
    t.set(node.output[0], 1, out)


RULES = {"Conv": conv, "ConvTranspose": conv_transpose,
         **{op: channel_first for op in ("MaxPool", "AveragePool", "GlobalAveragePool",
                                          "GlobalMaxPool", "LpPool", "GlobalLpPool")}}
SOURCES = ("Conv", "ConvTranspose")
