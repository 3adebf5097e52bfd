"""An independent MAC count: the shapes onnxruntime actually produces, not onnx's
shape inference. Every Conv / ConvTranspose / Gemm / MatMul whose weight does not depend
on a model input is counted from the weight's shape and the tensor shapes of one real
run (per sample: the feed has batch 1)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def input_dependent(model: onnx.ModelProto) -> set[str]:
    """Names of the tensors computed from a model input (the rest are constants)."""
    inits = {i.name for i in model.graph.initializer}
    live = {v.name for v in model.graph.input if v.name not in inits}
    for node in model.graph.node:  # graph order is topological
        if any(i in live for i in node.input):
            live.update(node.output)
    return live


def counted_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    live = input_dependent(model)
    return [n for n in model.graph.node if n.op_type in COUNTED and len(n.input) > 1
            and n.input[0] in live and n.input[1] not in live]


def measured_macs(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> int:
    """MACs per sample from the tensor shapes of one onnxruntime run on `feed`."""
    nodes = counted_nodes(model)
    wanted = []
    for node in nodes:
        wanted += [node.input[0], node.input[1], node.output[0]]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in have:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shapes = dict(zip(names, (np.shape(a) for a in session.run(None, feed))))
    return sum(node_macs(n, shapes) for n in nodes)


def node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    """One sample's MACs: the first axis of activations is the batch."""
    x, w, y = shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]]
    if node.op_type == "Conv":
        return int(np.prod(y[2:])) * w[0] * int(np.prod(w[1:]))
    if node.op_type == "ConvTranspose":
        return int(np.prod(x[2:])) * w[0] * int(np.prod(w[1:]))
    if len(w) != 2:
        return 0  # batched constant MatMul: not a layer
    rows = 1 if node.op_type == "Gemm" or len(x) <= 2 else int(np.prod(x[1:-1]))
    return rows * w[0] * w[1]
