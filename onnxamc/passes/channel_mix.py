"""Channel-wise bit mixing inside one layer: the output channels most hurt by 4-bit
rounding stay 8-bit, the rest go 4-bit.

Realised in the graph so the file really shrinks: the layer is split into two layers
`<name>.mix8` and `<name>.mix4` on the same input (each then quantized by
quantize_static with its own bits), their outputs are concatenated and a Gather puts
the channels back in the original order. The score of a channel is its squared int4
per-channel rounding error (data-free; the outputs of a channel add its errors up).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.errors import PolicyError
from onnxamc.graph.model import copy_model
from onnxamc.passes.graph_edit import (_attr, drop_unused_initializer,
                                       nodes_by_name, output_axis, unique, weight_of)
from onnxamc.passes.quantize import WeightSpec

HIGH, LOW = ".mix8", ".mix4"


def int4_channel_error(weight: np.ndarray, axis: int) -> np.ndarray:
    """Squared error of symmetric per-channel int4 rounding, one value per channel."""
    moved = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
    scale = np.abs(moved).max(axis=1, keepdims=True) / 7
    scale = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.round(moved / scale), -8, 7) * scale
    return ((moved - q) ** 2).sum(axis=1)


def split_channels(model: onnx.ModelProto, layers: dict[str, float]
                   ) -> tuple[onnx.ModelProto, dict[str, WeightSpec]]:
    """Split each layer (`{name: share of channels at 4 bits}`) into its 8- and 4-bit
    parts; returns the model and the static quantization spec of the parts."""
    out = copy_model(model)
    nodes = nodes_by_name(out)
    specs: dict[str, WeightSpec] = {}
    for name, ratio in layers.items():
        node = nodes[name]
        if node.op_type == "Conv" and _attr(node, "group", 1) != 1:
            raise PolicyError(f"layer {name!r}: channel mixing needs a Conv with group=1")
        weight = weight_of(out, node)
        axis = output_axis(node)
        channels = weight.shape[axis]
        n_low = min(channels - 1, max(1, int(round(ratio * channels))))
        order = np.argsort(int4_channel_error(weight, axis), kind="stable")
        low, high = np.sort(order[:n_low]), np.sort(order[n_low:])
        _split(out, node, weight, axis, high, low)
        specs[name + HIGH], specs[name + LOW] = WeightSpec(8), WeightSpec(4)
    return out, specs


def _split(model, node, weight, axis, high, low) -> None:
    inits = {i.name: i for i in model.graph.initializer}
    bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    bias = numpy_helper.to_array(inits[bias_name]) if bias_name in inits else None
    index = list(model.graph.node).index(node)
    parts = []
    for suffix, channels in ((HIGH, high), (LOW, low)):
        part = onnx.NodeProto()
        part.CopyFrom(node)
        part.name = node.name + suffix
        w_name = unique(model, f"{node.name}{suffix}.weight")
        model.graph.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(np.take(weight, channels, axis=axis)), w_name))
        part.input[1] = w_name
        if bias is not None:
            b_name = unique(model, f"{node.name}{suffix}.bias")
            model.graph.initializer.append(numpy_helper.from_array(bias[channels], b_name))
            part.input[2] = b_name
        part.output[0] = unique(model, f"{node.name}{suffix}.out")
        parts.append(part)
    channel_axis = 1 if node.op_type in ("Conv", "ConvTranspose") else -1
    joined = unique(model, f"{node.name}.mix_concat")
    perm_name = unique(model, f"{node.name}.mix_order")
    restore = np.argsort(np.concatenate([high, low])).astype(np.int32)
    model.graph.initializer.append(numpy_helper.from_array(restore, perm_name))
    tail = [helper.make_node("Concat", [p.output[0] for p in parts], [joined],
                             axis=channel_axis, name=node.name + ".mix_concat"),
            helper.make_node("Gather", [joined, perm_name], [node.output[0]], axis=channel_axis,
                             name=node.name + ".mix_restore")]
    old_inputs = list(node.input[1:])
    model.graph.node.remove(node)
    for offset, new in enumerate(parts + tail):
        model.graph.node.insert(index + offset, new)
    for name in old_inputs:
        if name:
            drop_unused_initializer(model, name)
