"""Reductions: over other axes the channels stay; over the channel axis they end."""

from __future__ import annotations

from onnxamc.graph.tracer import Tracer


def reduce(t: Tracer, i: int, node) -> None:
    """Reductions over other axes keep the channels; over the channel axis they end them."""
    lay = t.layout(node.input[0])
    rank = t.rank(node.input[0])
    axes = t.axes(node, rank)
    if axes is None:
        if t.attr(node, "noop_with_empty_axes", 0):
            t.set(node.output[0], lay.axis, lay.atoms)
            return
        axes = list(range(rank))
    if lay.axis in axes:
        t.mixed.append(lay.atoms)
        return
    keep = int(t.attr(node, "keepdims", 1))
    axis = lay.axis if keep else lay.axis - sum(a < lay.axis for a in axes)
    t.set(node.output[0], axis, lay.atoms)




RULES = {op: reduce for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum",
                               "ReduceL1", "ReduceL2", "ReduceProd")}
