"""Attention: MatMul between two activations (scores Q·Kᵀ, context A·V).

The contracted axes are tied (a head's query and key features go together), batch axes
(heads) are tied across both sides, so pruning moves whole heads or whole per-head
features through the Reshape/Transpose head split (shape_ops.py).
"""

from __future__ import annotations

from onnxamc.graph.tracer import Tracer, Unsupported


def activation_matmul(t: Tracer, i: int, node) -> None:
    """MatMul of two activations: contracted axes tied, shared batch axes tied."""
    a, b = node.input[0], node.input[1]
    if t.is_const(a) or t.is_const(b):
        raise Unsupported("constant of rank other than 2")
    ra, rb = t.rank(a), t.rank(b)
    if ra < 2 or rb < 2:
        raise Unsupported("1-D operand")
    la, lb = t.layout(a), t.layout(b)
    xa = la.axis - ra if la else None
    xb = lb.axis - rb if lb else None
    out_rank = max(ra, rb)
    outs = []
    if xa == -1 or xb == -2:
        if xa != -1 or xb != -2 or len(la.atoms) != len(lb.atoms):
            raise Unsupported("contracted axis tracked on one side only")
        t.atoms.union(la.atoms, lb.atoms)
    else:
        if xa is not None and xb is not None and xa == xb:  # same batch axis (heads)
            if len(la.atoms) != len(lb.atoms):
                raise Unsupported("broadcast of channels")
            t.atoms.union(la.atoms, lb.atoms)
            outs.append((xa, la.atoms))
        else:
            for x, lay, other, r_other in ((xa, la, b, rb), (xb, lb, a, ra)):
                if x is None:
                    continue
                if x <= -3:
                    o_shape = t.shape(other)
                    if o_shape is None or (-x <= r_other and o_shape[x] not in (1,)):
                        raise Unsupported("batch axis tracked on one side only")
                outs.append((x, lay.atoms))
    if len(outs) > 1:
        raise Unsupported("two channel axes in the output")
    if outs:
        t.set(node.output[0], out_rank + outs[0][0], outs[0][1])


