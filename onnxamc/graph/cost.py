"""The cost model: MACs of a model under a policy, from the layer table and the channel
groups, without building the compressed model.

A layer's MACs scale with the share of its output channels kept (its own group) times
the share of its input channels kept (the groups it reads), and with its own factors
(the non-zero share under sparsity, the kept rank). A depthwise convolution reads and
writes the same group, so that share counts once. Kept channel counts are rounded as
the pruning pass rounds them (`kept_count`), so the estimate is the pass's count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from onnxamc.graph.groups import ChannelGroup, kept_count

DEFAULT_MULTIPLE = 8


@dataclass(frozen=True)
class LayerCost:
    name: str
    macs: int
    out_group: int | None  # index of the channel group of its output channels
    in_groups: tuple[int, ...]  # the groups of the channels it reads
    depthwise: bool = False


@dataclass(frozen=True)
class CostModel:
    """Pure data (the search gets it without the model): layers and prunable groups."""

    layers: tuple[LayerCost, ...]
    group_channels: Mapping[int, int]  # group index -> its channel count
    prunable: frozenset[int] = frozenset()  # the groups that can lose channels
    multiple: int = DEFAULT_MULTIPLE

    @classmethod
    def of(cls, layers: Sequence, groups: Sequence[ChannelGroup],
           multiple: int = DEFAULT_MULTIPLE) -> "CostModel":
        by_layer = {name: g for g in groups for name in g.layers}
        reads: dict[str, list[int]] = {}
        for g in groups:
            for name in g.consumers:
                reads.setdefault(name, []).append(g.index)
        rows = []
        for layer in layers:
            group = by_layer.get(layer.name)
            rows.append(LayerCost(layer.name, int(layer.macs),
                                  None if group is None else group.index,
                                  tuple(reads.get(layer.name, ())),
                                  bool(getattr(layer, "depthwise", False))))
        return cls(tuple(rows), {g.index: g.channels for g in groups},
                   frozenset(g.index for g in groups if g.prunable), multiple)

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def group_keep(self, keep: Mapping[str, float]) -> dict[int, float]:
        """{group: kept share of its channels} for layer keep ratios (a group takes the
        largest ratio given to any of its layers, as the pruning pass does)."""
        ratios: dict[int, float] = {}
        for layer in self.layers:
            ratio = keep.get(layer.name, 1.0)
            g = layer.out_group
            if ratio < 1.0 and g in self.prunable:
                ratios[g] = max(ratios.get(g, 0.0), ratio)
        return {g: kept_count(self.group_channels[g], r, self.multiple) / self.group_channels[g]
                for g, r in ratios.items()}

    def macs(self, keep: Mapping[str, float] | None = None,
             factors: Mapping[str, float] | None = None) -> float:
        """MACs per sample with `keep` ratios per layer and extra per-layer `factors`
        (sparsity's non-zero share, low rank...); effective MACs when factors are given."""
        shares = self.group_keep(keep or {})
        factors = factors or {}
        total = 0.0
        for layer in self.layers:
            out = shares.get(layer.out_group, 1.0)
            reads = [g for g in layer.in_groups if g != layer.out_group or not layer.depthwise]
            if reads:
                channels = sum(self.group_channels.get(g, 1) for g in reads)
                kept = sum(shares.get(g, 1.0) * self.group_channels.get(g, 1) for g in reads)
                out *= kept / channels
            total += layer.macs * out * factors.get(layer.name, 1.0)
        return total
