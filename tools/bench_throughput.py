"""Benchmark the search's throughput (issue 14; slow, not part of the tests).

For each bundled model (ResNet-20, the MobileNetV2-style one) on its Fashion-MNIST
evaluation subset, onnxruntime CPU 1 thread, default objective (lowest latency within a
1-point drop), the same wall-time budget per configuration:
- trials per minute with 1 and 2 workers, with and without the pruner (multi-fidelity);
- time to reach 95% of the configuration's best final objective (minutes), and time to
  the first feasible policy (what `compress` shows first);
- the latency ratio of the same policies (the enqueued uniform baselines) measured in the
  1-worker and the 2-worker study (goal: within 5%);
- optionally a large NSGA-II Pareto run on 2 workers end to end (--nsga-trials 1000);
- a quant-only search against onnxruntime's default static int8. The comparison with
  the accuracy-aware quantizers (NNCF, Intel Neural Compressor) within the same wall
  time is tools/bench_quant_tools.py, run from a venv that has them.
Say the machine's load next to the figures (`uptime` is recorded in the output).

    python tools/bench_throughput.py --minutes 4 --out out/bench-throughput
    python tools/bench_throughput.py --models resnet20 --nsga-trials 1000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # as the CLI does: before numpy is imported

import optuna  # noqa: E402

from onnxamc import api  # noqa: E402
from onnxamc.models import bundled_model_path  # noqa: E402

COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def run_config(model: str, workers: int, pruner: str, minutes: float, out: Path,
               **options) -> dict:
    """One search under a wall-time budget; its throughput and convergence figures."""
    label = f"{model}-w{workers}-{pruner}" + "".join(f"-{k}{v}" for k, v in options.items())
    start = time.time()
    outcome = api.search(_path(model), "fashion-mnist", out / f"{label}.onnx",
                         storage=out / f"{label}.journal", study=label, trials=100000,
                         timeout=minutes * 60, workers=workers, pruner=pruner,
                         progress=False, **options)
    wall = time.time() - start
    study = outcome.result.study
    trials = [t for t in study.trials if t.state in COUNTED]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {"label": label, "model": model, "workers": workers, "pruner": pruner,
            "trials": len(trials), "complete": len(complete),
            "trials_per_min": 60 * len(trials) / max(outcome.result.seconds, 1e-9),
            "wall_s": wall, "to_95": _time_to_95(study, trials),
            "first_feasible_s": _first_feasible(study, trials, start),
            "result": outcome.compressed.describe_latency() if outcome.compressed else "-",
            "quality": outcome.compressed.describe_quality() if outcome.compressed else "-",
            "baselines": {t.user_attrs["baseline"]: t.user_attrs["metrics"]["latency_ratio"]
                          for t in complete if "baseline" in t.user_attrs}}


def _feasible_values(trials):
    for t in sorted(trials, key=lambda t: t.datetime_complete):
        if t.state == optuna.trial.TrialState.COMPLETE and t.values and \
                all(v <= 0 for v in t.constraints.values()):
            yield t, t.values[0]


def _time_to_95(study, trials) -> float | None:
    """Minutes from the study's first trial until the best-so-far feasible value was
    within 5% of the final best (lowest latency ratio: <= 1.05 x the best)."""
    values = list(_feasible_values(trials))
    if not values:
        return None
    best = min(v for _, v in values)
    origin = min(t.datetime_start for t in trials)
    running = float("inf")
    for t, v in values:
        running = min(running, v)
        if running <= best * 1.05:
            return (t.datetime_complete - origin).total_seconds() / 60
    return None


def _first_feasible(study, trials, start: float) -> float | None:
    """Seconds from the call until the first feasible policy faster than the original."""
    for t, v in _feasible_values(trials):
        if v < 1.0:
            return t.datetime_complete.timestamp() - start
    return None


def ratio_agreement(one: dict, two: dict) -> str:
    shared = sorted(set(one["baselines"]) & set(two["baselines"]))
    parts = [f"{name}: {one['baselines'][name]:.3f} vs {two['baselines'][name]:.3f} "
             f"({100 * (two['baselines'][name] / one['baselines'][name] - 1):+.1f}%)"
             for name in shared if one["baselines"][name]]
    return "; ".join(parts) or "no shared baselines"


def nsga(model: str, trials: int, out: Path) -> dict:
    start = time.time()
    outcome = api.search(_path(model), "fashion-mnist", out / "nsga.onnx",
                         storage=out / "nsga.journal", study="nsga", trials=trials,
                         agent="nsga2", objective="pareto", workers=2, progress=False)
    return {"trials": outcome.result.new_trials, "minutes": (time.time() - start) / 60,
            "front": len(outcome.result.pareto),
            "result": f"{outcome.compressed.describe_quality()}, "
                      f"{outcome.compressed.describe_latency()}"}


def quant_only(model: str, seconds: float, out: Path) -> dict:
    """A quant-only search within `seconds` beside onnxruntime's default static int8."""
    start = time.time()
    outcome = api.search(_path(model), "fashion-mnist", out / "quant.onnx",
                         storage=out / "quant.journal", study="quant", trials=100000,
                         actions="quant", timeout=seconds, progress=False)
    ours = time.time() - start
    baseline = api.bench([_path(model), api.apply(_path(model), api.uniform_policy(
        _path(model), "bits=8"))], "fashion-mnist", threads=1, runs=200)
    others = "NNCF and Intel Neural Compressor: see tools/bench_quant_tools.py"
    return {"seconds": ours, "ours": f"{outcome.compressed.describe_quality()}, "
                                     f"{outcome.compressed.describe_latency()}, size "
                                     f"x{outcome.compressed.size_ratio:.3f}",
            "ort_int8": f"{baseline[1].describe_quality()}, latency "
                        f"x{baseline[1].latency_ratio:.3f}, size x{baseline[1].size_ratio:.3f}",
            "others": others}


