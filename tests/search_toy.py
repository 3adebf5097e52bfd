"""A synthetic model for search tests: a layer table as data and a cheap, deterministic
evaluator (accuracy falls with compression, latency follows effective MACs and bits),
so agents can be tested in milliseconds per trial."""

from __future__ import annotations

from onnxamc.search import LayerSlot, SearchSpace

MACS = [400_000, 1_200_000, 900_000, 1_500_000, 700_000, 20_000]
PARAMS = [300, 2_400, 4_600, 9_200, 18_400, 640]
WIDTHS = [16, 16, 32, 32, 64, 10]
SENSITIVITY = [0.30, 0.04, 0.10, 0.03, 0.06, 0.25]  # accuracy lost at full compression
QUANT_LOSS = [0.030, 0.002, 0.004, 0.001, 0.003, 0.020]


def toy_layers() -> list[LayerSlot]:
    slots, c_in = [], 1
    for i, (macs, params, width) in enumerate(zip(MACS, PARAMS, WIDTHS)):
        op = "Gemm" if i == len(MACS) - 1 else "Conv"
        slots.append(LayerSlot(f"l{i}", op, macs, params, c_in, width,
                               producer=f"l{i - 1}" if i else None,
                               feeds_layer=i < len(MACS) - 1,
                               features=(i, 0 if op == "Conv" else 2, c_in, width, 9, 1, 1,
                                         64, params, macs)))
        c_in = width
    return slots


def toy_space(actions=("quant", "sparsity"), **kw) -> SearchSpace:
    return SearchSpace(toy_layers(), list(actions), **kw)


def toy_evaluator(space: SearchSpace, calls: list | None = None):
    """metrics(policy) like api.search's evaluator returns them."""

    def evaluate(policy):
        if calls is not None:
            calls.append(policy)
        loss, latency, size = 0.0, 0.0, 0.0
        for i, slot in enumerate(space.layers):
            action = policy.action(slot.name)
            reads = policy.action(slot.producer).keep if slot.producer else 1.0
            loss += SENSITIVITY[i] * (action.sparsity ** 2 + (1 - action.keep) ** 2)
            loss += QUANT_LOSS[i] * (action.bits == 8)
            size += slot.params * (action.bits / 32) * (1 - 0.8 * action.sparsity) * action.keep
            latency += (slot.macs * (1 - 0.7 * action.sparsity) * action.keep * reads
                        * (0.6 if action.bits == 8 else 1.0))
        accuracy = 0.9 - loss
        ratio = max(latency / space.total_macs, 0.05)
        return {"accuracy": accuracy, "accuracy_drop": 0.9 - accuracy,
                "latency_ratio": ratio, "latency": {"median_ms": 2.0 * ratio},
                "size_ratio": size / sum(PARAMS), "size_bytes": int(4 * size)}

    return evaluate
