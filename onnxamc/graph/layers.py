"""The layer table: every Conv, ConvTranspose, Gemm and MatMul with a constant weight.

Each Layer carries the AMC state features (He et al. 2018, section 3.2): index, op type,
channels in and out, kernel, stride, groups, feature-map size, parameters and MACs.
MACs are per sample (batch 1); dynamic dimensions other than the batch count as 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.graph.model import initializer_map
from onnxamc.graph.shapes import known_shapes
from onnxamc.graph.topology import Topology

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Quantized forms of the layer ops (dynamic int8, MatMulNBits): still layers for the cost
# model and size accounting, never targets of a policy.
QUANTIZED_LAYER_OPS = {"ConvInteger": "Conv", "MatMulInteger": "MatMul", "MatMulNBits": "MatMul"}


@dataclass
class Layer:
    index: int
    name: str
    op_type: str
    weight: str  # initializer holding the (possibly quantized) weight
    bias: str | None
    c_in: int
    c_out: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    groups: int
    in_size: tuple[int, ...]  # spatial size of the input feature map ((), for Gemm/MatMul)
    out_size: tuple[int, ...]
    params: int
    macs: int
    weight_dtype: str = "float32"
    weight_entropy: float | None = None  # bits, of a 256-bin histogram of the weight values
    activation_sparsity: float | None = None  # zeros in the layer's input, where data is given
    notes: list[str] = field(default_factory=list)

    @property
    def depthwise(self) -> bool:
        return self.op_type == "Conv" and self.groups > 1 and self.groups == self.c_in

    def features(self) -> list[float]:
        """The raw AMC state vector (normalise across layers before feeding an agent)."""
        return [float(self.index), float(LAYER_OPS.index(QUANTIZED_LAYER_OPS.get(self.op_type, self.op_type))), float(self.c_in),
                float(self.c_out), float(np.prod(self.kernel or (1,))),
                float(self.stride[0] if self.stride else 1), float(self.groups),
                float(np.prod(self.in_size or (1,))), float(self.params), float(self.macs)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernel"], d["stride"] = list(self.kernel), list(self.stride)
        d["in_size"], d["out_size"] = list(self.in_size), list(self.out_size)
        return d


def node_names(model: onnx.ModelProto) -> list[str]:
    """Unique, stable names for all nodes: their own name, else op_type + position."""
    seen: dict[str, int] = {}
    names = []
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        if name in seen:
            name = f"{name}_{i}"
        seen[name] = i
        names.append(name)
    return names


def find_layers(model: onnx.ModelProto) -> list[Layer]:
    """All compressible layers, in graph order, with their features."""
    inits = initializer_map(model)
    shapes = known_shapes(model)
    producers = Topology(model)
    layers: list[Layer] = []
    for name, node in zip(node_names(model), model.graph.node):
        if (node.op_type not in LAYER_OPS and node.op_type not in QUANTIZED_LAYER_OPS) \
                or len(node.input) < 2:
            continue
        weight = _constant_source(node.input[1], inits, producers)
        if weight is None:
            continue  # activation x activation MatMul (attention scores): not a layer
        w_init = inits[weight]
        w_shape = tuple(int(d) for d in w_init.dims)
        if node.op_type == "MatMulNBits":  # packed blocks: the logical weight is (K, N)
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            w_shape = (int(attrs["K"]), int(attrs["N"]))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] \
            and node.op_type in LAYER_OPS else None  # quantized ops: input 2 is not a bias
        bias = _constant_source(bias, inits, producers) if bias else None
        x_shape = shapes.get(node.input[0])
        y_shape = shapes.get(node.output[0])
        layer = _describe(len(layers), name, node, weight, bias, w_shape, x_shape, y_shape, inits)
        if layer is not None:
            layer.weight_dtype = str(helper.tensor_dtype_to_np_dtype(w_init.data_type))
            layer.weight_entropy = weight_entropy(w_init)
            layers.append(layer)
    return layers


def weight_entropy(init: onnx.TensorProto, bins: int = 256) -> float:
    """Shannon entropy (bits) of the weight values' histogram: how much a layer's weights
    carry, a state feature that hints how far they can be quantized or shared."""
    values = numpy_helper.to_array(init).astype(np.float32, copy=False).ravel()
    if values.size == 0:
        return 0.0
    counts, _ = np.histogram(values, bins=bins)
    p = counts[counts > 0] / values.size
    return float(-(p * np.log2(p)).sum())


def _constant_source(name: str, inits: dict, topology: Topology) -> str | None:
    """The initializer behind a tensor, looking through DequantizeLinear / Cast / Transpose."""
    seen = 0
    while name not in inits:
        node = topology.producer_node(name)
        if node is None or node.op_type not in ("DequantizeLinear", "Cast", "Transpose",
                                                 "Identity", "Gather") or seen > 4:
            return None
        # Gather: a shared-weight codebook indexed by an index tensor of the weight's shape
        name, seen = node.input[1 if node.op_type == "Gather" else 0], seen + 1
    return name


def _describe(index, name, node, weight, bias, w_shape, x_shape, y_shape, inits) -> Layer | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    bias_params = int(np.prod(inits[bias].dims)) if bias and bias in inits else 0
    params = int(np.prod(w_shape)) + bias_params
    if QUANTIZED_LAYER_OPS.get(node.op_type, node.op_type) in ("Conv", "ConvTranspose"):
        if len(w_shape) < 3:
            return None
        groups = int(attrs.get("group", 1))
        kernel = tuple(w_shape[2:])
        stride = tuple(attrs.get("strides", [1] * len(kernel)))
        in_size = _spatial(x_shape, len(kernel))
        out_size = _spatial(y_shape, len(kernel))
        if node.op_type != "ConvTranspose":
            c_out, c_in = w_shape[0], w_shape[1] * groups
            macs = _prod(out_size) * c_out * w_shape[1] * _prod(kernel)
        else:  # ConvTranspose weight: (c_in, c_out / groups, k...)
            c_in, c_out = w_shape[0], w_shape[1] * groups
            macs = _prod(in_size) * c_in * w_shape[1] * _prod(kernel)
        return Layer(index, name, node.op_type, weight, bias, c_in, c_out, kernel, stride,
                     groups, in_size, out_size, params, int(macs))
    if len(w_shape) != 2:
        return None  # batched constant MatMul weights: not a layer we compress
    if node.op_type == "Gemm" and attrs.get("transB", 0):
        c_out, c_in = w_shape
    else:
        c_in, c_out = w_shape
    rows = 1
    if x_shape is not None and len(x_shape) > 2:  # MatMul over (batch, tokens, ..., c_in)
        rows = _prod(d or 1 for d in x_shape[1:-1])
    return Layer(index, name, node.op_type, weight, bias, c_in, c_out, (), (), 1, (), (),
                 params, int(rows * c_in * c_out))


def _spatial(shape, rank: int) -> tuple[int, ...]:
    if shape is None or len(shape) < rank:
        return ()
    return tuple(d or 1 for d in shape[-rank:])


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out
