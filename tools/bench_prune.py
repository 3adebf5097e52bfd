"""Benchmark of structured channel pruning (not a test; prints markdown tables).

1. For ResNet-20 and the MobileNetV2-style model at about 75 / 50 / 25 % of the MACs
   (uniform keep ratio found by bisection on the predicted MACs): MACs, latency
   (onnxruntime CPU, 1 thread, batch 1 and 16, interleaved with the original) and
   accuracy before fine-tuning, with and without least-squares reconstruction. Uses the
   bundled trained models when they exist (or --resnet20 / --mobilenetv2 paths), else
   random-weight exports, where "accuracy" is top-1 agreement with the original.
2. Time and peak memory of pruning a ResNet-50-sized graph with random weights
   (about 100 MB; goal: under 5 s and under 3x the model size).

    PYTHONPATH=. python tools/bench_prune.py [--skip-small] [--skip-large] [--runs 300]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxamc.data import load_data
from onnxamc.graph import analyze, load_model
from onnxamc.graph.groups import channel_groups
from onnxamc.models import BUNDLED
from onnxamc.passes.prune_channels import choose_channels, group_ratios, prune_channels
from onnxamc.quality import Top1
from onnxamc.runtime import make_session, run_batches, time_sessions

TARGETS = (0.75, 0.5, 0.25)


# --- 1. small models ------------------------------------------------------------------
def small_model(name: str, path: str | None, folder: Path) -> tuple[onnx.ModelProto, str]:
    if path or BUNDLED[name].exists():
        return load_model(path or BUNDLED[name]), "trained"
    from onnxamc.export import export_torch
    from onnxamc.models.mobilenet import mobilenetv2
    from onnxamc.models.resnet import resnet20

    module = {"resnet20": resnet20, "mobilenetv2": mobilenetv2}[name]()
    export_torch(module, (2, 1, 28, 28), folder / f"{name}.onnx")
    return load_model(folder / f"{name}.onnx"), "random weights"


def keep_for_macs(model, analysis, target: float, multiple: int) -> tuple[float, float]:
    """The uniform keep ratio whose predicted MACs come closest to target x original."""
    layers = [layer for g in analysis.groups if g.prunable for layer in g.layers]
    base = analyze(model).macs
    low, high, best = 0.05, 1.0, (1.0, 1.0)
    for _ in range(14):
        keep = (low + high) / 2
        ratios = group_ratios(analysis, {layer: keep for layer in layers})
        macs = analysis.plan(choose_channels(model, analysis, ratios, multiple, "l1")).predict()[0]
        if abs(macs / base - target) < abs(best[1] - target):
            best = (keep, macs / base)
        low, high = (keep, high) if macs / base < target else (low, keep)
    return best


def bench_small(name: str, path: str | None, runs: int, multiple: int, folder: Path) -> list[str]:
    model, kind = small_model(name, path, folder)
    inputs = analyze(model).inputs
    evaluation = load_data("fashion-mnist", inputs)
    calibration = load_data("fashion-mnist:calib", inputs).take(256)
    feeds = lambda: calibration.batches(64)
    reference_session = make_session(model)
    reference = run_batches(reference_session, evaluation.batches(256))
    def top1(outputs, labels):
        return Top1().score_all(outputs, labels=labels)

    labels = evaluation.labels if kind == "trained" else reference.argmax(1)
    analysis = channel_groups(model)
    layers = [layer for g in analysis.groups if g.prunable for layer in g.layers]
    rows = [f"| {name} ({kind}) | 100% | 1.000 | 1.00 | 1.000 | 1.00 | "
            f"{100 * top1(reference, labels):.2f}% | - |"]
    batch16 = {k: v[:16] for k, v in evaluation.inputs.items()}
    for target in TARGETS:
        keep, _ = keep_for_macs(model, analysis, target, multiple)
        ratios = {layer: keep for layer in layers}
        plain = prune_channels(model, ratios, multiple, analysis=analysis)
        rebuilt = prune_channels(model, ratios, multiple, calibration=feeds, analysis=analysis)
        macs = analyze(plain).macs / analyze(model).macs
        sessions = [reference_session, make_session(plain)]
        speedups = []
        for feed, count in ((evaluation.one(), runs), (batch16, max(20, runs // 5))):
            ref_t, cand_t = time_sessions(sessions, feed, warmup=10, runs=count)
            speedups.append(ref_t.median_ms / cand_t.median_ms)
        acc = [top1(run_batches(make_session(m), evaluation.batches(256)), labels)
               for m in (plain, rebuilt)]
        rows.append(f"| {name} keep={keep:.2f} | {100 * macs:.1f}% | "
                    + " | ".join(f"{s:.3f} | {s * macs:.2f}" for s in speedups)
                    + f" | {100 * acc[0]:.2f}% | {100 * acc[1]:.2f}% |")
    return rows


# --- 2. a ResNet-50-sized graph ---------------------------------------------------------
def resnet50_graph(seed: int = 0) -> onnx.ModelProto:
    """ResNet-50 as exported with BatchNorm folded (Conv with bias + Relu), random weights."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x, c_in, c_out, k, stride, name, relu=True):
        w = (rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2 / (c_in * k * k)))
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}.weight"))
        inits.append(numpy_helper.from_array(np.zeros(c_out, np.float32), f"{name}.bias"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name],
                                      name, kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"], f"{name}.relu"))
        return f"{name}.relu"

    x = conv("input", 3, 64, 7, 2, "stem")
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], "pool", kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1]))
    x, c_in = "pool", 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            name = f"layer{stage + 1}.{b}"
            y = conv(x, c_in, width, 1, 1, f"{name}.conv1")
            y = conv(y, width, width, 3, stride, f"{name}.conv2")
            y = conv(y, width, width * 4, 1, 1, f"{name}.conv3", relu=False)
            short = x if b else conv(x, c_in, width * 4, 1, stride, f"{name}.down", relu=False)
            nodes.append(helper.make_node("Add", [y, short], [f"{name}.add"], f"{name}.add"))
            nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"],
                                          f"{name}.out"))
            x, c_in = f"{name}.out", width * 4
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], "gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], "flatten"))
    inits.append(numpy_helper.from_array(
        (rng.standard_normal((1000, 2048)) * 0.01).astype(np.float32), "fc.weight"))
    inits.append(numpy_helper.from_array(np.zeros(1000, np.float32), "fc.bias"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], "fc",
                                  transB=1))
    graph = helper.make_graph(
        nodes, "resnet50", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                          ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def bench_large(keep: float = 0.5) -> list[str]:
    model = load_model(resnet50_graph())
    size = model.ByteSize()
    with _PeakRss() as rss:
        tracemalloc.start()
        start = time.perf_counter()
        analysis = channel_groups(model)
        analysed = time.perf_counter() - start
        layers = [layer for g in analysis.groups if g.prunable for layer in g.layers]
        pruned = prune_channels(model, {layer: keep for layer in layers}, analysis=analysis)
        seconds = time.perf_counter() - start
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    info, pruned_info = analyze(model), analyze(pruned)
    return [
        "| model | size MB | groups (prunable) | analysis s | prune total s | numpy peak MB "
        "(x size) | process RSS peak growth MB (x size) | MACs after |",
        "|---|---|---|---|---|---|---|---|",
        f"| ResNet-50 random, keep={keep} | {size / 2**20:.1f} | {len(analysis.groups)} "
        f"({sum(g.prunable for g in analysis.groups)}) | {analysed:.2f} | {seconds:.2f} | "
        f"{traced_peak / 2**20:.0f} ({traced_peak / size:.2f}x) | {rss.growth / 2**20:.0f} "
        f"({rss.growth / size:.2f}x) | {pruned_info.macs / info.macs:.1%} |",
    ]


class _PeakRss:
    """Samples this process's resident set size every 2 ms; `growth` is the peak over the
    value at entry (protobuf copies are invisible to tracemalloc, not to this)."""

    def __enter__(self):
        import threading

        self.base = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        self.growth = self.peak - self.base


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resnet20", help="trained ResNet-20 ONNX (default: bundled)")
    parser.add_argument("--mobilenetv2", help="trained MobileNetV2 ONNX (default: bundled)")
    parser.add_argument("--runs", type=int, default=300, help="timed runs per model")
    parser.add_argument("--multiple", type=int, default=8, help="channel rounding multiple")
    parser.add_argument("--models", default="resnet20,mobilenetv2",
                        help="small models to run (default: %(default)s)")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_large:  # first, so the process peak is the pruning's own
        print("\n".join(bench_large()), end="\n\n")
        sys.stdout.flush()
    if not args.skip_small:
        print("| model | MACs | speedup batch 1 | x MACs (goal >= 0.8) | speedup batch 16 | "
              "x MACs | top-1 pruned | top-1 + reconstruction |")
        print("|---|---|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.models.split(","):
                for row in bench_small(name, getattr(args, name), args.runs, args.multiple,
                                       Path(tmp)):
                    print(row)
                    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
