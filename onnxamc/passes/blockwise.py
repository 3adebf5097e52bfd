"""Per-block weight quantization (int4 or int8), weight-only, as opset-21 blocked QDQ.

onnxruntime's quantize_static only blocks rank-2 weights with one block size for the
whole model, so this is graph code: the weight becomes a signed integer tensor of the
same shape plus one float scale per `block_size` input channels (per output channel and
kernel position; along the output channels for depthwise convs), expanded by a blocked
DequantizeLinear in front of the layer.
Activations stay float.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.graph.model import copy_model
from onnxamc.passes.graph_edit import (ensure_opset, input_axis, int_tensor,
                                       nodes_by_name, output_axis, replace_weight, unique,
                                       weight_of)


def blockwise_quantize(weight: np.ndarray, bits: int, block: int, axis: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-block rounding: (integers of weight's shape, scales with
    ceil(D/block) along `axis`)."""
    qmax = 2 ** (bits - 1) - 1
    moved = np.moveaxis(weight, axis, 0)
    d = moved.shape[0]
    blocks = -(-d // block)
    padded = np.zeros((blocks * block, *moved.shape[1:]), dtype=np.float32)
    padded[:d] = moved
    grouped = padded.reshape(blocks, block, *moved.shape[1:])
    scale = np.abs(grouped).max(axis=1) / qmax
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(grouped / scale[:, None]), -qmax - 1, qmax)
    q = q.reshape(blocks * block, *moved.shape[1:])[:d]
    return np.moveaxis(q, 0, axis).astype(np.int8), np.moveaxis(scale, 0, axis)


def block_axis(node: onnx.NodeProto, shape: tuple[int, ...], block: int) -> int:
    """Blocks run along the input channels, unless there are fewer of them than a block
    (depthwise convs: one per group) and more output channels: then along those, so a
    scale still covers `block` weights rather than one."""
    axis_in, axis_out = input_axis(node), output_axis(node)
    if shape[axis_in] < block and shape[axis_out] > shape[axis_in]:
        return axis_out
    return axis_in


def quantize_blockwise(model: onnx.ModelProto, layers: dict[str, tuple[int, int]]) -> onnx.ModelProto:
    """`layers`: {layer name: (bits, block_size)}."""
    if not layers:
        return model
    out = ensure_opset(copy_model(model))
    nodes = nodes_by_name(out)
    for name, (bits, block) in layers.items():
        node = nodes[name]
        weight = weight_of(out, node)
        axis = block_axis(node, weight.shape, block)
        q, scale = blockwise_quantize(weight, bits, block, axis)
        q_name, s_name = unique(out, f"{name}.weight_q{bits}"), unique(out, f"{name}.weight_scale")
        w_name = unique(out, f"{name}.weight_dq")
        dq = helper.make_node("DequantizeLinear", [q_name, s_name], [w_name], axis=axis,
                              block_size=block, name=unique(out, f"{name}.dequantize"))
        replace_weight(out, node, [int_tensor(q_name, q, bits, True),
                                   numpy_helper.from_array(scale, s_name)], [dq], w_name)
    return out
