"""Residual blocks: a branch added to the identity path it starts from (x + f(x)).

Such a block can be replaced by the identity without touching the rest of the graph,
which is what layer removal does (the depth axis of compression, next to width).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from onnxamc.graph.layers import find_layers, node_names
from onnxamc.graph.shapes import known_shapes
from onnxamc.graph.topology import Topology

MAX_BRANCH_NODES = 200


@dataclass
class ResidualBlock:
    name: str  # the first layer of the branch
    add: int  # index of the Add node that closes the block
    identity: str  # tensor on the identity path (the block's input)
    branch: list[int]  # node indices of the branch, in graph order
    layers: list[str]  # layers inside the branch

    def to_dict(self) -> dict:
        return {"name": self.name, "identity": self.identity, "layers": self.layers,
                "nodes": len(self.branch)}


def residual_blocks(model: onnx.ModelProto) -> list[ResidualBlock]:
    """Every Add whose one input is computed only from the other (and constants)."""
    topology = Topology(model)
    nodes, producer = topology.nodes, topology.producer
    names = node_names(model)
    outputs = {o.name for o in model.graph.output}
    constants = {init.name for init in model.graph.initializer}
    layer_names = {layer.name for layer in find_layers(model)}
    shapes = known_shapes(model)
    blocks = []
    for i, node in enumerate(nodes):
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        for x, y in (node.input, node.input[::-1]):
            branch = _branch(y, x, producer, nodes, constants)
            if branch is None or producer.get(x) in branch:
                continue
            if shapes.get(x) is None or shapes.get(x) != shapes.get(node.output[0]):
                continue
            inside = set(branch) | {i}
            if any(out in outputs or any(u not in inside for u in topology.user_nodes(out))
                   for b in branch for out in nodes[b].output):
                continue  # a branch tensor is used outside the block
            layers = [names[b] for b in branch if names[b] in layer_names]
            if layers:
                blocks.append(ResidualBlock(layers[0], i, x, branch, layers))
                break
    return blocks


def _branch(start, stop, producer, nodes, constants) -> list[int] | None:
    """Nodes computing `start` from `stop` and constants only; None if anything else
    (a model input, another activation) feeds it."""
    seen: set[int] = set()
    stack = [start]
    while stack:
        name = stack.pop()
        if not name or name == stop or name in constants:
            continue
        p = producer.get(name)
        if p is None:
            return None
        if p in seen:
            continue
        seen.add(p)
        if len(seen) > MAX_BRANCH_NODES:
            return None
        stack.extend(nodes[p].input)
    return sorted(seen) if seen else None
