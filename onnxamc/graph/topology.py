"""Who produces and who reads each tensor: the one producer/consumer map of graph/.

graph/ reads protobuf models by node index (the passes edit a copy by the same indices),
so the map is a pair of dicts over node positions, built once per model.
"""

from __future__ import annotations

import onnx


class Topology:
    """Producer and users of every tensor of a graph, by node index."""

    def __init__(self, model: onnx.ModelProto):
        self.nodes = list(model.graph.node)
        self.producer: dict[str, int] = {}
        self.users: dict[str, list[tuple[int, int]]] = {}  # tensor -> [(node, input slot)]
        for i, node in enumerate(self.nodes):
            for out in node.output:
                if out:
                    self.producer[out] = i
            for k, name in enumerate(node.input):
                if name:
                    self.users.setdefault(name, []).append((i, k))

    def producer_node(self, name: str) -> onnx.NodeProto | None:
        i = self.producer.get(name)
        return None if i is None else self.nodes[i]

    def user_nodes(self, name: str) -> list[int]:
        """Indices of the nodes reading `name` (once each, in graph order)."""
        return sorted({i for i, _ in self.users.get(name, [])})
