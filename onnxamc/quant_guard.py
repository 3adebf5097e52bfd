"""Int8 that never makes a model slower: read what onnxruntime fused, then measure.

Two checks, outside passes/ because both run the runtime:
- structural, load-independent: onnxruntime's optimized graph
  (`SessionOptions.optimized_model_filepath`) shows which ops became integer kernels
  (QLinearConv, QGemm, QLinearAdd...) and which float ops still sit between a
  DequantizeLinear and a QuantizeLinear (float islands: two conversions, no gain).
- measured: the candidate's latency against fp32, interleaved, as the median of the
  per-round ratios with its spread. `guard` tries candidates from the most to the least
  int8 and keeps the first not slower than fp32; when none is, the model stays float
  and the reason is one line.

`measure(models) -> [Ratio]` is a callable so that any target (a board over RPC, TVM)
can supply its own; `interleaved_ratios` is the local onnxruntime one.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

# ops that carry Q/DQ but are no float compute
CONVERSIONS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
INTEGER_PREFIXES = ("QLinear", "QGemm", "MatMulInteger", "ConvInteger", "DynamicQuantize",
                    "MatMulIntegerToFloat", "MatMulNBits", "GatherBlockQuantized", "QAttention",
                    "QEmbedLayerNormalization")
# ops that carry int8 tensors unchanged once onnxruntime drops their Q/DQ pair
DATA_MOVEMENT = ("MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Resize",
                 "Slice", "Split", "Gather", "Concat", "Pad", "Identity")


@dataclass
class FusionReport:
    """What onnxruntime made of a QDQ model (read off its optimized graph)."""

    integer_ops: dict[str, int] = field(default_factory=dict)
    # ops we asked to quantize that stayed float between a DequantizeLinear and a
    # QuantizeLinear: wrapped for nothing (the placement must leave this empty)
    unfused: list[str] = field(default_factory=list)
    # float ops between two int8 regions (region borders on both sides)
    between_regions: list[str] = field(default_factory=list)
    activation_conversions: int = 0  # QuantizeLinear + DequantizeLinear left on activations

    def summary(self) -> str:
        fused = ", ".join(f"{n} {k}" for k, n in sorted(self.integer_ops.items())) or "none"
        return (f"integer ops: {fused}; {len(self.unfused)} quantized ops left float; "
                f"{len(self.between_regions)} float ops between int8 regions; "
                f"{self.activation_conversions} activation conversions")


def optimized_graph(model: onnx.ModelProto, level: str = "extended") -> onnx.ModelProto:
    """The graph onnxruntime's CPU provider runs (QDQ fusions happen at 'extended')."""
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    with tempfile.TemporaryDirectory(prefix="onnxamc-opt-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[level]
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), options,
                             providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def fusion_report(model: onnx.ModelProto, quantized: set[str] | frozenset = frozenset()
                  ) -> FusionReport:
    """Integer kernels, float ops left between conversions and activation conversions of
    `model` on onnxruntime's CPU provider. `quantized`: the nodes the quantizer was
    asked to quantize (onnxruntime keeps the names of the nodes it does not fuse)."""
    graph = optimized_graph(model).graph
    constants = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def dequantized(name: str) -> bool:  # an activation coming out of a DequantizeLinear
        node = producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear" \
            and node.input[0] not in constants and node.input[0] in producer

    report = FusionReport()
    for node in graph.node:
        if node.op_type.startswith(INTEGER_PREFIXES):
            report.integer_ops[node.op_type] = report.integer_ops.get(node.op_type, 0) + 1
        elif node.op_type in CONVERSIONS:
            report.activation_conversions += node.input[0] not in constants
        elif any(dequantized(i) for i in node.input):
            if node.name in quantized:
                report.unfused.append(f"{node.op_type} {node.name}")
            elif node.op_type not in DATA_MOVEMENT and any(
                    c.op_type == "QuantizeLinear" for o in node.output for c in consumers.get(o, [])):
                report.between_regions.append(f"{node.op_type} {node.name}")
    return report


@dataclass(frozen=True)
class Ratio:
    """Latency of a model over the reference's: median of per-round ratios, and the
    half-width of their interquartile range (the noise of that median's rounds)."""

    median: float
    spread: float
    rounds: int

    @property
    def standard_error(self) -> float:
        """Of the median, for normal-like rounds: sigma ~ 1.48 x half-IQR, se ~ 1.25
        sigma / sqrt(n)."""
        return 1.86 * self.spread / max(self.rounds, 1) ** 0.5

    def __str__(self) -> str:
        return f"x{self.median:.3f} ± {self.spread:.3f} ({self.rounds} interleaved rounds)"


Measure = Callable[[Sequence[onnx.ModelProto]], list[Ratio]]


