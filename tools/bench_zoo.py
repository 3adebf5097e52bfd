"""One table over the test zoo (tests/zoo): how much of each real model onnxamc can prune
and quantize, and whether the result is valid and faster.

Columns, per model:
  groups        prunable channel groups / all groups
  channels      output channels of the conv/linear layers in prunable groups / all of them
  free channels the same share among the channels the model's outputs do not fix (a
                classifier's classes, an embedding's width that is the output: no
                structured pruning may change them, so pruning tools leave them out)
  keep=0.5      the uniformly half-pruned model is valid: onnx checker, onnxruntime runs
                it, and the predicted MACs equal the MACs counted from onnxruntime's shapes
  MACs          MACs ratio of the keep=0.5 model
  speedup/MACs  measured speedup of the keep=0.5 model / its MACs reduction (1.0: the
                latency falls as much as the MACs)
  int8 ours     latency of `apply --uniform bits=8` (its latency guard: int8 only where
                it pays) / fp32, interleaved in one run with
  int8 ort      onnxruntime's quantize_static with its defaults on the same file
  search        latency ratio and fidelity of the best model of a short `quant` search
                (--search-trials N; n/a without)

Latency: one thread, interleaved runs, median of --runs; absolute times on a shared
machine are noise, ratios measured side by side are the result.

  python tools/bench_zoo.py --quick                  # the fast zoo, fewer runs
  python tools/bench_zoo.py --models tv_resnet18_ts timm_vit_tiny_ts --runs 200
  python tools/bench_zoo.py --slow --search-trials 8 --markdown zoo.md
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import zoo  # noqa: E402
from zoo.macs import measured_macs  # noqa: E402

from onnxamc import api  # noqa: E402
from onnxamc.graph import analyze, find_layers  # noqa: E402
from onnxamc.runtime import make_session  # noqa: E402
from onnxamc.runtime.ort import time_sessions  # noqa: E402

NA = "n/a"
COLUMNS = ("model", "source", "groups", "channels", "free channels", "keep=0.5", "MACs",
           "speedup/MACs", "int8 ours", "int8 ort", "search lat", "search fid", "seconds")


@dataclass
class Row:
    model: str
    source: str
    cells: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def cell(self, column: str) -> str:
        return self.cells.get(column, NA)


def groups_cells(model: onnx.ModelProto) -> dict[str, str]:
    groups = api.channel_groups(model)
    layers = {l.name: l for l in find_layers(model)}
    prunable = [g for g in groups if g.prunable]
    in_prunable = {name for g in prunable for name in g.layers}
    fixed = {name for g in groups if (g.blocked_by or "").startswith("model output")
             for name in g.layers}
    total = sum(l.c_out for l in layers.values())
    free = sum(l.c_out for name, l in layers.items() if name not in fixed)
    kept = sum(l.c_out for name, l in layers.items() if name in in_prunable)
    return {"groups": f"{len(prunable)}/{len(groups)}",
            "channels": f"{kept / total:.1%}" if total else NA,
            "free channels": f"{kept / free:.1%}" if free else NA}


def predicted_macs(model: onnx.ModelProto, keep: float) -> int | None:
    """What the pruning plan predicts for `keep` on every prunable group (None when the
    internals this reads have moved)."""
    try:
        from onnxamc.graph.groups import channel_groups
        from onnxamc.passes.prune_channels import choose_channels, group_ratios
    except ImportError:
        return None
    analysis = channel_groups(model)
    ratios = group_ratios(analysis, {l.name: keep for l in find_layers(model)
                                     if analysis.group_of(l.name) is not None
                                     and analysis.group_of(l.name).prunable})
    return analysis.plan(choose_channels(model, analysis, ratios, 8, "l1")).predict()[0]


def prune_cells(model: onnx.ModelProto, entry, feed, runs: int) -> dict[str, str]:
    policy = api.uniform_policy(model, "keep=0.5")
    pruned = api.apply(model, policy, reconstruct=False)  # structure and speed only
    onnx.checker.check_model(pruned)
    base, measured = analyze(model).macs, measured_macs(pruned, feed)
    predicted = predicted_macs(model, 0.5)
    valid = predicted is None or predicted == measured
    cells = {"keep=0.5": ("yes" if valid else f"MACs {predicted:,} predicted, {measured:,} run")
             + ("" if predicted is not None else " (no prediction)"),
             "MACs": f"{measured / base:.2f}" if base else NA}
    fp32, half = time_sessions([make_session(model, 1), make_session(pruned, 1)], feed,
                               runs=runs)
    speedup = fp32.median_ms / half.median_ms
    if base and measured < base:
        cells["speedup/MACs"] = f"{speedup / (base / measured):.2f}"
    return cells


def ort_quantize_static(path: Path, entry, samples: int) -> onnx.ModelProto:
    """onnxruntime's quantize_static with its defaults (QDQ, per-tensor, u8 activations,
    s8 weights) on the file as it ships, calibrated on the same random data as ours."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(entry.feed(seed=10 + i) for i in range(samples))

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ort_int8.onnx"
        quantize_static(str(path), str(out), Reader())
        return onnx.load(str(out))


