"""Graphs built with onnx.helper for what exports rarely show but converted files do:
weights as `Constant` nodes (Paddle, TF), explicit `Pad` before convolutions (TF 'SAME'
padding, its pads computed from the input shape), a depthwise convolution on the model
input, weights behind `DequantizeLinear`, shared initializers behind `Identity`, and an
old opset. Each builder returns a checked ModelProto; weights are seeded random."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


class Graph:
    """A tiny graph builder: nodes, initializers or Constant-node weights, fresh names."""

    def __init__(self, constants_as_nodes: bool = False, seed: int = 0):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.constants_as_nodes = constants_as_nodes
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, value: np.ndarray, stem: str = "w", as_node: bool | None = None) -> str:
        name = self.name(stem)
        tensor = numpy_helper.from_array(np.asarray(value), name)
        if self.constants_as_nodes if as_node is None else as_node:
            self.nodes.append(helper.make_node("Constant", [], [name], value=tensor,
                                               name=name + "_const"))
        else:
            self.initializers.append(tensor)
        return name

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, **attrs) -> str:
        out = self.name(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_node", **attrs))
        return out

    def weight(self, *shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) or 1
        return (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, stride: int = 1, pad: int | None = None,
             groups: int = 1, bias: bool = True) -> str:
        inputs = [x, self.const(self.weight(c_out, c_in // groups, k, k))]
        if bias:
            inputs.append(self.const(self.weight(c_out) * 0.1, "b"))
        p = k // 2 if pad is None else pad
        return self.op("Conv", inputs, "conv", kernel_shape=[k, k], strides=[stride, stride],
                       pads=[p] * 4, group=groups)

    def batch_norm(self, x: str, c: int) -> str:
        scale, shift = 1 + 0.1 * self.weight(c), 0.1 * self.weight(c)
        mean, var = 0.1 * self.weight(c), 1 + np.abs(0.1 * self.weight(c))
        return self.op("BatchNormalization", [x] + [self.const(v, "bn") for v in (scale, shift, mean, var)],
                       "bn", epsilon=1e-5)

    def gemm_head(self, x: str, c: int, classes: int = 10) -> str:
        pooled = self.op("GlobalAveragePool", [x], "pool")
        flat = self.op("Flatten", [pooled], "flat", axis=1)
        return self.op("Gemm", [flat, self.const(self.weight(classes, c)), self.const(self.weight(classes), "b")],
                       "logits", transB=1)

    def model(self, inputs: list[onnx.ValueInfoProto], output: str, opset: int,
              name: str, classes: int = 10) -> onnx.ModelProto:
        batch = inputs[0].type.tensor_type.shape.dim[0]
        out = helper.make_tensor_value_info(output, FLOAT, [batch.dim_value or batch.dim_param,
                                                            classes])
        graph = helper.make_graph(self.nodes, name, inputs, [out],
                                  self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="onnxamc-zoo")
        model.ir_version = min(model.ir_version, 7 if opset <= 12 else 8)
        onnx.checker.check_model(model)
        return model


def _image(name: str = "x", c: int = 3, h: int | str = "height", w: int | str = "width",
           batch: int | str = "N") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, FLOAT, [batch, c, h, w])


def paddle_constant_weights() -> onnx.ModelProto:
    """Opset 11, every weight a Constant node (Paddle2ONNX style), a weight behind
    Identity, a hard-swish (HardSigmoid * x), fc as Reshape + MatMul + Add."""
    g = Graph(constants_as_nodes=True)
    y = g.op("Relu", [g.batch_norm(g.conv("x", 3, 16, stride=2, bias=False), 16)])
    y = g.conv(y, 16, 16, groups=16)
    y = g.op("Mul", [y, g.op("HardSigmoid", [y], alpha=1 / 6, beta=0.5)], "hswish")
    w = g.op("Identity", [g.const(g.weight(32, 16, 1, 1))], "w_identity")
    y = g.op("Relu", [g.op("Conv", [y, w], "conv", kernel_shape=[1, 1])])
    y = g.op("Reshape", [g.op("GlobalAveragePool", [y]), g.const(np.array([0, -1], np.int64), "shape")])
    y = g.op("MatMul", [y, g.const(g.weight(16, 32).T.copy())], "fc")
    y = g.op("Add", [y, g.const(0.1 * g.weight(16), "b")], "logits")
    return g.model([_image(batch="?", h="?", w="?")], y, 11, "paddle_constant_weights", 16)


def _same_pads(g: Graph, x: str, k: int, stride: int) -> str:
    """TF 'SAME' pads computed from the input's shape, as TF converters emit them."""
    hw = g.op("Slice", [g.op("Shape", [x]), g.const(np.array([2], np.int64)),
                        g.const(np.array([4], np.int64))], "hw")
    s, kk = g.const(np.array(stride, np.int64)), g.const(np.array(k, np.int64))
    one = g.const(np.array(1, np.int64))
    out = g.op("Div", [g.op("Add", [hw, g.op("Sub", [s, one])]), s], "out")
    need = g.op("Sub", [g.op("Add", [g.op("Mul", [g.op("Sub", [out, one]), s]), kk]), hw], "need")
    total = g.op("Max", [need, g.const(np.array(0, np.int64))], "total")
    before = g.op("Div", [total, g.const(np.array(2, np.int64))], "before")
    after = g.op("Sub", [total, before], "after")
    zeros = g.const(np.zeros(2, np.int64))
    return g.op("Concat", [zeros, before, zeros, after], "pads", axis=0)