def _path(model: str) -> str:
    return str(bundled_model_path(model)) if not model.endswith(".onnx") else model


def table(rows: list[dict]) -> str:
    lines = ["| config | trials | trials/min | to 95% of best (min) | first good (s) | "
             "result |", "|---|---|---|---|---|---|"]
    for r in rows:
        to95 = f"{r['to_95']:.1f}" if r["to_95"] is not None else "-"
        first = f"{r['first_feasible_s']:.0f}" if r["first_feasible_s"] is not None else "-"
        lines.append(f"| {r['label']} | {r['trials']} ({r['complete']} complete) | "
                     f"{r['trials_per_min']:.1f} | {to95} | {first} | {r['quality']}, "
                     f"{r['result']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenetv2")
    parser.add_argument("--minutes", type=float, default=4.0, help="per configuration")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--pruners", default="halving,none")
    parser.add_argument("--nsga-trials", type=int, default=0)
    parser.add_argument("--quant-seconds", type=float, default=110.0)
    parser.add_argument("--out", default="out/bench-throughput")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    rows = []
    for model in args.models.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            for pruner in args.pruners.split(","):
                rows.append(run_config(model, workers, pruner, args.minutes, out))
                print(json.dumps(rows[-1]), flush=True)
    report = [f"# bench_throughput {datetime.datetime.now():%Y-%m-%d %H:%M}",
              f"load average before: {load[0]:.1f} / after: {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores", "", table(rows), ""]
    for model in args.models.split(","):
        by = {(r["workers"], r["pruner"]): r for r in rows if r["model"] == model}
        for pruner in args.pruners.split(","):
            if (1, pruner) in by and (2, pruner) in by:
                report.append(f"{model} ({pruner}): same policies, 1 vs 2 workers: "
                              f"{ratio_agreement(by[(1, pruner)], by[(2, pruner)])}")
    if args.nsga_trials:
        result = nsga(args.models.split(",")[0], args.nsga_trials, out)
        report.append(f"\nNSGA-II {result['trials']} policies on 2 workers: "
                      f"{result['minutes']:.1f} min, front of {result['front']}; "
                      f"written: {result['result']}")
    if args.quant_seconds:
        q = quant_only(args.models.split(",")[0], args.quant_seconds, out)
        report.append(f"\nquant-only search, {q['seconds']:.0f} s: {q['ours']}; onnxruntime "
                      f"static int8: {q['ort_int8']}; {q['others']}")
    text = "\n".join(report) + "\n"
    (out / "bench_throughput.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