def random_dataset(entry, samples: int):
    """The zoo's own random inputs (token ids, masks, sample rates drawn right)."""
    from onnxamc.data import Dataset

    feeds = [entry.feed(seed=10 + i) for i in range(samples)]
    return Dataset({k: np.concatenate([f[k] for f in feeds]) if feeds[0][k].ndim else feeds[0][k]
                    for k in feeds[0]}, name=f"zoo-random:{samples}")  # a scalar goes whole


def int8_cells(model: onnx.ModelProto, path: Path, entry, feed, runs: int,
               samples: int) -> dict[str, str]:
    calibration = random_dataset(entry, samples)
    # what `onnxamc apply --uniform bits=8` writes: int8 placed where it pays, else float
    ours, _ = api.apply_guarded(model, api.uniform_policy(model, "bits=8"),
                                calibration=calibration, threads=1)
    try:
        theirs = ort_quantize_static(path, entry, samples)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own quantizer fails on some
        theirs, failed = None, f"fails: {_line(exc)}"
    models = [model, ours] + ([theirs] if theirs is not None else [])
    stats = time_sessions([make_session(m, 1) for m in models], feed, runs=runs)
    return {"int8 ours": f"{stats[1].median_ms / stats[0].median_ms:.2f}",
            "int8 ort": f"{stats[2].median_ms / stats[0].median_ms:.2f}" if theirs is not None
            else failed}


def search_cells(model: onnx.ModelProto, calibration, trials: int, runs: int) -> dict[str, str]:
    """A short search over the `quant` action on random data (fidelity to the original),
    its best model re-measured side by side with the original."""
    with tempfile.TemporaryDirectory() as tmp:
        outcome = api.search(model, calibration, Path(tmp) / "best.onnx",
                             calibration=calibration, trials=trials, actions=("quant",),
                             progress=False, runs=runs, verify_runs=runs)
    best = outcome.compressed
    if best is None:
        return {"search lat": "none found"}
    return {"search lat": f"{best.latency_ratio:.2f}" if best.latency_ratio else NA,
            "search fid": f"{best.quality:.3f} {best.metric}" if best.quality is not None else NA}


def bench(name: str, runs: int, samples: int, search_trials: int) -> Row:
    entry = zoo.entry(name)
    row = Row(name, entry.source)
    start = time.time()
    try:
        path = zoo.get(name)
    except zoo.ZooUnavailable as exc:
        row.errors.append(str(exc))
        return row
    feed = entry.feed(seed=3)
    steps = [("groups", lambda m: groups_cells(m)),
             ("prune", lambda m: prune_cells(m, entry, feed, runs)),
             ("int8", lambda m: int8_cells(m, path, entry, feed, runs, samples))]
    if search_trials:
        steps.append(("search", lambda m: search_cells(m, random_dataset(entry, samples),
                                                        search_trials, runs)))
    try:
        model = api.load(path, {k: v for k, v in entry.input_shapes.items() if v})
    except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
        row.errors.append(f"load: {_line(exc)}")
        return row
    for label, step in steps:
        try:
            row.cells.update(step(model))
        except Exception as exc:  # noqa: BLE001
            row.errors.append(f"{label}: {_line(exc)}")
            row.cells.setdefault(_first_column(label), "error")
    row.cells["seconds"] = f"{time.time() - start:.0f}"
    return row


def _first_column(step: str) -> str:
    return {"groups": "groups", "prune": "keep=0.5", "int8": "int8 ours",
            "search": "search lat"}[step]


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return (f"{type(exc).__name__}: {text[0] if text else ''} "
            f"({Path(where.filename).name}:{where.lineno})")


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join([r.model, r.source] + [r.cell(c) for c in COLUMNS[2:]])
                     + " |")
    errors = [f"- {r.model}: {e}" for r in rows for e in r.errors]
    return "\n".join(lines + (["", "errors:"] + errors if errors else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="zoo names (default: the fast zoo)")
    parser.add_argument("--slow", action="store_true", help="include the slow models")
    parser.add_argument("--quick", action="store_true", help="30 timed runs, 8 samples")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per model")
    parser.add_argument("--samples", type=int, default=32, help="calibration samples")
    parser.add_argument("--search-trials", type=int, default=0,
                        help="trials of a `quant` search per model (0: skip the columns)")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.samples = 30, 8
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    names = args.models or zoo.names(slow=args.slow)
    rows = []
    for name in names:
        row = bench(name, args.runs, args.samples, args.search_trials)
        rows.append(row)
        print(" | ".join([row.model] + [row.cell(c) for c in COLUMNS[2:]])
              + (f"  [{'; '.join(row.errors)}]" if row.errors else ""), flush=True)
    table = markdown(rows)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
