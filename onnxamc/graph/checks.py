"""What a model must be before onnxamc works on it: one-line errors at load, never an
onnxruntime or quantizer traceback halfway through a command.

- opsets older than the quantizer's per-channel DequantizeLinear (13) are upgraded by
  the front door (graph/normalize.py), or refused naming the opset;
- `check_runnable(model, limits)`: the IR version, the opsets and the op domains are
  within what the installed onnxruntime loads (`limits`, read off the runtime by
  runtime/limits.py), naming the first op of a domain it does not know
  (`com.example:FancyOp`).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from onnxamc.errors import ModelError

MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (axis) arrive in opset 13
MIN_IR_VERSION = 7  # the IR version of opset 13 (weights need not be graph inputs)
STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class RuntimeLimits:
    """What the installed runtime loads: the newest IR version, the newest opset of each
    domain it knows."""

    name: str  # e.g. "onnxruntime 1.31.1"
    ir_version: int
    opsets: dict[str, int]


def check_runnable(model: onnx.ModelProto, limits: RuntimeLimits) -> None:
    """One line naming what the runtime of `limits` cannot load, if anything."""
    advice = "re-export the model with an older exporter, or upgrade onnxruntime"
    if model.ir_version > limits.ir_version:
        raise ModelError(f"the model has IR version {model.ir_version}; {limits.name} loads "
                         f"IR versions up to {limits.ir_version} ({advice})")
    local = {(f.domain, f.name) for f in model.functions}
    for opset in model.opset_import:
        domain = "" if opset.domain in STANDARD_DOMAINS else opset.domain
        newest = limits.opsets.get(domain)
        if newest is not None and opset.version > newest:
            label = f"opset {opset.version}" + (f" of domain {domain}" if domain else "")
            raise ModelError(f"the model uses {label}; {limits.name} runs up to "
                             f"{newest} ({advice})")
    for node in all_nodes(model.graph):
        domain = "" if node.domain in STANDARD_DOMAINS else node.domain
        if domain not in limits.opsets and (node.domain, node.op_type) not in local:
            raise ModelError(f"op {node.domain}:{node.op_type} (node {node.name or '?'}) is "
                             f"not one {limits.name} runs (domains: "
                             f"{', '.join(d or 'ai.onnx' for d in limits.opsets)}); "
                             "replace it or register it with the runtime first")


def standard_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), 0)


def all_nodes(graph: onnx.GraphProto):
    """Every node, those of subgraphs (If, Loop, Scan bodies) included."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from all_nodes(sub)
