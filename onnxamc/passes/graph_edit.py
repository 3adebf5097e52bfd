"""Small graph edits the weight-storage passes share: find a layer's node and weight,
put a reconstruction subgraph in front of it, raise the opset when a pass needs it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.graph import initializer_map

# IR version onnxruntime 1.31 accepts with opset 21 (onnx 1.23 would write a newer one).
IR_VERSION = 10
BLOCKED_DQ_OPSET = 21  # blocked DequantizeLinear, int4/uint4 types


def nodes_by_name(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {node.name: node for node in model.graph.node}


def weight_of(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray:
    init = initializer_map(model).get(node.input[1])
    if init is None:
        raise ValueError(f"layer {node.name!r}: weight {node.input[1]!r} is not a plain "
                         "initializer (is the layer already compressed?)")
    return numpy_helper.to_array(init)


def output_axis(node: onnx.NodeProto) -> int:
    """The weight axis of output channels: Conv 0, Gemm 0 with transB, else the last."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm" and _attr(node, "transB", 0):
        return 0
    return 1


def input_axis(node: onnx.NodeProto) -> int:
    """The weight axis of input channels (the axis blocks run along)."""
    if node.op_type in ("Conv", "ConvTranspose"):
        return 1 if node.op_type == "Conv" else 0
    return 1 if node.op_type == "Gemm" and _attr(node, "transB", 0) else 0


def replace_weight(model: onnx.ModelProto, node: onnx.NodeProto,
                   initializers: list[onnx.TensorProto], nodes: list[onnx.NodeProto],
                   output: str) -> None:
    """Feed `node` its weight from `output` of a constant subgraph (`nodes` over
    `initializers`), and drop the old weight initializer if nothing else reads it."""
    old = node.input[1]
    model.graph.initializer.extend(initializers)
    for i, new in enumerate(nodes):  # constants only: the front of the graph is in order
        model.graph.node.insert(i, new)
    node.input[1] = output
    drop_unused_initializer(model, old)


def drop_unused_initializer(model: onnx.ModelProto, name: str) -> None:
    if any(name in n.input for n in model.graph.node):
        return
    for i, init in enumerate(model.graph.initializer):
        if init.name == name:
            del model.graph.initializer[i]
            break
    for i, value in enumerate(model.graph.input):
        if value.name == name:
            del model.graph.input[i]
            break


def ensure_opset(model: onnx.ModelProto, opset: int = BLOCKED_DQ_OPSET) -> onnx.ModelProto:
    """The model at `opset` or newer (converted by onnx's version converter), with an IR
    version onnxruntime reads."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= opset:
        return model
    from onnx import version_converter

    out = version_converter.convert_version(model, opset)
    out.ir_version = IR_VERSION
    return out


def fix_ir_version(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.ir_version > IR_VERSION:
        model.ir_version = IR_VERSION
    return model


def unique(model: onnx.ModelProto, base: str) -> str:
    taken = {i.name for i in model.graph.initializer}
    taken.update(o for n in model.graph.node for o in n.output)
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def int_tensor(name: str, values: np.ndarray, bits: int, signed: bool) -> onnx.TensorProto:
    """An INT4/UINT4 (packed) or INT8/UINT8 initializer."""
    kinds = {(4, True): onnx.TensorProto.INT4, (4, False): onnx.TensorProto.UINT4,
             (8, True): onnx.TensorProto.INT8, (8, False): onnx.TensorProto.UINT8}
    kind = kinds[(bits, signed)]
    if bits == 8:
        return numpy_helper.from_array(values.astype(np.int8 if signed else np.uint8), name)
    nibbles = (values.astype(np.int8).ravel().view(np.uint8) & 0x0F)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    tensor = onnx.TensorProto(name=name, data_type=kind, dims=values.shape)
    tensor.raw_data = (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()  # first value low nibble
    return tensor


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def restore_names(model: onnx.ModelProto, names: list[str], suffix: str) -> onnx.ModelProto:
    """Give back the layer name onnxruntime's quantizers changed to `name + suffix`, so
    the layer keeps its name in the compressed model."""
    wanted = {name + suffix: name for name in names}
    for node in model.graph.node:
        if node.name in wanted:
            node.name = wanted[node.name]
    return model


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


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove initializers no node (and no output) uses any more, in place."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
