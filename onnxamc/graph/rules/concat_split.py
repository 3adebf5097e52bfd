"""Concat, Split, Slice and Gather: channel layouts joined at offsets, cut into parts
or picked by constant indices."""

from __future__ import annotations

import numpy as np

from onnxamc.graph.tracer import ConstEdit, Tracer, Unsupported


def concat(t: Tracer, i: int, node) -> None:
    """Concat along the channel axis joins layouts at their offsets; along another axis
    it ties the channels of all inputs."""
    rank = t.rank(node.output[0]) if t.shape(node.output[0]) else t.rank(node.input[0])
    axis = int(t.attr(node, "axis")) % rank
    lays = [t.layout(n) for n in node.input]
    tracked_axes = {lay.axis for lay in lays if lay is not None}
    if tracked_axes == {axis}:
        parts = []
        for name, lay in zip(node.input, lays):
            if lay is not None:
                parts.append(lay.atoms)
                continue
            shape = t.shape(name)
            if shape is None or shape[axis] is None:
                raise Unsupported(f"unknown size of {name!r}")
            parts.append(t.atoms.new_source(None, shape[axis], f"Concat node {t.names[i]!r} "
                                            f"(input {name!r} has fixed channels)"))
        t.set(node.output[0], axis, np.concatenate(parts))
        return
    if len(tracked_axes) != 1:
        raise Unsupported("channels on different axes")
    ch_axis = tracked_axes.pop()
    first = next(lay.atoms for lay in lays if lay is not None)
    for k, (name, lay) in enumerate(zip(node.input, lays)):
        if lay is not None:
            t.atoms.union(first, lay.atoms)
        elif name in t.inits:
            t.param(i, k, ch_axis, first, importance=False)
        else:
            raise Unsupported(f"input {name!r} has channels of its own")
    t.set(node.output[0], ch_axis, first)


def split(t: Tracer, i: int, node) -> None:
    """Split on the channel axis cuts the layout; the sizes are rewritten after pruning."""
    lay = t.layout(node.input[0])
    rank = t.rank(node.input[0])
    axis = int(t.attr(node, "axis", 0)) % rank
    if axis != lay.axis:
        for out in node.output:
            t.set(out, lay.axis, lay.atoms)
        return
    sizes = t.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if sizes is None:
        sizes = t.attr(node, "split")
    if sizes is None:
        n = len(node.output)
        if len(lay.atoms) % n:
            raise Unsupported("uneven split")
        sizes = [len(lay.atoms) // n] * n
    bounds = np.cumsum([0] + [int(s) for s in sizes])
    parts = [lay.atoms[bounds[k]:bounds[k + 1]] for k in range(len(node.output))]
    for out, part in zip(node.output, parts):
        t.set(out, axis, part)
    t.edits.append(ConstEdit("split", i, parts=parts))


def slice_(t: Tracer, i: int, node) -> None:
    """Slice with step 1 on the channel axis keeps the atoms in its range."""
    lay = t.layout(node.input[0])
    rank = t.rank(node.input[0])
    if len(node.input) < 3:
        raise Unsupported("attribute-style Slice")
    starts, ends = t.const(node.input[1]), t.const(node.input[2])
    axes = t.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    steps = t.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if starts is None or ends is None or (len(node.input) > 3 and node.input[3] and axes is None):
        raise Unsupported("non-constant bounds")
    axes = [int(a) % rank for a in (axes if axes is not None else range(len(starts)))]
    if lay.axis not in axes:
        t.set(node.output[0], lay.axis, lay.atoms)
        return
    pos = axes.index(lay.axis)
    if steps is not None and int(steps[pos]) != 1:
        raise Unsupported("step other than 1")
    start, stop, _ = slice(int(starts[pos]), int(ends[pos])).indices(len(lay.atoms))
    t.set(node.output[0], lay.axis, lay.atoms[start:stop])
    t.edits.append(ConstEdit("slice", i, lay.atoms, entry=pos, start=start, stop=stop))




def gather(t: Tracer, i: int, node) -> None:
    """Gather along another axis keeps the channels (a scalar index drops its axis: the
    class token of a ViT). Along the channel axis with constant indices (as_strided,
    a channel permutation, a channel shuffle) the picked atoms follow, and the indices
    are renumbered. Rows of a constant table looked up by computed indices (a token
    embedding) start channels: the table's columns, which lose the pruned ones."""
    lay = t.layout(node.input[0])
    if lay is None and t.layout(node.input[1]) is None:
        _embedding(t, i, node)
        return
    if lay is None or t.layout(node.input[1]) is not None:
        raise Unsupported("channels in the indices")
    rank = t.rank(node.input[0])
    axis = int(t.attr(node, "axis", 0)) % rank
    q = t.rank(node.input[1])
    if lay.axis != axis:
        t.set(node.output[0], lay.axis if lay.axis < axis else lay.axis - 1 + q, lay.atoms)
        return
    indices = t.const(node.input[1])
    if indices is None:
        raise Unsupported("gathers channels by computed indices")
    varying = [a for a, d in enumerate(indices.shape) if d > 1]
    if len(varying) != 1:
        raise Unsupported("gathers single channels or a grid of them")
    flat = indices.ravel().astype(np.int64) % len(lay.atoms)
    t.set(node.output[0], axis + varying[0], lay.atoms[flat])
    t.edits.append(ConstEdit("gather", i, lay.atoms, entry=varying[0]))


def _embedding(t: Tracer, i: int, node) -> None:
    """A lookup in a constant [rows, width] table by computed indices: its width is a
    new set of channels (not a layer's: it joins the group of the layers it meets)."""
    table, indices = node.input[0], node.input[1]
    shape, rank = t.shape(table), t.shape(indices)
    if table not in t.inits or t.is_const(indices) or shape is None or len(shape) != 2 \
            or rank is None or int(t.attr(node, "axis", 0)) % 2 != 0 or shape[1] < 2:
        return  # shape arithmetic, a constant pick: no channels
    atoms = t.atoms.new_source(None, shape[1])
    t.param(i, 0, 1, atoms)
    t.set(node.output[0], len(rank), atoms)


RULES = {"Concat": concat, "Split": split, "Slice": slice_, "Gather": gather}
SOURCES = ("Gather",)  # its rule runs on untracked inputs too (embedding tables)