def interleaved_ratios(feed: dict[str, np.ndarray], threads: int = 1, runs: int = 60,
                       warmup: int = 10, round_ms: float = 5.0) -> Measure:
    """A `measure` for local onnxruntime: every round runs all models (order rotating);
    each model's per-round time over the first model's, as a median with its spread.

    Within a round each model runs back to back until about `round_ms` have passed and
    keeps its fastest run: being preempted only ever adds time, so on a shared machine
    the fastest of a few runs is what the model costs and the rounds stop scattering."""
    from onnxamc.runtime import make_session

    def measure(models: Sequence[onnx.ModelProto]) -> list[Ratio]:
        sessions = [make_session(m, threads) for m in models]
        for _ in range(warmup):
            for s in sessions:
                s.run(None, feed)
        t0 = time.perf_counter()
        sessions[0].run(None, feed)
        repeat = max(1, min(20, int(round_ms / 1e3 / max(time.perf_counter() - t0, 1e-6))))
        times = np.zeros((runs, len(sessions)))
        for r in range(runs):
            order = range(len(sessions)) if r % 2 == 0 else reversed(range(len(sessions)))
            for i in order:
                times[r, i] = _fastest(sessions[i], feed, repeat)
        ratios = times / times[:, :1]
        out = []
        for i in range(len(sessions)):
            q1, q2, q3 = np.percentile(ratios[:, i], [25, 50, 75])
            out.append(Ratio(float(q2), float(q3 - q1) / 2, runs))
        return out

    return measure


def _fastest(session, feed: dict[str, np.ndarray], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - t0)
    return best


@dataclass
class GuardResult:
    model: onnx.ModelProto
    label: str  # which candidate won ("float" when int8 did not pay)
    ratio: Ratio | None
    tried: dict[str, Ratio]
    message: str


# A candidate must be this much faster than float to be kept: the ratio of the same
# two models moved by up to 5% between interleaved runs on a loaded 2-core machine, so
# a smaller win is a coin toss that could make the model slower on the target.
MARGIN = 0.03


def pays(ratio: Ratio, margin: float = MARGIN) -> bool:
    """Faster than float by `margin`, and by two standard errors of the median."""
    return ratio.median <= 1.0 - margin and ratio.median + 2 * ratio.standard_error <= 1.0


def guard(fp32: onnx.ModelProto, candidates: dict[str, Callable[[], onnx.ModelProto]],
          measure: Measure, margin: float = MARGIN) -> GuardResult:
    """The fastest candidate that `pays` (faster than `fp32` beyond the noise); else
    `fp32` itself, with a one-line reason.

    All candidates are built first and measured in one interleaved run beside fp32, so
    every ratio sees the same machine state."""
    built = {label: make() for label, make in candidates.items()}
    labels = [label for label, m in built.items() if m is not None]
    ratios = measure([fp32] + [built[label] for label in labels])[1:]
    tried = dict(zip(labels, ratios))
    paying = [label for label in labels if pays(tried[label], margin)]
    if paying:
        label = min(paying, key=lambda k: tried[k].median)
        return GuardResult(built[label], label, tried[label], tried,
                           f"int8 ({label}): latency {tried[label]} of fp32")
    best = min(tried.values(), key=lambda r: r.median) if tried else None
    why = f"best {best}" if best else "no candidate"
    return GuardResult(fp32, "float", None, tried,
                       f"int8 does not pay on this target for this model ({why} of fp32, "
                       f"needs x{1 - margin:.2f}): the layers stay float")


def int8_candidates(model: onnx.ModelProto, policy, calibration, runtime: str = "onnxruntime",
                    **apply_options) -> dict[str, Callable[[], onnx.ModelProto]]:
    """Ways to build `policy`'s static int8, from the most int8 to the least: every
    fusable region; the regions that pay for their conversions; the same with depthwise
    convolutions float (onnxruntime's fp32 depthwise kernels beat its int8 ones on AVX2
    machines); only the regions that pay four times over. A policy without static int8
    has one way: itself."""
    from dataclasses import replace as with_fields

    from onnxamc.graph import analyze
    from onnxamc.actions import apply_policy
    from onnxamc.passes.quant_patterns import MIN_MACS_PER_BORDER_ELEMENT
    from onnxamc.policy import Policy
    from onnxamc.actions.quantize import form_of as action_kind

    def build(p, threshold=None):
        return lambda: apply_policy(model, p, calibration, runtime=runtime,
                                    int8_threshold=threshold, **apply_options)

    static = [n for n, a in policy.layers.items() if action_kind(a) == "int8"]
    if not static:
        return {"as asked": build(policy)}
    depthwise = {layer.name for layer in analyze(model).layers if layer.depthwise}
    no_dw = Policy({n: (with_fields(a, bits=32) if n in depthwise and n in static else a)
                    for n, a in policy.layers.items()}, fingerprint=policy.fingerprint)
    bar = MIN_MACS_PER_BORDER_ELEMENT[runtime]
    candidates = {"every fusable region": build(policy, 0.0),
                  "regions that pay": build(policy)}
    if depthwise & set(static):
        candidates["regions that pay, depthwise float"] = build(no_dw)
    candidates["regions that pay 4x"] = build(no_dw, 4 * bar)
    return candidates


def guarded_int8(model: onnx.ModelProto, policy, calibration, measure: Measure,
                 runtime: str = "onnxruntime", **apply_options) -> GuardResult:
    """`policy` applied the fastest way that is not slower than its float version (the
    same policy without quantization) on the target, or that float version with a
    one-line reason (GuardResult.message)."""
    from dataclasses import replace as with_fields

    from onnxamc.actions import apply_policy
    from onnxamc.policy import Policy

    plain = Policy({n: with_fields(a, bits=32, granularity="per-channel", block_size=0,
                                   weight_only=False, accuracy_level=0, dynamic=False,
                                   mixed_low_bits_ratio=0.0, share_bits=0)
                    for n, a in policy.layers.items()}, fingerprint=policy.fingerprint)
    reference = model if plain.is_identity else apply_policy(model, plain, calibration,
                                                             **apply_options)
    return guard(reference, int8_candidates(model, policy, calibration, runtime, **apply_options),
                 measure)
