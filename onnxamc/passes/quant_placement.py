"""Where static Q/DQ goes: whole regions of ops the target fuses, or nothing.

A region is a connected set of ops (linked through float activation tensors) that all
have an integer form on the runtime (quant_patterns' table) and that holds at least one
layer the policy makes static int8. Inside it every op becomes an integer kernel; only
its borders convert (QuantizeLinear where a float tensor enters, DequantizeLinear where
one leaves). So no float op is ever wrapped in Q/DQ, and a region is kept only when its
layers do enough work per converted element (`MIN_MACS_PER_BORDER_ELEMENT`) to pay for
its borders. Reads the graph only; decides the same way on any machine, under any load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import onnx

from onnxamc.graph import analyze
from onnxamc.graph.model import infer
from onnxamc.passes.quant_patterns import COMPUTE, MIN_MACS_PER_BORDER_ELEMENT, role

FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


@dataclass
class Region:
    """One candidate int8 region and what it costs and saves."""

    nodes: list[str]
    layers: list[str]
    macs: int = 0
    border_elements: int = 0
    pays: bool = False
    reason: str = ""

    @property
    def macs_per_border_element(self) -> float:
        return self.macs / max(self.border_elements, 1)


@dataclass
class Placement:
    regions: list[Region] = field(default_factory=list)

    @property
    def nodes_to_quantize(self) -> list[str]:
        return [n for r in self.regions if r.pays for n in r.nodes]

    @property
    def int8_layers(self) -> list[str]:
        return [n for r in self.regions if r.pays for n in r.layers]

    @property
    def float_layers(self) -> list[str]:
        return [n for r in self.regions if not r.pays for n in r.layers]

    def summary(self) -> str:
        kept = sum(r.pays for r in self.regions)
        return (f"{len(self.int8_layers)} layers int8 in {kept} regions, "
                f"{len(self.float_layers)} left float in {len(self.regions) - kept} regions "
                "that would not pay for their conversions")


def place(model: onnx.ModelProto, layers: set[str], runtime: str = "onnxruntime",
          min_macs_per_border_element: float | None = None) -> Placement:
    """The regions around `layers` (static int8 candidates) for `runtime`; each says
    whether it pays. `model`'s nodes carry the layer table's names (copy_model)."""
    threshold = MIN_MACS_PER_BORDER_ELEMENT[runtime] if min_macs_per_border_element is None \
        else min_macs_per_border_element
    model = model if _has_types(model) else infer(model)
    graph = _FloatGraph(model)
    candidates = {n.name for n in model.graph.node
                  if n.name in layers or (role(n.op_type, runtime) not in (None, COMPUTE))}
    macs = {layer.name: layer.macs for layer in analyze(model).layers}
    placement = Placement()
    seen: set[str] = set()
    for node in model.graph.node:
        if node.name not in layers or node.name in seen:
            continue
        component = graph.component(node.name, candidates)
        seen |= component
        kept = graph.peel(component, layers)
        for members in graph.pieces(kept, layers):
            placement.regions.append(_region(model, members, layers, macs, graph, threshold))
    return placement


def _region(model, members: set[str], layers: set[str], macs: dict[str, int],
            graph: "_FloatGraph", threshold: float) -> Region:
    ordered = [n.name for n in model.graph.node if n.name in members]
    region = Region(ordered, [n for n in ordered if n in layers])
    region.macs = sum(macs.get(n, 0) for n in region.layers)
    region.border_elements = graph.border_elements(members)
    if not region.border_elements or not region.macs:
        region.pays = math.isfinite(threshold)  # a runtime where nothing fuses: never
        region.reason = "sizes unknown: kept int8 (the measured guard decides)" if region.pays \
            else "the runtime fuses no int8 op"
        return region
    region.pays = region.macs_per_border_element >= threshold
    region.reason = (f"{region.macs_per_border_element:.1f} MACs per converted element "
                     f"({'>=' if region.pays else '<'} {threshold:g})")
    return region


class _FloatGraph:
    """Nodes linked by float activation tensors (initializers and shape arithmetic are
    not links), with element counts of the tensors."""

    def __init__(self, model: onnx.ModelProto):
        constants = {i.name for i in model.graph.initializer}
        constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
        values = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
        self.types = {v.name: v.type.tensor_type.elem_type for v in values}
        self.sizes = {v.name: _elements(v) for v in values}
        self.outputs = {o.name for o in model.graph.output}
        self.producer: dict[str, str] = {}
        self.consumers: dict[str, list[str]] = {}
        self.inputs: dict[str, list[str]] = {}
        self.node_outputs: dict[str, list[str]] = {}
        for node in model.graph.node:
            acts = [t for t in node.input if t and t not in constants and self.is_float(t)]
            self.inputs[node.name] = acts
            self.node_outputs[node.name] = [t for t in node.output if self.is_float(t)]
            for t in acts:
                self.consumers.setdefault(t, []).append(node.name)
            for t in node.output:
                self.producer[t] = node.name

    def is_float(self, tensor: str) -> bool:
        return self.types.get(tensor) in FLOAT_TYPES

    def component(self, start: str, candidates: set[str]) -> set[str]:
        members, todo = {start}, [start]
        while todo:
            name = todo.pop()
            linked = [self.producer[t] for t in self.inputs[name] if t in self.producer]
            linked += [c for t in self.node_outputs[name] for c in self.consumers.get(t, [])]
            for other in linked:
                if other in candidates and other not in members:
                    members.add(other)
                    todo.append(other)
        return members

    def border_elements(self, members: set[str]) -> int:
        """Elements converted at the region's borders: float tensors entering it
        (quantized) and leaving it (dequantized); 0 when one of their sizes is unknown."""
        border = {t for n in members for t in self.inputs[n] if self.producer.get(t) not in members}
        border |= {t for n in members for t in self.node_outputs[n]
                   if t in self.outputs or any(c not in members for c in self.consumers.get(t, []))}
        sizes = [self.sizes.get(t, 0) for t in border]
        return 0 if 0 in sizes else sum(sizes)

    def peel(self, members: set[str], layers: set[str]) -> set[str]:
        """Drop the non-layer ops whose leaving the region converts fewer elements (a
        global pool fed by a float tensor, a gating Mul on a large float input)."""
        members = set(members)
        changed = True
        while changed:
            changed = False
            for name in sorted(members - layers):
                now = self.border_elements(members)
                without = self.border_elements(members - {name})
                if now and without and without < now:
                    members.discard(name)
                    changed = True
        return members

    def pieces(self, members: set[str], layers: set[str]) -> list[set[str]]:
        """The connected parts of `members` that hold a layer."""
        out, seen = [], set()
        for name in sorted(members & layers):
            if name not in seen:
                part = self.component(name, members)
                seen |= part
                out.append(part)
        return out


def _has_types(model: onnx.ModelProto) -> bool:
    produced = sum(len(n.output) for n in model.graph.node)
    return len(model.graph.value_info) + len(model.graph.output) >= produced


def _elements(value: onnx.ValueInfoProto) -> int:
    """Elements of one sample (a dynamic batch counts 1; other unknown sizes count 0)."""
    dims = value.type.tensor_type.shape.dim
    out = 1
    for i, d in enumerate(dims):
        if d.HasField("dim_value"):
            out *= d.dim_value
        elif i:
            return 0
    return out
