"""Benchmark the search agents against uniform baselines (slow; not part of the tests).

For each bundled model (ResNet-20, the MobileNetV2-style one) on Fashion-MNIST, with
onnxruntime on the CPU with 1 thread, every agent gets the same trial budget for the
objective "best accuracy with latency <= BUDGET x original". Reported per agent: best
accuracy within each latency budget, the hypervolume of (accuracy, latency ratio)
over all its trials, time to reach 95% of its final best, trials per minute (and
evaluations per minute: cached trials cost no evaluation). Baselines are measured in
the same process: onnxruntime's static int8 on every layer, uniform sparsity, uniform
channel pruning at about half the MACs (once the pruning pass is merged), and random
search (the `random` agent). Writes a markdown table and a Pareto plot (PNG).

    python tools/bench_search.py --models resnet20 --agents tpe,random,nsga2,ddpg --trials 40
    (writes out/bench-search/bench_search.md and MODEL-pareto.png; a path to an .onnx
    file may stand for a bundled model name)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import optuna

from onnxamc import api
from onnxamc.search.pareto import hypervolume, pareto_indices

HV_REFERENCE = (0.0, 1.0)  # (accuracy, latency ratio): only policies faster than the original count


def baselines(model: str, data: str, samples: int, runs: int) -> list[dict]:
    """Uniform policies measured side by side with the original (ratios to it)."""
    specs = [("original", None), ("ORT static int8 (all layers)", "bits=8"),
             ("uniform sparsity 0.5", "sparsity=0.5"),
             ("uniform sparsity 0.5 + int8", "sparsity=0.5,bits=8")]
    specs.append(("uniform channel pruning (~0.5 MACs)", "keep=0.71"))  # keep² ≈ 0.5
    models = [api.load(model)] + [api.apply(model, api.uniform_policy(model, spec))
                                  for _, spec in specs[1:]]
    metrics = api.bench(models, data, threads=1, runs=runs, eval_samples=samples)
    return [{"name": name, "accuracy": m.quality, "latency_ratio": m.latency_ratio,
             "size_ratio": m.size_bytes / metrics[0].size_bytes} for (name, _), m in
            zip(specs, metrics)]


def run_agent(model: str, agent: str, args, out: Path) -> dict:
    start = time.time()
    outcome = api.search(model, "fashion-mnist", latency=args.search_budget, trials=args.trials,
                         agent=agent, storage=out / f"{Path(model).stem}-{agent}.journal",
                         study=agent, output=out / f"{Path(model).stem}-{agent}.onnx",
                         eval_samples=args.eval_samples, runs=args.latency_runs,
                         verify_runs=args.latency_runs * 2, threads=1, seed=args.seed,
                         progress=False)
    wall = time.time() - start
    study = outcome.result.study
    trials = [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
              if "metrics" in t.user_attrs]
    points = [(t.user_attrs["metrics"]["quality"], t.user_attrs["metrics"]["latency_ratio"])
              for t in trials]
    row = {"agent": agent, "trials": len(trials), "points": points,
           "trials_per_min": outcome.result.trials_per_minute,
           "evaluations_per_min": 60 * (outcome.result.new_trials - outcome.result.cache_hits)
           / max(outcome.result.seconds, 1e-9),
           "cache_hits": outcome.result.cache_hits, "wall_s": wall,
           "hypervolume": hypervolume(points, ["maximize", "minimize"], HV_REFERENCE)}
    for budget in args.budgets:
        feasible = [a for a, lat in points if lat <= budget]
        row[f"best@{budget:g}"] = max(feasible) if feasible else None
    row["time_to_95"] = time_to_fraction(trials, args.search_budget, 0.95)
    if outcome.compressed is not None:
        row["verified"] = {"accuracy": outcome.compressed.quality,
                           "latency_ratio": outcome.compressed.latency_ratio,
                           "original_accuracy": outcome.original.quality}
    return row


def time_to_fraction(trials, budget: float, fraction: float) -> float | None:
    """Seconds from the study's first trial until the best feasible accuracy first
    reached `fraction` of its final value."""
    feasible = [(t.datetime_complete, t.user_attrs["metrics"]["quality"]) for t in trials
                if t.user_attrs["metrics"]["latency_ratio"] <= budget and t.datetime_complete]
    if not feasible or not trials:
        return None
    start = min(t.datetime_start for t in trials if t.datetime_start)
    final = max(a for _, a in feasible)
    for done, accuracy in sorted(feasible):
        if accuracy >= fraction * final:
            return (done - start).total_seconds()
    return None


def markdown(model: str, base: list[dict], rows: list[dict], args) -> str:
    budgets = " | ".join(f"best acc @ lat<={b:g}" for b in args.budgets)
    lines = [f"### {Path(model).stem}: {args.trials} trials per agent, objective best accuracy "
             f"with latency <= {args.search_budget:g} x original; ORT CPU, 1 thread, "
             f"{args.eval_samples} evaluation images", "",
             f"| agent | {budgets} | hypervolume | time to 95% (s) | trials/min | "
             "evaluations/min | cache hits | chosen, re-measured |",
             "|---" * (7 + len(args.budgets)) + "|"]
    for r in rows:
        best = " | ".join(_pct(r[f"best@{b:g}"]) for b in args.budgets)
        t95 = "-" if r["time_to_95"] is None else f"{r['time_to_95']:.0f}"
        v = r.get("verified")
        chosen = f"{_pct(v['accuracy'])} at x{v['latency_ratio']:.3f}" if v else "-"
        lines.append(f"| {r['agent']} | {best} | {r['hypervolume']:.4f} | {t95} | "
                     f"{r['trials_per_min']:.1f} | {r['evaluations_per_min']:.1f} | "
                     f"{r['cache_hits']} | {chosen} |")
    lines += ["", "| baseline | accuracy | latency ratio | size ratio |", "|---|---|---|---|"]
    for b in base:
        lines.append(f"| {b['name']} | {_pct(b['accuracy'])} | {b['latency_ratio']:.3f} | "
                     f"{b['size_ratio']:.3f} |")
    lines += ["", verdict(base, rows), ""]
    return "\n".join(lines)


def verdict(base: list[dict], rows: list[dict]) -> str:
    """The issue's goal: the best agent dominates every baseline, with a >= 2x measured
    speedup at no more than 1 point of accuracy lost. Judged on each agent's chosen
    policy as re-measured after its search (search-time ratios are noisier), and noting
    that the uniform seeds (int8 everywhere, ...) are enqueued for every agent."""
    original = base[0]
    goal = sorted(r["agent"] for r in rows if r.get("verified")
                  and r["verified"]["latency_ratio"] <= 0.5
                  and r["verified"]["accuracy"] >= r["verified"]["original_accuracy"] - 0.01)
    points = [p for r in rows for p in r["points"]]
    dominated = all(any(a >= b["accuracy"] and lat <= b["latency_ratio"] for a, lat in points)
                    for b in base[1:])
    speed = (f"2x within 1 point, re-measured: {', '.join(goal)}" if goal else
             "goal not met: no chosen policy re-measured at 2x speedup within 1 point")
    return (f"{speed}; every baseline {'is' if dominated else 'is NOT'} matched or dominated "
            f"by some searched policy (search-time measurements; original "
            f"{_pct(original['accuracy'])}).")


def plot(model: str, base: list[dict], rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for r in rows:
        acc, lat = zip(*r["points"]) if r["points"] else ((), ())
        ax.scatter(lat, acc, s=10, alpha=0.4)
        front = sorted(r["points"][i] for i in pareto_indices(r["points"], ["maximize", "minimize"]))
        if front:
            fa, fl = zip(*sorted(front, key=lambda p: p[1]))
            ax.plot(fl, fa, "-o", ms=3, label=f"{r['agent']} front")
    for b in base:
        ax.scatter([b["latency_ratio"]], [b["accuracy"]], marker="*", s=120, label=b["name"])
    ax.set_xlabel("latency / original (ORT CPU, 1 thread)")
    ax.set_ylabel("accuracy (Fashion-MNIST subset)")
    ax.set_title(f"{Path(model).stem}: searched policies and baselines")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet20,mobilenetv2")
    p.add_argument("--agents", default="tpe,random,qmc,cmaes,gp,nsga2,ddpg,rl")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--search-budget", type=float, default=0.5,
                   help="latency budget of the searched objective (ratio of the original)")
    p.add_argument("--budgets", default="0.5,0.8", help="latency budgets to report")
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--latency-runs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/bench-search")
    p.add_argument("--render", action="store_true",
                   help="only rewrite the table and plots from the stored MODEL-results.json")
    args = p.parse_args(argv)
    args.budgets = [float(b) for b in args.budgets.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from onnxamc.models import bundled_model_path

    report = []
    for name in args.models.split(","):
        model = name if name.endswith(".onnx") else str(bundled_model_path(name))
        name = Path(model).stem
        stored = out / f"{name}-results.json"
        if args.render:
            saved = json.loads(stored.read_text())
            report.append(markdown(model, saved["baselines"], saved["agents"], args))
            plot(model, saved["baselines"], saved["agents"], out / f"{name}-pareto.png")
            continue
        base = baselines(model, "fashion-mnist", args.eval_samples, args.latency_runs * 2)
        rows = []
        for agent in args.agents.split(","):
            rows.append(run_agent(model, agent, args, out))
            print(f"{name} {agent}: {json.dumps({k: v for k, v in rows[-1].items() if k != 'points'})}",
                  flush=True)
        report.append(markdown(model, base, rows, args))
        plot(model, base, rows, out / f"{name}-pareto.png")
        stored.write_text(json.dumps({"baselines": base, "agents": rows},
                                                             indent=1, default=str))
    (out / "bench_search.md").write_text("\n".join(report))
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
