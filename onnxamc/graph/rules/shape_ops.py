"""Shape ops: Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Pad, Resize, Shape, Expand."""

from __future__ import annotations

import numpy as np

from onnxamc.graph.tracer import ConstEdit, Tracer, Unsupported

STACKED = 3  # an outer axis this small in a split of the last axis stacks q/k/v, not heads


def transpose(t: Tracer, i: int, node) -> None:
    lay = t.layout(node.input[0])
    rank = t.rank(node.input[0])
    perm = list(t.attr(node, "perm", list(range(rank))[::-1]))
    t.set(node.output[0], perm.index(lay.axis), lay.atoms)


def squeeze(t: Tracer, i: int, node) -> None:
    lay = t.layout(node.input[0])
    rank = t.rank(node.input[0])
    axes = t.axes(node, rank)
    if axes is None:
        axes = [k for k, d in enumerate(t.shape(node.input[0])) if d == 1]
    if lay.axis in axes:
        raise Unsupported("squeezes the channel axis")
    t.set(node.output[0], lay.axis - sum(a < lay.axis for a in axes), lay.atoms)


def unsqueeze(t: Tracer, i: int, node) -> None:
    lay = t.layout(node.input[0])
    out_rank = t.rank(node.output[0])
    axes = sorted(t.axes(node, out_rank))
    axis = lay.axis
    for a in axes:
        if a <= axis:
            axis += 1
    t.set(node.output[0], axis, lay.atoms)


def pad(t: Tracer, i: int, node) -> None:
    """Pad with constant pads (as an input, an attribute, or for the given `axes`): fine
    while the channel axis gets no padding."""
    lay = t.layout(node.input[0])
    if any(t.layout(n) is not None for n in node.input[1:]):
        raise Unsupported("channels on a side input")
    rank = t.rank(node.input[0])
    pads = t.const(node.input[1]) if len(node.input) > 1 and node.input[1] \
        else t.attr(node, "pads")
    if pads is None:
        raise Unsupported("non-constant pads")
    axes = list(range(rank))
    if len(node.input) > 3 and node.input[3]:
        value = t.const(node.input[3])
        if value is None:
            raise Unsupported("non-constant axes")
        axes = [int(a) % rank for a in np.ravel(value)]
    pads = np.ravel(pads)
    if lay.axis in axes:
        j = axes.index(lay.axis)
        if int(pads[j]) or int(pads[j + len(axes)]):
            raise Unsupported("pads the channel axis")
    t.set(node.output[0], lay.axis, lay.atoms)


def expand(t: Tracer, i: int, node) -> None:
    """Expand broadcasts size-1 axes: a channel axis (size > 1) keeps its atoms."""
    lay = t.layout(node.input[0])
    if lay is None or t.layout(node.input[1]) is not None:
        raise Unsupported("channels in the target shape")
    out = t.shape(node.output[0])
    axis = lay.axis + t.rank(node.output[0]) - t.rank(node.input[0])
    if out is None or out[axis] != len(lay.atoms):
        raise Unsupported("expands the channel axis")
    t.set(node.output[0], axis, lay.atoms)


def resize(t: Tracer, i: int, node) -> None:
    lay = t.layout(node.input[0])
    if len(node.input) > 3 and node.input[3]:
        raise Unsupported("explicit sizes")
    scales = t.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scales is None or float(scales[lay.axis]) != 1.0:
        raise Unsupported("scales the channel axis")
    t.set(node.output[0], lay.axis, lay.atoms)


def shape(t: Tracer, i: int, node) -> None:
    """Shape of a tracked tensor: fine when it only feeds Reshape targets (the reshape
    back after an exported GroupNorm), which then follow the pruned shape by themselves."""
    if t.attr(node, "start", 0) != 0 or t.attr(node, "end") is not None:
        raise Unsupported("partial shape")
    if any(t.nodes[j].op_type != "Reshape" or k != 1 for j, k in t.users.get(node.output[0], [])):
        raise Unsupported("shape used in arithmetic")
    t.shape_of[node.output[0]] = node.input[0]


