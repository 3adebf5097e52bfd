"""What onnxruntime made of a QDQ model, read off the graph it runs.

Structural and load-independent: onnxruntime's optimized graph
(`SessionOptions.optimized_model_filepath`) shows which ops became integer kernels
(QLinearConv, QGemm, QLinearAdd...) and which float ops still sit between a
DequantizeLinear and a QuantizeLinear (float islands: two conversions, no gain).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx

# ops that carry Q/DQ but are no float compute
CONVERSIONS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
INTEGER_PREFIXES = ("QLinear", "QGemm", "MatMulInteger", "ConvInteger", "DynamicQuantize",
                    "MatMulIntegerToFloat", "MatMulNBits", "GatherBlockQuantized", "QAttention",
                    "QEmbedLayerNormalization")
# ops that carry int8 tensors unchanged once onnxruntime drops their Q/DQ pair
DATA_MOVEMENT = ("MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Resize",
                 "Slice", "Split", "Gather", "Concat", "Pad", "Identity")


@dataclass
class FusionReport:
    """What onnxruntime made of a QDQ model (read off its optimized graph)."""

    integer_ops: dict[str, int] = field(default_factory=dict)
    # ops we asked to quantize that stayed float between a DequantizeLinear and a
    # QuantizeLinear: wrapped for nothing (the placement must leave this empty)
    unfused: list[str] = field(default_factory=list)
    # float ops between two int8 regions (region borders on both sides)
    between_regions: list[str] = field(default_factory=list)
    activation_conversions: int = 0  # QuantizeLinear + DequantizeLinear left on activations

    def summary(self) -> str:
        fused = ", ".join(f"{n} {k}" for k, n in sorted(self.integer_ops.items())) or "none"
        return (f"integer ops: {fused}; {len(self.unfused)} quantized ops left float; "
                f"{len(self.between_regions)} float ops between int8 regions; "
                f"{self.activation_conversions} activation conversions")


def optimized_graph(model: onnx.ModelProto, level: str = "extended") -> onnx.ModelProto:
    """The graph onnxruntime's CPU provider runs (QDQ fusions happen at 'extended')."""
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    with tempfile.TemporaryDirectory(prefix="onnxamc-opt-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[level]
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), options,
                             providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def fusion_report(model: onnx.ModelProto, quantized: set[str] | frozenset = frozenset()
                  ) -> FusionReport:
    """Integer kernels, float ops left between conversions and activation conversions of
    `model` on onnxruntime's CPU provider. `quantized`: the nodes the quantizer was
    asked to quantize (onnxruntime keeps the names of the nodes it does not fuse)."""
    graph = optimized_graph(model).graph
    constants = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def dequantized(name: str) -> bool:  # an activation coming out of a DequantizeLinear
        node = producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear" \
            and node.input[0] not in constants and node.input[0] in producer

    report = FusionReport()
    for node in graph.node:
        if node.op_type.startswith(INTEGER_PREFIXES):
            report.integer_ops[node.op_type] = report.integer_ops.get(node.op_type, 0) + 1
        elif node.op_type in CONVERSIONS:
            report.activation_conversions += node.input[0] not in constants
        elif any(dequantized(i) for i in node.input):
            if node.name in quantized:
                report.unfused.append(f"{node.op_type} {node.name}")
            elif node.op_type not in DATA_MOVEMENT and any(
                    c.op_type == "QuantizeLinear" for o in node.output for c in consumers.get(o, [])):
                report.between_regions.append(f"{node.op_type} {node.name}")
    return report
