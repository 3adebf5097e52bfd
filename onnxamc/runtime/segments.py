"""Activations of a model on fixed feeds, computed segment by segment and kept.

Least-squares reconstruction refits pruned layers one after another, each on the inputs
its refitted predecessors produce. Running the whole model for every layer costs one
forward pass per layer; `Forward` instead keeps the tensors it computed, runs only the
nodes between what it has and what is asked (a small model of its own, one session),
and after a weight changes forgets only what lies downstream of it. A whole
reconstruction then costs about one forward pass of the calibration data.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx
from onnx import helper

from onnxamc.runtime.ort import DEFAULT_THREADS, make_session

BATCH = 64  # samples per run of a segment


class Forward:
    """Tensors of `model` on `feeds`, on demand. The model is read when asked, so
    edits of its initializers (then `changed(node)`) are seen by later segments."""

    def __init__(self, model: onnx.ModelProto, feeds: Iterable[dict[str, np.ndarray]],
                 threads: int = DEFAULT_THREADS):
        self.model, self.threads = model, threads
        batches = list(feeds)
        self.values: dict[str, np.ndarray] = {
            name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
        self.inputs = set(self.values)
        nodes = model.graph.node
        self.producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(nodes):
            for name in _reads(node):
                self.consumers.setdefault(name, []).append(i)
        self.constants = {init.name for init in model.graph.initializer}
        self.outputs = {o.name for o in model.graph.output}

    def fetch(self, name: str) -> np.ndarray:
        """The tensor over all feeds (batch axis first)."""
        if name not in self.values:
            self._compute(name)
        return self.values[name]

    def changed(self, node_index: int) -> None:
        """A weight of this node changed: forget its outputs and everything after them."""
        stack = [o for o in self.model.graph.node[node_index].output if o]
        seen: set[str] = set()
        while stack:
            tensor = stack.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            self.values.pop(tensor, None)
            for i in self.consumers.get(tensor, ()):
                stack.extend(o for o in self.model.graph.node[i].output if o)

    def _compute(self, name: str) -> None:
        needed = self._segment(name)
        nodes = [self.model.graph.node[i] for i in needed]
        made = {o for n in nodes for o in n.output if o}
        read = {t for n in nodes for t in _reads(n)}
        inputs = sorted(t for t in read if t in self.values and t not in self.constants)
        later = {t for t in made if t == name or t in self.outputs or
                 any(i not in needed for i in self.consumers.get(t, ()))}
        outputs = sorted(later)
        session = make_session(self._submodel(nodes, inputs, outputs, read), self.threads)
        total = len(next(iter(self.values[t] for t in self.inputs)))
        parts = [session.run(outputs, {t: self.values[t][s:s + BATCH] for t in inputs})
                 for s in range(0, total, BATCH)]
        for k, tensor in enumerate(outputs):
            self.values[tensor] = np.concatenate([p[k] for p in parts])

    def _segment(self, name: str) -> list[int]:
        """Indices of the nodes needed for `name` from the tensors already known."""
        needed: set[int] = set()
        stack = [name]
        while stack:
            tensor = stack.pop()
            if tensor in self.values or tensor in self.constants or tensor not in self.producer:
                continue
            index = self.producer[tensor]
            if index in needed:
                continue
            needed.add(index)
            stack.extend(_reads(self.model.graph.node[index]))
        return sorted(needed)

    def _submodel(self, nodes, inputs, outputs, read) -> onnx.ModelProto:
        graph = self.model.graph
        initializers = [init for init in graph.initializer if init.name in read]
        values = [_value_info(t, self.values[t]) for t in inputs]
        sub = helper.make_graph(nodes, "segment", values,
                                [onnx.ValueInfoProto(name=t) for t in outputs], initializers)
        model = helper.make_model(sub, opset_imports=self.model.opset_import,
                                  ir_version=self.model.ir_version)
        return model


def _reads(node: onnx.NodeProto) -> list[str]:
    """What a node reads, including outer-scope names used inside its subgraphs."""
    names = [i for i in node.input if i]
    for attr in node.attribute:
        for graph in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            inner = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | \
                {i.name for i in graph.initializer}
            names += [t for n in graph.node for t in _reads(n) if t not in inner]
    return names


def _value_info(name: str, array: np.ndarray) -> onnx.ValueInfoProto:
    shape = ["batch"] + list(array.shape[1:])
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), shape)
