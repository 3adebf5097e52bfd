"""Element-wise rules: unary ops pass channels through; broadcasting ops tie the channels
of their inputs and slice per-channel constants with them."""

from __future__ import annotations

import numpy as np

from onnxamc.graph.tracer import Tracer, Unsupported


def passthrough(t: Tracer, i: int, node) -> None:
    """Unary ops (activations, casts, softmax): channels flow through unchanged."""
    lay = t.layout(node.input[0])
    if lay is None or any(t.layout(n) is not None for n in node.input[1:]):
        raise Unsupported("channels on a side input")
    for extra in node.input[1:]:  # Clip min/max, Dropout ratio: scalars only
        shape = t.shape(extra) if extra else ()
        if shape and int(np.prod(shape)) > 1:
            raise Unsupported(f"non-scalar input {extra!r}")
    rank = len(t.shape(node.input[0]) or ())
    if node.op_type in ("Softmax", "LogSoftmax") and int(t.attr(node, "axis", -1)) % max(rank, 1) \
            == lay.axis:
        t.mixed.append(lay.atoms)
    t.set(node.output[0], lay.axis, lay.atoms)
    if len(node.output) > 1 and any(node.output[1:]):
        raise Unsupported("second output")



def elementwise(t: Tracer, i: int, node) -> None:
    """Broadcasting ops tie the channels of all their inputs (residual adds, SE gates);
    constants with a channel dimension lose the same indices."""
    ranks = [t.rank(n) if n else 0 for n in node.input]
    out_rank = max(ranks)
    tracked = [(k, t.layout(n)) for k, n in enumerate(node.input) if t.layout(n) is not None]
    from_right = {lay.axis - ranks[k] for k, lay in tracked}
    if len(from_right) != 1:
        raise Unsupported("channels on different axes")
    axis = from_right.pop()
    first = tracked[0][1].atoms
    for k, lay in tracked[1:]:
        if len(lay.atoms) != len(first):
            raise Unsupported("broadcast of channels")
        t.atoms.union(first, lay.atoms)
    for k, name in enumerate(node.input):
        if not name or t.layout(name) is not None:
            continue
        shape = t.shape(name)
        if shape is None:
            raise Unsupported(f"unknown shape of {name!r}")
        dim = shape[axis] if -axis <= len(shape) else 1
        if dim == 1:
            continue
        if dim is None or dim != len(first) or not t.is_const(name):
            raise Unsupported(f"input {name!r} has channels of its own")
        if name not in t.inits:
            raise Unsupported(f"per-channel Constant node {name!r}")
        t.param(i, k, len(shape) + axis, first, importance=False)
    t.set(node.output[0], out_rank + axis, first)




UNARY = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu",
         "Selu", "Celu", "Softplus", "Softsign", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Abs",
         "Neg", "Reciprocal", "Mish", "ThresholdedRelu", "Clip", "Identity", "Dropout",
         "Cast", "Softmax", "LogSoftmax", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos")

RULES = {**{op: passthrough for op in UNARY},
         **{op: elementwise for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Where",
                                       "Pow", "PRelu", "Sum", "Mean")}}