def reshape(t: Tracer, i: int, node) -> None:
    """Reshape / Flatten: merging the channel axis with others repeats its atoms (stride
    expansion into a Gemm, heads merged with a fixed batch); splitting it into several
    axes ties atoms so one axis stays prunable: for a split of the last axis the heads
    move whole (the outer axis of (heads, head_dim), the middle one of a stacked (q/k/v,
    heads, head_dim)), and a packed projection split into (q/k/v, embed) by torch's
    MultiheadAttention keeps its embed axis, q, k and v losing the same columns (the
    head split that follows moves them by heads); the inner one otherwise (channel
    shuffle keeps the group count)."""
    lay = t.layout(node.input[0])
    src, dst = t.shape(node.input[0]), t.shape(node.output[0])
    if src is None or dst is None:
        raise Unsupported("unknown shapes")
    like = t.layout(t.shape_of.get(node.input[1], "")) if node.op_type == "Reshape" else None
    if node.op_type == "Reshape" and like is None and t.const(node.input[1]) is None:
        raise Unsupported("computed target shape")
    if src and dst and src[0] is None and dst[0] is None:
        src, dst = (1,) + tuple(src[1:]), (1,) + tuple(dst[1:])
    if any(d is None for d in src + dst):
        raise Unsupported("dynamic dimensions")
    (i0, i1), (j0, j1) = _reshape_span(src, dst, lay.axis)
    block = [1] * (i1 - i0)
    block[lay.axis - i0] = -1
    grid = np.broadcast_to(lay.atoms.reshape(block), src[i0:i1]).reshape(dst[j0:j1])
    varying = [a for a in range(grid.ndim) if grid.shape[a] > 1 and
               not (grid == grid.take([0], axis=a)).all()]
    if not varying:
        raise Unsupported("single channel")
    if lay.axis != len(src) - 1:
        keep = varying[-1]
    elif len(varying) >= 3 or (len(varying) == 2 and grid.shape[varying[0]] <= STACKED):
        keep = varying[1]
    else:
        keep = varying[0]
    moved = np.moveaxis(grid, keep, 0).reshape(grid.shape[keep], -1)
    for col in range(1, moved.shape[1]):
        t.atoms.union(moved[:, 0], moved[:, col])
    atoms = moved[:, 0].copy()
    axis = j0 + keep
    t.set(node.output[0], axis, atoms)
    if like is not None:  # reshaped to the shape of a tracked tensor: same channels
        if like.axis != axis or len(like.atoms) != len(atoms):
            raise Unsupported("reshaped to a tensor with other channels")
        t.atoms.union(like.atoms, atoms)
    elif node.op_type == "Reshape":
        t.edits.append(ConstEdit("reshape", i, atoms, entry=axis))


def _reshape_span(src, dst, axis):
    """The smallest blocks of axes [i0, i1) in src and [j0, j1) in dst that hold the same
    elements and contain `axis` (a fixed batch may be among them: its entry is then
    rewritten as batch x kept channels)."""
    pre_src = np.cumprod([1] + list(src))
    pre_dst = list(np.cumprod([1] + list(dst)))
    i0 = max(k for k in range(axis + 1) if pre_src[k] in pre_dst)
    i1 = min(k for k in range(axis + 1, len(src) + 1) if pre_src[k] in pre_dst)
    j0 = pre_dst.index(pre_src[i0])
    j1 = len(pre_dst) - 1 - pre_dst[::-1].index(pre_src[i1])
    while j0 < j1 and dst[j0] == 1 and j0 + 1 < len(dst) and pre_dst[j0 + 1] == pre_src[i0]:
        j0 += 1
    return (i0, i1), (j0, j1)


RULES = {"Transpose": transpose, "Squeeze": squeeze, "Unsqueeze": unsqueeze,
         "Reshape": reshape, "Flatten": reshape, "Shape": shape, "Pad": pad, "Resize": resize,
         "Expand": expand}
