"""The cost model: MACs of a model under a pruning and per-layer factors, from the layer
table and the channel groups, without building the compressed model.

A layer's MACs scale with the share of its output channels kept (its own group) times
the share of its input channels kept (each group it reads, weighted by how many of its
input channels come from that group), and with its own factors (the non-zero share under
sparsity...). A depthwise convolution reads and writes the same group: that share counts
once. The search estimates a policy with it (keep ratios rounded as the pruning pass
rounds them) and a pruning plan counts its MACs with it (the kept channels it chose), so
both say the same number.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

from onnxamc.graph.groups import ChannelAnalysis, kept_count

DEFAULT_MULTIPLE = 8


@dataclass(frozen=True)
class LayerCost:
    name: str
    macs: int
    out_group: int | None  # index of the channel group of its output channels
    reads: tuple[tuple[int, int], ...] = ()  # (group, how many input channels from it)
    depthwise: bool = False


@dataclass(frozen=True)
class CostModel:
    """Pure data (the search gets it without the model): layers and prunable groups."""

    layers: tuple[LayerCost, ...]
    group_channels: Mapping[int, int]  # group index -> its channel count
    prunable: frozenset[int] = frozenset()  # the groups that can lose channels
    multiple: int = DEFAULT_MULTIPLE

    @classmethod
    def of(cls, layers: Sequence, analysis: ChannelAnalysis,
           multiple: int = DEFAULT_MULTIPLE) -> "CostModel":
        rows = []
        for layer in layers:
            group = analysis.group_of(layer.name)
            counts: Counter = Counter()
            for atoms in analysis.tracer.consumers.get(layer.name, ()):
                counts.update(g for g in (analysis.group_index(a) for a in atoms.tolist())
                              if g is not None)
            rows.append(LayerCost(layer.name, int(layer.macs),
                                  None if group is None else group.index,
                                  tuple(sorted(counts.items())),
                                  bool(getattr(layer, "depthwise", False))))
        groups = analysis.groups
        return cls(tuple(rows), {g.index: g.channels for g in groups},
                   frozenset(g.index for g in groups if g.prunable), multiple)

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def shares(self, keep: Mapping[str, float]) -> dict[int, float]:
        """{group: kept share of its channels} for layer keep ratios: a group takes the
        largest ratio given to any of its layers, rounded as the pruning pass rounds."""
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
        (effective MACs when they are sparsity's non-zero shares)."""
        return self.macs_at(self.shares(keep or {}), factors)

    def macs_at(self, shares: Mapping[int, float],
                factors: Mapping[str, float] | None = None) -> float:
        """MACs per sample when each group keeps `shares[group]` of its channels."""
        out, read = {}, {}
        for layer in self.layers:
            out[layer.name] = shares.get(layer.out_group, 1.0)
            reads = [(g, n) for g, n in layer.reads
                     if not (layer.depthwise and g == layer.out_group)]
            if reads:
                read[layer.name] = sum(shares.get(g, 1.0) * n for g, n in reads) / \
                    sum(n for _, n in reads)
        return self.macs_of(out, read, factors)

    def macs_of(self, out: Mapping[str, float], read: Mapping[str, float],
                factors: Mapping[str, float] | None = None) -> float:
        """The cost model itself: each layer's MACs times the share of its output channels
        kept, the share of its input channels kept and its own factor."""
        factors = factors or {}
        return sum(layer.macs * out.get(layer.name, 1.0) * read.get(layer.name, 1.0)
                   * factors.get(layer.name, 1.0) for layer in self.layers)
