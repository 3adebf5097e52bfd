"""Weight-only 4/8-bit MatMul and Gemm through onnxruntime's MatMulNBits.

Built on `MatMulNBitsQuantizer` (QOperator format: the MatMul becomes a MatMulNBits
contrib op with blocked weights). The quantizer takes MatMul only, so a Gemm layer is
first rewritten as MatMul (+ Add for its bias) under the same name.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.passes.graph_edit import (drop_unused_initializer, fix_ir_version, named_copy,
                                       nodes_by_name, restore_names, unique, weight_of,
                                       _attr)
from onnxamc.passes.quantize import _quiet_root_logger


def quantize_matmul_nbits(model: onnx.ModelProto,
                          layers: dict[str, tuple[int, int, int]]) -> onnx.ModelProto:
    """`layers`: {layer name: (bits, block_size, accuracy_level)}; 0 = onnxruntime default."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if not layers:
        return model
    out = named_copy(model)
    nodes = nodes_by_name(out)
    for name in layers:
        if nodes[name].op_type == "Gemm":
            gemm_to_matmul(out, nodes[name])
    groups: dict[tuple[int, int, int], list[str]] = defaultdict(list)
    for name, config in layers.items():
        groups[config].append(name)
    for (bits, block, level), names in groups.items():
        with _quiet_root_logger():
            quantizer = MatMulNBitsQuantizer(out, bits=bits, block_size=block, is_symmetric=True,
                                             accuracy_level=level or None,
                                             nodes_to_include=names)
            quantizer.process()
        out = restore_names(quantizer.model.model, names, f"_Q{bits}")
    return fix_ir_version(out)


def gemm_to_matmul(model: onnx.ModelProto, node: onnx.NodeProto) -> None:
    """Rewrite a Gemm (alpha = beta = 1, no transA) in place as MatMul + Add."""
    if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
        raise ValueError(f"layer {node.name!r}: only Gemm with alpha=beta=1 and no transA "
                         "can become MatMulNBits")
    weight = weight_of(model, node)
    if _attr(node, "transB", 0):
        weight = weight.T
    w_name = unique(model, f"{node.name}.weight_kn")
    model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), w_name))
    old_weight = node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    y = node.output[0]
    index = list(model.graph.node).index(node)
    matmul_out = unique(model, f"{node.name}.matmul") if bias else y
    matmul = helper.make_node("MatMul", [node.input[0], w_name], [matmul_out], name=node.name)
    model.graph.node.remove(node)
    model.graph.node.insert(index, matmul)
    if bias:
        model.graph.node.insert(index + 1, helper.make_node(
            "Add", [matmul_out, bias], [y], name=unique(model, f"{node.name}.bias_add")))
    drop_unused_initializer(model, old_weight)
