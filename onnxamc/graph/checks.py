"""What a model must be before onnxamc works on it: one-line errors at load, never an
onnxruntime or quantizer traceback halfway through a command.

- `admit(model)` (the load path calls it on every model read): opsets older than the
  quantizer's per-channel DequantizeLinear (13) are upgraded by onnx's version
  converter, or refused naming the opset.
- `check_runnable(model, limits)`: the IR version, the opsets and the op domains are
  within what the installed onnxruntime loads (`limits`, read off the runtime by
  runtime/limits.py), naming the first op of a domain it does not know
  (`com.example:FancyOp`).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from onnxamc.errors import ModelError, first_line

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


def admit(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model at opset 13 or newer (upgraded by onnx's version converter), or a
    one-line ModelError naming its opset."""
    opset = standard_opset(model)
    if opset >= MIN_OPSET or not model.graph.node:
        return model
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
        if upgraded.ir_version < MIN_IR_VERSION:  # IR 3 lists weights among the inputs
            weights = {i.name for i in upgraded.graph.initializer}
            inputs = [v for v in upgraded.graph.input if v.name not in weights]
            del upgraded.graph.input[:]
            upgraded.graph.input.extend(inputs)
            upgraded.ir_version = MIN_IR_VERSION
        onnx.checker.check_model(upgraded)
    except Exception as exc:
        raise ModelError(f"the model's opset {opset} is older than onnxamc's quantizer "
                         f"supports ({MIN_OPSET}) and onnx's version converter cannot "
                         f"upgrade it ({first_line(exc)}); re-export it at opset "
                         f"{MIN_OPSET} or newer") from None
    return upgraded


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
