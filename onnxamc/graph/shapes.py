"""Tensor shapes a (shape-inferred) model states: one reading shared by graph/ and its users."""

from __future__ import annotations

import onnx

Shape = tuple[int | None, ...]


def known_shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    """{tensor: shape} from value_info, graph inputs and outputs; None for a dynamic dim."""
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        t = value.type.tensor_type
        if t.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                       for d in t.shape.dim)
    return shapes


def initializer_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    return {init.name: tuple(int(d) for d in init.dims) for init in model.graph.initializer}
