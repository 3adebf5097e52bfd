"""Benchmark: onnxruntime against TVM (untuned, and tuned with a stated budget) on the
reference models, with tuning time, and the per-layer table's prediction error.

Not a test: it takes minutes (tuning). All runtimes of one model are timed interleaved
in one process, so the ratios hold on a noisy machine even when absolute times do not.

    PYTHONPATH=. python tools/bench_targets.py --trials 64 --out bench-targets.json
    PYTHONPATH=. python tools/bench_targets.py model.onnx --trials 0   # no tuning
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from onnxamc.graph import load_model
from onnxamc.models import BUNDLED
from onnxamc.runtime.latency import measure_interleaved
from onnxamc.runtime.layer_table import LayerTable
from onnxamc.runtime.measure import TargetMeter
from onnxamc.runtime.target import load_target
from onnxamc.runtime.tvm_build import input_shapes


def feed_for(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.random(v, dtype=np.float32) for k, v in input_shapes(model).items()}


def bench_model(path: Path, trials: int, database: Path, runs: int, threads: int) -> dict:
    model = load_model(path)
    feed = feed_for(model)
    ort_target = load_target("cpu-ort", threads)
    tvm_target = replace(load_target("cpu-tvm", threads),
                         tvm_target={"kind": "llvm", "num-cores": threads})
    row: dict = {"model": path.name, "threads": threads}
    runners, names = [], []

    meter = TargetMeter(ort_target)
    prepared = meter.prepare(model, feed)
    runners.append(prepared.run), names.append("onnxruntime")

    meter = TargetMeter(tvm_target)
    prepared = meter.prepare(model, feed)
    row["tvm_untuned_build_s"] = prepared.build_seconds
    runners.append(prepared.run), names.append("tvm untuned")
    np.testing.assert_allclose(prepared.outputs(feed)[0], _ort_outputs(model, feed),
                               rtol=1e-3, atol=1e-4)

    if trials:
        tuned_target = replace(tvm_target, tuning_trials=trials, tuning_database=database)
        from onnxamc.runtime import tuning

        meter = TargetMeter(tuned_target)
        prepared = meter.prepare(model, feed)
        report = tuning.LAST_REPORT[0]
        row.update(tuning_trials=trials, tuning_s=report.seconds, tuning_tasks=report.tasks,
                   tuning_tasks_tuned=report.tuned_now, tuned_build_s=prepared.build_seconds)
        runners.append(prepared.run), names.append(f"tvm tuned ({trials} trials)")
        start = time.perf_counter()
        TargetMeter(tuned_target).prepare(model, feed)  # the next trial: records reused
        row["tuned_rebuild_s"] = time.perf_counter() - start

    stats = measure_interleaved(runners, warmup=5, runs=runs)
    row["latency_ms"] = {n: s.to_dict() for n, s in zip(names, stats)}
    row["ratio_to_onnxruntime"] = {n: s.median_ms / stats[0].median_ms
                                   for n, s in zip(names, stats)}

    for target, name in ((ort_target, "onnxruntime"), (tvm_target, "tvm untuned")):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            prediction = LayerTable(target, Path(tmp) / "table.json").predict(model)
            table_s = time.perf_counter() - start
        measured = row["latency_ms"][name]["median_ms"]
        row.setdefault("layer_table", {})[name] = {
            "predicted_ms": prediction.total_ms, "measured_ms": measured,
            "error": prediction.error(measured), "layers": len(prediction.layers),
            "entries_measured": prediction.measured_now, "build_s": table_s}
    return row


def _ort_outputs(model, feed):
    from onnxamc.runtime import make_session

    return make_session(model).run(None, feed)[0]


def markdown(rows: list[dict]) -> str:
    lines = ["| model | runtime | median ms | p90 ms | cv | x onnxruntime |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        for name, s in r["latency_ms"].items():
            lines.append(f"| {r['model']} | {name} | {s['median_ms']:.3f} | {s['p90_ms']:.3f} "
                         f"| {s['cv']:.2f} | {r['ratio_to_onnxruntime'][name]:.2f} |")
    lines += ["", "| model | tuning budget | tuning s | tasks (tuned now) | rebuild with records s |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "tuning_s" in r:
            lines.append(f"| {r['model']} | {r['tuning_trials']} | {r['tuning_s']:.0f} | "
                         f"{r['tuning_tasks']} ({r['tuning_tasks_tuned']}) | "
                         f"{r['tuned_rebuild_s']:.1f} |")
    lines += ["", "| model | runtime | layer-table prediction ms | measured ms | error |",
              "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        for name, t in r["layer_table"].items():
            lines.append(f"| {r['model']} | {name} | {t['predicted_ms']:.3f} | "
                         f"{t['measured_ms']:.3f} | {100 * t['error']:+.1f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="ONNX files (default: the bundled models)")
    parser.add_argument("--trials", type=int, default=64,
                        help="MetaSchedule budget per model (0: no tuning; default 64)")
    parser.add_argument("--database", help="tuning database folder (default: a fresh one)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the rows as JSON here too")
    args = parser.parse_args()
    paths = [Path(m) for m in args.models] or [p for p in BUNDLED.values() if p.exists()]
    database = Path(args.database or tempfile.mkdtemp(prefix="onnxamc-tuning-"))
    rows = []
    for path in paths:
        print(f"{path.name}: ...", flush=True)
        rows.append(bench_model(path, args.trials, database, args.runs, args.threads))
    text = markdown(rows)
    print(f"\nmachine: {platform.machine()}, {platform.processor() or 'cpu'}; "
          f"{args.threads} thread(s); tuning database {database}\n")
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
