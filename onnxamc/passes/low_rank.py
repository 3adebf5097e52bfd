"""Low-rank factorization by truncated SVD: one layer becomes two thinner ones.

Gemm / MatMul: W (c_in x c_out) ≈ A B with A (c_in x r), B (r x c_out). Conv: the weight
as a (c_out x c_in·k·k) matrix, so a k×k conv becomes a k×k conv to r channels (same
strides and pads) followed by a 1×1 conv; a 1×1 conv is the special case k = 1. The
second node keeps the layer's name and output, so later passes still find the layer.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.errors import PolicyError
from onnxamc.graph import find_layers, initializer_map, node_names
from onnxamc.passes.graph_edit import drop_unused_initializers
from onnxamc.graph.model import copy_model


def rank_for(full: int, ratio: float) -> int:
    """Kept rank for a ratio of the full rank, at least 1."""
    return max(1, min(full, int(round(ratio * full))))


def low_rank(model: onnx.ModelProto, ranks: dict[str, float]) -> onnx.ModelProto:
    """Factorize each named layer at `ranks[layer]` of its full rank."""
    ranks = {name: r for name, r in ranks.items() if r < 1.0}
    if not ranks:
        return model
    out = copy_model(model)
    layers = {layer.name: layer for layer in find_layers(out)}
    inits = initializer_map(out)
    index = {name: i for i, name in enumerate(node_names(out))}
    replaced: dict[int, list] = {}
    for name, ratio in ranks.items():
        layer = layers.get(name)
        if layer is None:
            raise PolicyError(f"layer {name!r}: rank={ratio} but it is not a layer of this model")
        node = out.graph.node[index[name]]
        if node.input[1] not in inits:
            raise PolicyError(f"layer {name!r}: rank needs a plain float weight")
        weight = numpy_helper.to_array(inits[node.input[1]])
        replaced[index[name]] = _factorize(name, node, weight, ratio, out)
    nodes = []
    for i, node in enumerate(out.graph.node):
        nodes.extend(replaced.get(i, [node]))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    drop_unused_initializers(out)
    return out


def _factorize(name, node, weight, ratio, model) -> list:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    mid = f"{node.output[0]}.low_rank"
    a_name, b_name = f"{node.input[1]}.low_rank_a", f"{node.input[1]}.low_rank_b"
    if node.op_type == "Conv":
        if attrs.get("group", 1) != 1:
            raise PolicyError(f"layer {name!r}: rank is not supported for grouped or "
                              f"depthwise convolutions (group={attrs['group']})")
        c_out = weight.shape[0]
        a, b = _svd(weight.reshape(c_out, -1).T, ratio)  # (c_in·k·k, r), (r, c_out)
        r = a.shape[1]
        first_w = a.T.reshape((r,) + weight.shape[1:])
        second_w = b.T.reshape((c_out, r) + (1,) * (weight.ndim - 2))
        first = helper.make_node("Conv", [node.input[0], a_name], [mid], f"{name}.low_rank")
        first.attribute.extend(node.attribute)
        second = helper.make_node("Conv", [mid, b_name] + list(node.input[2:3]),
                                  list(node.output), name)
    elif node.op_type == "MatMul":
        a, b = _svd(weight, ratio)
        first_w, second_w = a, b
        first = helper.make_node("MatMul", [node.input[0], a_name], [mid], f"{name}.low_rank")
        second = helper.make_node("MatMul", [mid, b_name], list(node.output), name)
    elif node.op_type == "Gemm":
        if attrs.get("transA", 0):
            raise PolicyError(f"layer {name!r}: rank is not supported for Gemm with transA")
        trans_b = attrs.get("transB", 0)
        a, b = _svd(weight.T if trans_b else weight, ratio)
        first_w, second_w = a, (b.T if trans_b else b)
        first = helper.make_node("MatMul", [node.input[0], a_name], [mid], f"{name}.low_rank")
        second = helper.make_node("Gemm", [mid, b_name] + list(node.input[2:]),
                                  list(node.output), name)
        second.attribute.extend(node.attribute)
    else:
        raise PolicyError(f"layer {name!r}: rank is not supported for {node.op_type} layers")
    model.graph.initializer.extend([
        numpy_helper.from_array(first_w.astype(weight.dtype), a_name),
        numpy_helper.from_array(np.ascontiguousarray(second_w).astype(weight.dtype), b_name)])
    return [first, second]


def _svd(matrix: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """A (m x r), B (r x n) with A B the best rank-r approximation; the singular values
    are split evenly so both factors have similar scales."""
    u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
    r = rank_for(len(s), ratio)
    root = np.sqrt(s[:r])
    return u[:, :r] * root, root[:, None] * vt[:r]
