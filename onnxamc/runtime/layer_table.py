"""Per-layer latency table (HAQ style): each distinct layer measured once per target.

A layer is cut out of the model as a small ONNX model and timed on the target. The cut
takes in what a runtime fuses with the layer in the full model: the quantize/dequantize
neighbours of a quantized layer, and the chain of activations and the residual Add that
follow it (each such node belongs to the first layer that reaches it). Its key is the structure only, not the weight values:
op types, attributes, input and weight shapes and dtypes, so a pruned layer with 24
channels is a new entry while the same layer in another candidate is a cache hit. The
model's latency is predicted as the sum over its layers; the rest of the graph (pooling,
reshapes, concatenations) is not in the sum, which is why `onnxamc bench` reports
the prediction error against end-to-end measurement next to every prediction. Every
timed call also pays the runtime's fixed cost per call (a few microseconds in
onnxruntime); it is measured once on a one-op model and counted once per model, not once
per layer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from onnx.utils import Extractor

from onnxamc.graph import find_layers, node_names
from onnxamc.runtime.target import Target

TABLE_CACHE = Path("~/.cache/onnxamc/layer-tables")
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear")
FOLLOW_OPS = QUANT_OPS + ("Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid",
                          "Add", "BatchNormalization")
FOLLOW_STEPS = 6
OVERHEAD_KEY = "call-overhead"


@dataclass
class Prediction:
    total_ms: float
    layers: dict[str, float] = field(default_factory=dict)  # layer name -> ms, overhead off
    measured_now: int = 0  # entries that were not in the table yet
    overhead_ms: float = 0.0  # the runtime's fixed cost of one call, counted once

    def error(self, measured_ms: float) -> float:
        """Relative error of the prediction against an end-to-end measurement."""
        return self.total_ms / measured_ms - 1.0

    def to_dict(self) -> dict:
        return {"predicted_ms": self.total_ms, "layers": self.layers,
                "measured_now": self.measured_now, "overhead_ms": self.overhead_ms}


class LayerTable:
    """Measured layer latencies for one target, in a JSON file kept across runs."""

    def __init__(self, target: Target, path: str | Path | None = None, runs: int = 20,
                 warmup: int = 5):
        self.target = target
        self.path = Path(path).expanduser() if path else \
            (TABLE_CACHE / f"{target.name}.json").expanduser()
        self.runs, self.warmup = runs, warmup
        self.entries: dict[str, float] = {}
        if self.path.exists():
            self.entries = json.loads(self.path.read_text()).get("entries", {})

    def predict(self, model: onnx.ModelProto) -> Prediction:
        """Sum of the model's layer latencies, measuring the ones not in the table."""
        model = onnx.shape_inference.infer_shapes(model)
        prediction = Prediction(0.0)
        if OVERHEAD_KEY not in self.entries:
            self.entries[OVERHEAD_KEY] = self._measure(identity_model())
            prediction.measured_now += 1
        overhead = prediction.overhead_ms = self.entries[OVERHEAD_KEY]
        for name, sub in layer_models(model):
            key = layer_key(sub)
            if key not in self.entries:
                self.entries[key] = self._measure(sub)
                prediction.measured_now += 1
            prediction.layers[name] = max(0.0, self.entries[key] - overhead)
        prediction.total_ms = float(sum(prediction.layers.values())) + overhead
        if prediction.measured_now:
            self.save()
        return prediction

    def _measure(self, sub: onnx.ModelProto) -> float:
        from onnxamc.runtime.measure import TargetMeter

        meter = TargetMeter(self.target)
        feed = random_feed(sub)
        return meter.time([meter.prepare(sub, feed)], feed, self.warmup, self.runs)[0].median_ms

    def save(self) -> None:
        from onnxamc.files import write_text

        write_text(self.path, json.dumps({"target": self.target.name, "entries": self.entries},
                                         indent=1, sort_keys=True))


def layer_models(model: onnx.ModelProto):
    """(layer name, the layer cut out as a model) for every compressible layer."""
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    nodes = dict(zip(node_names(model), model.graph.node))
    constants = {i.name for i in model.graph.initializer} | \
        {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    extractor = Extractor(model)
    claimed: set[int] = set()
    for layer in find_layers(model):
        node = nodes[layer.name]
        inputs = [_input_boundary(node.input[0], producers)]
        output = node.output[0]
        for _ in range(FOLLOW_STEPS):
            after = consumers.get(output, [])
            if len(after) != 1 or after[0].op_type not in FOLLOW_OPS or id(after[0]) in claimed:
                break
            claimed.add(id(after[0]))
            inputs += _side_inputs(after[0], output, producers, constants)
            output = after[0].output[0]
        sub = extractor.extract_model(list(dict.fromkeys(inputs)), [output])
        yield layer.name, _static_batch(sub)


def _side_inputs(node, chain: str, producers: dict, constants: set) -> list[str]:
    """Inputs of a followed node other than the chain itself that are activations (the
    residual branch of an Add): they become inputs of the cut-out model."""
    found = []
    for name in node.input:
        if not name or name == chain or name in constants:
            continue
        producer = producers.get(name)
        if producer is not None and producer.op_type == "DequantizeLinear" \
                and producer.input[0] in constants:
            continue  # a quantized constant: the extractor takes it in
        found.append(_input_boundary(name, producers))
    return found


def _input_boundary(name: str, producers: dict) -> str:
    """Take in the DequantizeLinear(QuantizeLinear(x)) pair before a quantized layer."""
    dq = producers.get(name)
    if dq is not None and dq.op_type == "DequantizeLinear":
        q = producers.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            return q.input[0]
    return name


def _static_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    for tensor in [*model.graph.input, *model.graph.output]:
        for d in tensor.type.tensor_type.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.dim_value = 1
    return model


def layer_key(sub: onnx.ModelProto) -> str:
    """The structure that decides a layer's latency; the weight values do not."""
    def shape(t):
        return [d.dim_value for d in t.type.tensor_type.shape.dim]
    parts = {
        "nodes": [[n.op_type, n.domain, [helper.printable_attribute(a) for a in n.attribute]]
                  for n in sub.graph.node],
        "inputs": [[shape(i), i.type.tensor_type.elem_type] for i in sub.graph.input],
        "weights": [[list(i.dims), i.data_type] for i in sub.graph.initializer],
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def identity_model() -> onnx.ModelProto:
    """The smallest model a runtime can run: its latency is the cost of one call."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "call", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def random_feed(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    inits = {i.name for i in model.graph.initializer}
    feed = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        dims = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
        feed[inp.name] = rng.random(dims).astype(dtype)
    return feed
