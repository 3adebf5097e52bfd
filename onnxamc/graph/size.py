"""Honest size accounting: the bytes that store each layer's weight, and bits per weight.

A layer's weight storage is every initializer on the constant path into its weight
input: quantized data, scales, zero points, codebooks, indices (through
DequantizeLinear, Cast, Gather, Concat, Reshape...). Effective bits per weight =
8 x those bytes / logical weight elements, so scales and codebooks are paid for.
Reads the graph only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxamc.graph.layers import find_layers, node_names
from onnxamc.graph.model import initializer_map
from onnxamc.graph.topology import Topology

# Ops through which a weight is reconstructed from stored constants.
STORAGE_OPS = ("DequantizeLinear", "Cast", "Gather", "Concat", "Reshape", "Transpose",
               "Identity", "Unsqueeze", "Squeeze", "Mul", "Slice")
PACKED_BITS = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4,
               onnx.TensorProto.FLOAT4E2M1: 4}


@dataclass(frozen=True)
class LayerStorage:
    name: str
    weights: int  # logical weight elements
    stored_bytes: int  # bytes of every initializer that stores the weight

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.stored_bytes / self.weights if self.weights else 0.0


def tensor_bytes(tensor: onnx.TensorProto) -> int:
    """Payload bytes of an initializer (4-bit types packed two per byte)."""
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    if tensor.data_type in PACKED_BITS:
        return (count * PACKED_BITS[tensor.data_type] + 7) // 8
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return count * itemsize


def weight_storage(model: onnx.ModelProto) -> list[LayerStorage]:
    """Storage of every layer's weight, in layer-table order."""
    inits = initializer_map(model)
    producers = Topology(model)
    nodes = dict(zip(node_names(model), model.graph.node))
    out = []
    for layer in find_layers(model):
        node = nodes[layer.name]
        storage_inputs = node.input[1:4] if node.op_type == "MatMulNBits" else node.input[1:2]
        found: set[str] = set()
        for name in storage_inputs:
            _collect(name, inits, producers, found)
        weights = layer.params - (int(np.prod(inits[layer.bias].dims)) if layer.bias in inits else 0)
        out.append(LayerStorage(layer.name, weights, sum(tensor_bytes(inits[n]) for n in found)))
    return out


def bits_per_weight(storage: list[LayerStorage]) -> float:
    """Model-wide effective bits per weight over all layers."""
    weights = sum(s.weights for s in storage)
    return 8.0 * sum(s.stored_bytes for s in storage) / weights if weights else 0.0


def layer_bits_per_weight(model: onnx.ModelProto, layer: str) -> float:
    """Effective bits of one layer of the original model, counting the parts a
    channel-wise mix split it into (`layer.mix8`, `layer.mix4`)."""
    parts = [s for s in weight_storage(model)
             if s.name == layer or s.name.startswith(layer + ".mix")]
    return bits_per_weight(parts)


def _collect(name: str, inits: dict, producers: Topology, found: set[str], depth: int = 0) -> None:
    if not name or depth > 12:
        return
    if name in inits:
        found.add(name)
        return
    node = producers.producer_node(name)
    if node is None or node.op_type not in STORAGE_OPS:
        return
    for source in node.input:
        _collect(source, inits, producers, found, depth + 1)

