"""A synthetic model for search tests: a layer table and cost model as data and a cheap,
deterministic evaluator (quality falls with compression, latency follows effective MACs
and bits), so agents can be tested in milliseconds per trial."""

from __future__ import annotations

from onnxamc.graph.cost import CostModel, LayerCost
from onnxamc.metrics import Metrics
from onnxamc.runtime.latency import LatencyStats
from onnxamc.search import LayerSlot, SearchSpace

MACS = [400_000, 1_200_000, 900_000, 1_500_000, 700_000, 20_000]
PARAMS = [300, 2_400, 4_600, 9_200, 18_400, 640]
WIDTHS = [16, 16, 32, 32, 64, 10]
SENSITIVITY = [0.30, 0.04, 0.10, 0.03, 0.06, 0.25]  # quality lost at full compression
QUANT_LOSS = [0.030, 0.002, 0.004, 0.001, 0.003, 0.020]


def toy_layers() -> list[LayerSlot]:
    """A chain of five convolutions and a classifier; each conv's channels are a group
    the next layer reads; the classifier's outputs are the model's (not prunable)."""
    slots, c_in = [], 1
    for i, (macs, params, width) in enumerate(zip(MACS, PARAMS, WIDTHS)):
        op = "Gemm" if i == len(MACS) - 1 else "Conv"
        takes = {"quant", "sparsity"} | ({"prune"} if i < len(MACS) - 1 else set())
        slots.append(LayerSlot(f"l{i}", op, macs, params, c_in, width,
                               features=(i, 0 if op == "Conv" else 2, c_in, width, 9, 1, 1,
                                         64, params, macs), takes=frozenset(takes)))
        c_in = width
    return slots


def toy_cost() -> CostModel:
    """Layer i writes group i and reads group i-1 (group -1: the model input)."""
    channels = {-1: 1, **{i: w for i, w in enumerate(WIDTHS)}}
    layers = tuple(LayerCost(f"l{i}", m, i, ((i - 1, channels[i - 1]),))
                   for i, m in enumerate(MACS))
    return CostModel(layers, channels, frozenset(range(len(MACS) - 1)), multiple=1)


def toy_space(actions=("quant", "sparsity"), **kw) -> SearchSpace:
    return SearchSpace(toy_layers(), list(actions), cost=toy_cost(), **kw)


def toy_evaluator(space: SearchSpace, calls: list | None = None):
    """Metrics of a policy, as the workflow's evaluator returns them."""

    def evaluate(policy) -> Metrics:
        if calls is not None:
            calls.append(policy)
        loss, latency, size = 0.0, 0.0, 0.0
        for i, slot in enumerate(space.layers):
            action = policy.action(slot.name)
            reads = policy.action(f"l{i - 1}").keep if i else 1.0
            loss += SENSITIVITY[i] * (action.sparsity ** 2 + (1 - action.keep) ** 2)
            loss += QUANT_LOSS[i] * (action.bits == 8)
            size += slot.params * (action.bits / 32) * (1 - 0.8 * action.sparsity) * action.keep
            latency += (slot.macs * (1 - 0.7 * action.sparsity) * action.keep * reads
                        * (0.6 if action.bits == 8 else 1.0))
        quality = 0.9 - loss
        ratio = max(latency / space.total_macs, 0.05)
        return Metrics(quality=quality, quality_drop=0.9 - quality, latency_ratio=ratio,
                       latency=LatencyStats(2.0 * ratio, 2.0 * ratio, 0.0, 1),
                       size_ratio=size / sum(PARAMS), size_bytes=int(4 * size))

    return evaluate