def tf_same_padding() -> onnx.ModelProto:
    """Opset 13, dynamic height and width, explicit Pad nodes before strided convs with
    pads computed through Shape arithmetic, ReLU6 as Clip, a Pad with constant pads."""
    g = Graph()
    six, zero = g.const(np.array(6, np.float32)), g.const(np.array(0, np.float32))
    y = g.op("Pad", ["x", _same_pads(g, "x", 3, 2)], "pad")
    y = g.op("Clip", [g.conv(y, 3, 16, stride=2, pad=0), zero, six], "relu6")
    y = g.op("Pad", [y, _same_pads(g, y, 3, 2)], "pad")
    y = g.op("Clip", [g.conv(y, 16, 16, stride=2, pad=0, groups=16), zero, six], "relu6")
    y = g.op("Relu", [g.conv(y, 16, 24, k=1)])
    y = g.op("Pad", [y, g.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")], "pad")
    y = g.op("Relu", [g.conv(y, 24, 24, pad=0)])
    return g.model([_image(batch=1)], g.gemm_head(y, 24), 13, "tf_same_padding")


def depthwise_on_input() -> onnx.ModelProto:
    """A depthwise convolution with channel multiplier 2 straight on the model input."""
    g = Graph()
    y = g.op("Relu", [g.conv("x", 3, 6, groups=3)])
    y = g.op("Relu", [g.conv(y, 6, 16, k=1)])
    y = g.op("Relu", [g.conv(y, 16, 16, stride=2)])
    return g.model([_image(batch=1, h=32, w=32)], g.gemm_head(y, 16), 17, "depthwise_on_input")


def _dequantized(g: Graph, w: np.ndarray, axis: int | None) -> str:
    reduce = tuple(i for i in range(w.ndim) if i != axis) if axis is not None else None
    scale = (np.abs(w).max(axis=reduce) / 127).astype(np.float32)
    shape = [-1] + [1] * (w.ndim - 1) if axis is not None else []
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    zero = np.zeros_like(scale, dtype=np.int8)
    attrs = {"axis": axis} if axis is not None else {}
    return g.op("DequantizeLinear", [g.const(q, "wq"), g.const(scale, "scale"), g.const(zero, "zp")],
                "w_dq", **attrs)


def dequantized_weights() -> onnx.ModelProto:
    """Opset 13, conv and fc weights stored int8 behind DequantizeLinear (per channel
    and per tensor), activations in float."""
    g = Graph()
    w1 = _dequantized(g, g.weight(16, 3, 3, 3), axis=0)
    y = g.op("Relu", [g.op("Conv", ["x", w1, g.const(0.1 * g.weight(16), "b")], "conv",
                           kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
    w2 = _dequantized(g, g.weight(32, 16, 3, 3), axis=0)
    y = g.op("Relu", [g.op("Conv", [y, w2], "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                           strides=[2, 2])])
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [y])], axis=1)
    w3 = _dequantized(g, g.weight(10, 32), axis=None)
    y = g.op("Gemm", [flat, w3, g.const(0.1 * g.weight(10), "b")], "logits", transB=1)
    return g.model([_image(batch=1, h=16, w=16)], y, 13, "dequantized_weights")


def shared_identity() -> onnx.ModelProto:
    """What the torch exporters emit for identical tensors: one initializer (an all-zero
    bias, a repeated weight) read by several convolutions through Identity nodes."""
    g = Graph()
    zero_bias = g.const(np.zeros(16, np.float32), "zero_bias")
    shared_w = g.const(g.weight(16, 16, 3, 3), "shared_w")
    y = g.op("Relu", [g.op("Conv", ["x", g.const(g.weight(16, 3, 3, 3)),
                                    g.op("Identity", [zero_bias], "bias_id")],
                           "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
    for _ in range(2):
        w = g.op("Identity", [shared_w], "w_id")
        b = g.op("Identity", [zero_bias], "bias_id")
        y = g.op("Relu", [g.op("Add", [y, g.op("Conv", [y, w, b], "conv", kernel_shape=[3, 3],
                                                pads=[1, 1, 1, 1])], "residual")])
    return g.model([_image(batch=1, h=16, w=16)], g.gemm_head(y, 16), 17, "shared_identity")


def opset9_classic() -> onnx.ModelProto:
    """Opset 9 (what old converters wrote): Conv, BatchNormalization, MaxPool, a
    residual Add, Flatten and Gemm; onnxamc upgrades it before quantizing."""
    g = Graph()
    y = g.op("Relu", [g.batch_norm(g.conv("x", 3, 16, bias=False), 16)])
    y = g.op("MaxPool", [y], "pool", kernel_shape=[2, 2], strides=[2, 2])
    z = g.op("Relu", [g.batch_norm(g.conv(y, 16, 16, bias=False), 16)])
    y = g.op("Relu", [g.op("Add", [y, g.batch_norm(g.conv(z, 16, 16, bias=False), 16)])])
    return g.model([_image(batch=1, h=16, w=16)], g.gemm_head(y, 16), 9, "opset9_classic")
