"""Int8 that never makes a model slower: build the ways a policy's int8 can be placed,
time each beside the float model on the target, keep the fastest one that pays, or
stay float and say why in one line.

The placement is structural (passes/quant_placement.py: whole regions the runtime fuses,
runtime/fusion.py reads what it fused); which candidate wins is measured
(runtime/ratios.py), because on mobile-style networks int8 kernels can be slower than
float ones on a given CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx

from onnxamc.runtime.ratios import Measure, Ratio

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


def apply_guarded(run, policy, runs: int = 60) -> tuple[onnx.ModelProto, str]:
    """The run's model under `policy`, its int8 placed the fastest way that pays on
    local onnxruntime (or float), checked; and the one-line verdict."""
    from onnxamc.actions import check_policy
    from onnxamc.runtime.check import check_compressed
    from onnxamc.runtime.ratios import interleaved_ratios

    check_policy(run.context, policy)
    config = run.config
    feed = run.calibration.one()  # what latency is timed on: one sample, as measured
    result = guarded_int8(run.model, policy, run.calibration_feeds,
                          interleaved_ratios(feed, config.threads or 1, runs),
                          calibration_method=config.calibration_method,
                          reconstruct=config.reconstruct and any(
                              a.keep < 1 for a in policy.layers.values()),
                          channel_multiple=config.channel_multiple,
                          importance=config.importance)
    check_compressed(run.model, result.model)
    return result.model, result.message
