"""Channel shuffle written as one Gather of the channels (a step of the front door).

ShuffleNet's shuffle is `Reshape [N, g, C/g, ...] -> Transpose(1, 2) -> Reshape [N, C,
...]`. Pruned, the reshape into g equal groups would need every group to lose the same
channels, so channels tied across the groups, and chained shuffles tied whole stages
into one channel that cannot be pruned. The same shuffle as a Gather of the channel
axis by a constant permutation moves each channel alone: the channel rules follow its
indices (rules/concat_split.py) and a pruned model keeps the permutation of the kept
ones. Outputs are equal; onnxruntime runs either form in about the same time (both copy
the tensor once).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.graph.checks import all_nodes
from onnxamc.graph.shapes import known_shapes
from onnxamc.graph.topology import Topology


def shuffles_as_gather(model: onnx.ModelProto) -> int:
    """Rewrite every channel shuffle of `model` in place; returns how many."""
    graph = model.graph
    shapes, topology = known_shapes(model), Topology(model)
    outputs = {o.name for o in graph.output}
    found = [match for node in graph.node
             if (match := _shuffle_at(node, shapes, topology, outputs)) is not None]
    for first, transpose, last, groups, channels in found:
        index = _unique(graph, f"{last.name or last.output[0]}_shuffle_indices")
        graph.initializer.append(numpy_helper.from_array(
            _permutation(groups, channels), index))
        gather = helper.make_node("Gather", [first.input[0], index], [last.output[0]], axis=1,
                                  name=_unique(graph, f"{last.name or last.output[0]}_shuffle"))
        position = list(graph.node).index(last)
        graph.node.insert(position, gather)
        for dead in (first, transpose, last):
            graph.node.remove(dead)
        gone = {first.output[0], transpose.output[0]}
        for value in [v for v in graph.value_info if v.name in gone]:
            graph.value_info.remove(value)
    if found:
        _drop_unused_initializers(graph)
    return len(found)


def _shuffle_at(node, shapes, topology, outputs):
    """(reshape, transpose, reshape, groups, channels) when `node` starts a shuffle."""
    if node.op_type != "Reshape":
        return None
    src, split = shapes.get(node.input[0]), shapes.get(node.output[0])
    if not src or not split or None in src or None in split or len(split) != len(src) + 1:
        return None
    groups, per_group = split[1], split[2]
    if groups < 2 or per_group < 2 or tuple(split) != (src[0], groups, per_group, *src[2:]) \
            or groups * per_group != src[1]:
        return None
    transpose = _only_user(node.output[0], topology, outputs, "Transpose")
    if transpose is None or _perm(transpose) != [0, 2, 1, *range(3, len(split))]:
        return None
    last = _only_user(transpose.output[0], topology, outputs, "Reshape")
    if last is None or shapes.get(last.output[0]) != tuple(src):
        return None
    return node, transpose, last, groups, src[1]


def _only_user(name, topology, outputs, op_type):
    found = topology.user_nodes(name)
    if name in outputs or len(found) != 1 or topology.nodes[found[0]].op_type != op_type:
        return None
    return topology.nodes[found[0]]


def _perm(node) -> list[int] | None:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return None


def _permutation(groups: int, channels: int) -> np.ndarray:
    """Output channel k of the shuffle is input channel (k % groups) * per_group + k // groups."""
    k = np.arange(channels, dtype=np.int64)
    return (k % groups) * (channels // groups) + k // groups


def _unique(graph, name: str) -> str:
    taken = {i.name for i in graph.initializer} | {n.name for n in graph.node} | \
        {o for n in graph.node for o in n.output}
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def _drop_unused_initializers(graph) -> None:
    used = {name for node in all_nodes(graph) for name in node.input} | \
        {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
