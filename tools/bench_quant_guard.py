"""The `--guard` table of tools/bench_quant.py: our uniform int8 against onnxruntime's
quantize_static on the same model, timed interleaved beside fp32 in one run."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from onnxamc import api
from onnxamc.graph import analyze
from onnxamc.passes.quantize import _Feeds, _quiet_root_logger
from onnxamc.quant_guard import fusion_report, guarded_int8, interleaved_ratios

ROWS = ("fp32", "ours", "ort u8/s8", "ort s8/s8")


def ort_quantize_static(model: onnx.ModelProto, feeds: list[dict], activations_u8: bool
                        ) -> onnx.ModelProto:
    """onnxruntime's quantize_static, QDQ, per-channel, MinMax; activations u8 or its
    library default s8."""
    from onnxruntime.quantization import QuantType, quantize_static

    kind = QuantType.QUInt8 if activations_u8 else QuantType.QInt8
    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        onnx.save(model, f"{tmp}/in.onnx")
        quantize_static(f"{tmp}/in.onnx", f"{tmp}/q.onnx", _Feeds(feeds), per_channel=True,
                        activation_type=kind, weight_type=QuantType.QInt8)
        return onnx.load(f"{tmp}/q.onnx")


def ort_quantize_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization import quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        onnx.save(model, f"{tmp}/in.onnx")
        quantize_dynamic(f"{tmp}/in.onnx", f"{tmp}/q.onnx")
        return onnx.load(f"{tmp}/q.onnx")


def resolve(name: str, work: Path) -> tuple[str, onnx.ModelProto, list[dict]]:
    """(label, model, calibration feeds of batch 1) for a path, a zoo name or minilm."""
    if name == "minilm":
        import minilm

        path = work / "minilm.onnx"
        if not path.exists():
            minilm.export_minilm(path)
        tokenizer = minilm.WordPiece(minilm.model_dir() / "vocab.txt")
        ids = tokenizer.encode(minilm.sentences()[:32])
        return "minilm", api.load(path), [{"input_ids": ids[i:i + 1]} for i in range(len(ids))]
    path = Path(name)
    rng = np.random.default_rng(0)
    if not path.exists():  # a model of the tests' zoo, fed as the zoo feeds it
        import zoo

        inputs = zoo.entry(name).inputs
        model = api.load(zoo.get(name))
        return name, model, [{i.name: i.draw(rng) for i in inputs} for _ in range(16)]
    model = api.load(path)
    feeds = []
    for _ in range(16):
        feed = {}
        for spec in analyze(model).inputs:
            shape = [d if isinstance(d, int) else 1 for d in spec.shape]
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        feeds.append(feed)
    return path.stem, model, feeds


def guard_row(name: str, args) -> dict:
    label, model, feeds = resolve(name, Path(args.work))
    t0 = time.time()
    policy = api.uniform_policy(model, "bits=8")
    measure = interleaved_ratios(feeds[0], args.threads, args.guard_runs, args.warmup)
    chosen = guarded_int8(model, policy, lambda: feeds, measure)
    ours_s = time.time() - t0
    transformer = any(a.dynamic for a in policy.layers.values())
    ort_u8 = ort_quantize_dynamic(model) if transformer else ort_quantize_static(model, feeds, True)
    ort_s8 = ort_quantize_dynamic(model) if transformer else ort_quantize_static(model, feeds, False)
    models = [model, chosen.model, ort_u8, ort_s8]
    ratios = interleaved_ratios(feeds[0], args.threads, args.runs, args.warmup)(models)
    size = [m.ByteSize() for m in models]
    row = {"model": label, "guard": chosen.label, "verdict": chosen.message,
           "candidates": {k: str(v) for k, v in chosen.tried.items()},
           "build_s": round(ours_s, 1), "ort_baseline": "quantize_dynamic" if transformer
           else "quantize_static per-channel",
           "fused": {k: fusion_report(m).summary() for k, m in zip(ROWS[1:], models[1:])}}
    for key, r, b in zip(ROWS, ratios, size):
        row[key] = {"x_latency": round(r.median, 3), "spread": round(r.spread, 3),
                    "x_size": round(b / size[0], 3)}
    row["fidelity"] = fidelity(models, feeds)
    return row


def fidelity(models: list[onnx.ModelProto], feeds: list[dict]) -> dict[str, float]:
    """Cosine of each model's first output to fp32's over the calibration inputs."""
    from onnxamc.runtime import make_session

    outs = []
    for m in models:
        session = make_session(m)
        outs.append(np.concatenate([session.run(None, f)[0].reshape(1, -1) for f in feeds]))
    ref = outs[0]
    return {k: round(float(np.mean(np.sum(o * ref, 1) / (np.linalg.norm(o, axis=1) *
                                                         np.linalg.norm(ref, axis=1) + 1e-12))), 4)
            for k, o in zip(ROWS, outs)}


def markdown(rows: list[dict], runs: int) -> str:
    head = ("| model | ours x fp32 | ort u8/s8 x fp32 | ort s8/s8 x fp32 | ours size | "
            "ort size | guard chose | cosine ours / ort |")
    lines = [f"latency: median of {runs} interleaved per-round ratios ± half IQR, batch 1, "
             "1 thread", "", head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def lat(k):
            return f"{r[k]['x_latency']:.2f} ± {r[k]['spread']:.2f}"
        lines.append(f"| {r['model']} | {lat('ours')} | {lat('ort u8/s8')} | {lat('ort s8/s8')} | "
                     f"{r['ours']['x_size']:.2f} | {r['ort u8/s8']['x_size']:.2f} | {r['guard']} | "
                     f"{r['fidelity']['ours']:.3f} / {r['fidelity']['ort u8/s8']:.3f} |")
    return "\n".join(lines)


def run_guard_table(names: list[str], args) -> int:
    rows = []
    for name in names:
        print(f"{name}:", flush=True)
        row = guard_row(name, args)
        rows.append(row)
        print(f"  {row['verdict']}\n  ours {row['ours']}, ort u8/s8 {row['ort u8/s8']}, "
              f"ort s8/s8 {row['ort s8/s8']}", flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows, args.runs))
    slower = [r["model"] for r in rows if r["ours"]["x_latency"] > 1.0]
    beaten = [r["model"] for r in rows if r["ours"]["x_latency"] >
              min(r["ort u8/s8"]["x_latency"], r["ort s8/s8"]["x_latency"])]
    print(f"\nours slower than fp32 (median): {slower or 'none'}; "
          f"ours slower than onnxruntime's: {beaten or 'none'} "
          f"({len(rows) - len(beaten)}/{len(rows)} at most as slow)")
    return 0
