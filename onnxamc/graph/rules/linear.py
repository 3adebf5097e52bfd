"""Gemm and MatMul with a constant weight: the fully connected layers."""

from __future__ import annotations

from onnxamc.graph.rules.attention import activation_matmul
from onnxamc.graph.tracer import Tracer, Unsupported


def gemm(t: Tracer, i: int, node) -> None:
    """Gemm: A's axis 1 meets B's axis 1 (transB) or 0; the output axis 1 is a new source."""
    w = t.shape(node.input[1])
    if not t.weight(node.input[1]) or w is None or t.layout(node.input[1]) is not None:
        raise Unsupported("B is not a constant")
    if t.attr(node, "transA", 0):
        raise Unsupported("transA")
    trans_b = int(t.attr(node, "transB", 0))
    lay = t.layout(node.input[0])
    if lay is not None:
        if lay.axis != 1:
            raise Unsupported("channels not on axis 1")
        t.reads(i, 1 if trans_b else 0, lay.atoms, lay.atoms)
    out = t.source(i, w[0] if trans_b else w[1])
    t.param(i, 1, 0 if trans_b else 1, out)
    if len(node.input) > 2 and node.input[2]:
        c = t.shape(node.input[2])
        if c and c[-1] == len(out) and len(out) > 1:
            if node.input[2] not in t.inits:
                raise Unsupported("bias is not an initializer")
            t.param(i, 2, len(c) - 1, out, importance=False)
    t.set(node.output[0], 1, out)


def matmul(t: Tracer, i: int, node) -> None:
    """MatMul with a constant 2-D weight is a layer; between two activations it is
    attention (attention.py)."""
    a, b = node.input[0], node.input[1]
    w = t.shape(b)
    if t.weight(b) and w is not None and len(w) == 2:
        lay = t.layout(a)
        rank = t.rank(a)
        if lay is not None and lay.axis == rank - 1:
            t.reads(i, 0, lay.atoms, lay.atoms)
        elif lay is not None:  # channels on a row axis pass through; no new source
            t.set(node.output[0], lay.axis, lay.atoms)
            return
        out = t.source(i, w[1])
        t.param(i, 1, 1, out)
        t.set(node.output[0], rank - 1, out)
        return
    activation_matmul(t, i, node)


RULES = {"Gemm": gemm, "MatMul": matmul}
SOURCES = ("Gemm", "MatMul")
