"""One model, analysed once: the layer table, channel groups, residual blocks, what each
layer can take, the cost model, the inputs and the fingerprint.

Analysis is the expensive part of reading a graph (a weight histogram per layer, the
channel tracer over every node), and every part of a run asks for it: the policy check,
the passes, the search space, the evaluator, the report. A ModelContext computes each
piece on first use and keeps it, so one run analyses one model once. Contexts never
change: a pass that edits the model makes a new one (`ModelContext(new_model)`).
"""

from __future__ import annotations

from functools import cached_property

import onnx

from onnxamc.graph.analysis import ModelInfo, analyze
from onnxamc.graph.blocks import ResidualBlock, residual_blocks
from onnxamc.graph.cost import CostModel
from onnxamc.graph.groups import ChannelAnalysis, channel_groups
from onnxamc.graph.model import InputSpec, serialized_size

LOW_RANK_OPS = ("Conv", "Gemm", "MatMul")


class ModelContext:
    """A shape-inferred model and, computed once each on first use, what graph/ knows of it."""

    def __init__(self, model: onnx.ModelProto, name: str = "model.onnx"):
        self.model = model
        self.name = name

    @cached_property
    def info(self) -> ModelInfo:
        return analyze(self.model)

    @cached_property
    def channels(self) -> ChannelAnalysis:
        return channel_groups(self.model)

    @cached_property
    def blocks(self) -> list[ResidualBlock]:
        return residual_blocks(self.model)

    @cached_property
    def cost(self) -> CostModel:
        return CostModel.of(self.info.layers, self.channels)

    @cached_property
    def size_bytes(self) -> int:
        return serialized_size(self.model)

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    @property
    def inputs(self) -> list[InputSpec]:
        return self.info.inputs

    @property
    def layer_ops(self) -> dict[str, str]:
        """{layer name: op type}: what a policy is validated against."""
        return {layer.name: layer.op_type for layer in self.info.layers}

    @cached_property
    def structural_fit(self) -> dict[str, set[str]]:
        """{layer: the structural policy fields it can take}: `keep` where its channel
        group is prunable, `rank` for ungrouped Conv / Gemm / MatMul, `remove` inside a
        residual block."""
        in_blocks = {layer for block in self.blocks for layer in block.layers}
        fit: dict[str, set[str]] = {}
        for layer in self.info.layers:
            fields = fit.setdefault(layer.name, set())
            group = self.channels.group_of(layer.name)
            if group is not None and group.prunable:
                fields.add("keep")
            if layer.op_type in LOW_RANK_OPS and layer.groups == 1:
                fields.add("rank")
            if layer.name in in_blocks:
                fields.add("remove")
        return fit

    def group_leaders(self) -> set[str]:
        """The first layer of each prunable channel group: the one whose `keep` the
        search proposes (one number per group, not one per coupled layer)."""
        return {g.layers[0] for g in self.channels.groups if g.prunable and g.layers}
