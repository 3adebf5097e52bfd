"""The `onnxamc` command: parses arguments and calls onnxamc.api, nothing more."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from onnxamc import __version__
from onnxamc.errors import OnnxAmcError

MODEL_HELP = "ONNX model file (default: the bundled ResNet-20 trained on Fashion-MNIST)"
DATA_HELP = ("evaluation data: an .npz file (arrays named after the model inputs, optional "
             "'labels') or a built-in name: fashion-mnist[:eval|calib|test|train], digits, "
             "random[:N] (default: %(default)s)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 0
    try:
        return args.run(args) or 0
    except OnnxAmcError as exc:
        print(f"onnxamc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnxamc: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxamc",
        description="ONNX model compression: per-layer sparsity and int8 quantization, "
                    "searched against latency measured in onnxruntime.")
    parser.add_argument("--version", action="version", version=f"onnxamc {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("inspect", help="print the layer table (AMC features, MACs, params)",
                       description="Print every compressible layer (Conv, ConvTranspose, Gemm, "
                                   "MatMul with a constant weight) with its features.")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="print {macs, params, layers} as JSON")
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser("apply", help="apply a policy (JSON or uniform) and write the model",
                       description="Apply a per-layer policy to a model. Give --policy FILE "
                                   "or --uniform FIELD=VALUE,... (e.g. sparsity=0.5,bits=8).")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--policy", help="policy JSON file")
    src.add_argument("--uniform", help="the same action on every layer, e.g. sparsity=0.5,bits=8")
    p.add_argument("-o", "--output", required=True, help="where to write the compressed model")
    _calibration_args(p)
    p.add_argument("--save-policy", help="also write the policy that was applied (JSON)")
    p.set_defaults(run=cmd_apply)

    p = sub.add_parser("bench", help="compare models side by side (accuracy, latency, size)",
                       description="Metrics of each model with ratios to the first; latency "
                                   "runs are interleaved in one process with a fixed thread count.")
    p.add_argument("models", nargs="+", help="ONNX files; the first is the baseline")
    p.add_argument("--data", default="fashion-mnist", help=DATA_HELP)
    p.add_argument("--no-data", action="store_true", help="latency and size only (random input)")
    p.add_argument("--limit", type=int, help="evaluate on the first N samples only")
    _runtime_args(p, runs=100)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("search", help="search per-layer policies against measured latency",
                       description="Search per-layer actions with Optuna TPE. The objective is "
                                   "the lowest latency within an accuracy drop (--max-drop, "
                                   "default 0.01) or the best accuracy within a latency budget "
                                   "(--latency RATIO of the original). Trials are stored; running "
                                   "the same command again continues the study.")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--data", default="fashion-mnist", help=DATA_HELP)
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--latency", type=float, metavar="RATIO",
                      help="latency budget as a ratio of the original (e.g. 0.6)")
    goal.add_argument("--max-drop", type=float, metavar="DROP",
                      help="largest accuracy drop allowed (default 0.01 = 1 point)")
    p.add_argument("--trials", type=int, default=30, help="total trials of the study (default 30)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--actions", default="quant,sparsity",
                   help="actions to search, each with an optional range: quant[=32/8], "
                        "sparsity[=LOW:HIGH[:STEP]] (default: quant,sparsity)")
    p.add_argument("--agent", default="tpe", help="search agent (Optuna sampler): tpe, random, "
                   "qmc, cmaes, gp, nsga2, ddpg, rl (default: tpe)")
    p.add_argument("--objective", help="constrained (default: --latency or --max-drop), amc, "
                   "amc-latency, weighted[:LAMBDA], pareto")
    p.add_argument("--sensitivity", metavar="JSON", help="per-layer sensitivity table "
                   "{\"layers\": {name: {\"bits=8\": drop, ...}}}: its policies are tried first")
    p.add_argument("--predictor", action="store_true",
                   help="skip candidates an accuracy predictor expects to be far worse")
    p.add_argument("--warm-start", metavar="POLICY", help="a policy JSON to try first")
    p.add_argument("--warm-start-from", metavar="MODEL", help="the model --warm-start was "
                   "found for: transfer it to this model's layers (type, relative depth)")
    p.add_argument("--storage", help="journal file or database URL (default: OUTPUT.journal)")
    p.add_argument("--study", help="study name (default: from the output name and objective)")
    p.add_argument("-o", "--output", help="compressed model path (default: MODEL-compressed.onnx)")
    p.add_argument("--eval-samples", type=int, help="evaluate on the first N samples only")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _calibration_args(p, with_method=False)
    _runtime_args(p, runs=50)
    p.set_defaults(run=cmd_search)
    return parser


def _calibration_args(p: argparse.ArgumentParser, with_method: bool = True) -> None:
    p.add_argument("--calibration",
                   help="calibration data for quantization (default: fashion-mnist:calib for "
                        "the bundled data, else the --data set)")
    p.add_argument("--calibration-samples", type=int, default=256,
                   help="samples used to calibrate (default: %(default)s)")
    if with_method:
        p.add_argument("--calibration-method", default="minmax",
                       choices=["minmax", "entropy", "percentile"],
                       help="activation range method (default: %(default)s)")


def _runtime_args(p: argparse.ArgumentParser, runs: int) -> None:
    p.add_argument("--threads", type=int, default=1,
                   help="onnxruntime intra-op threads (default 1: stable on shared machines)")
    p.add_argument("--runs", type=int, default=runs,
                   help=f"timed runs per model after warm-up (default {runs})")


# --- commands ---------------------------------------------------------------------
def cmd_inspect(args) -> int:
    from onnxamc import api

    info = api.analyze(args.model)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    print(format_layer_table(info))
    return 0


def format_layer_table(info) -> str:
    head = ["#", "layer", "op", "c_in", "c_out", "kernel", "stride", "groups", "fmap",
            "params", "MACs", "%MACs"]
    rows = []
    for l in info.layers:
        fmap = "x".join(map(str, l.out_size)) or "-"
        rows.append([str(l.index), l.name, l.op_type, str(l.c_in), str(l.c_out),
                     "x".join(map(str, l.kernel)) or "-", "x".join(map(str, l.stride)) or "-",
                     str(l.groups), fmap, f"{l.params:,}", f"{l.macs:,}",
                     f"{100 * l.macs / info.macs:.1f}" if info.macs else "-"])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    right = {0, 3, 4, 7, 9, 10, 11}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"{len(info.layers)} layers, {info.macs:,} MACs per sample, "
                 f"{info.params:,} parameters, fingerprint {info.fingerprint}")
    return "\n".join(lines)


def cmd_apply(args) -> int:
    from onnxamc import api

    policy = api.uniform_policy(args.model, args.uniform) if args.uniform else args.policy
    api.apply(args.model, policy, args.calibration, args.calibration_samples,
              args.calibration_method, args.output)
    if args.save_policy:
        from onnxamc.policy import Policy

        (policy if isinstance(policy, Policy) else Policy.load(policy)).save(args.save_policy)
    print(f"wrote {args.output}")
    return 0


def cmd_bench(args) -> int:
    from onnxamc import api

    data = None if args.no_data else args.data
    results = api.bench(args.models, data, args.threads, args.runs, limit=args.limit)
    if args.json:
        print(json.dumps([{"model": m, **r.to_dict()} for m, r in zip(args.models, results)],
                         indent=2))
        return 0
    print(format_bench(args.models, results, args.threads))
    return 0


def format_bench(names, results, threads: int) -> str:
    base = results[0]
    head = ["model", "accuracy", "latency ms (median)", "p90", "cv", "x latency", "size KB",
            "x size", "zipped KB", "MACs", "params"]
    rows = []
    for name, r in zip(names, results):
        acc = "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}%"
        rows.append([Path(name).name, acc, f"{r.latency.median_ms:.3f}", f"{r.latency.p90_ms:.3f}",
                     f"{r.latency.cv:.2f}", f"{r.latency_ratio:.3f}", f"{r.size_bytes / 1024:.1f}",
                     f"{r.size_bytes / base.size_bytes:.3f}", f"{r.size_zipped_bytes / 1024:.1f}",
                     f"{r.macs:,}", f"{r.params:,}"])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    kind = base.accuracy_kind if base.accuracy is not None else "none"
    lines.append(f"\naccuracy: {kind}; latency: batch 1, {threads} thread(s), "
                 f"{base.latency.runs} interleaved runs; ratios to {Path(names[0]).name}")
    return "\n".join(lines)


def cmd_search(args) -> int:
    from onnxamc import api

    actions = [a.strip() for a in args.actions.split(",") if a.strip()]
    try:
        outcome = api.search(
            args.model, args.data, args.calibration, latency=args.latency,
            max_drop=args.max_drop, trials=args.trials, timeout=args.timeout,
            storage=args.storage, study=args.study, output=args.output, actions=actions,
            threads=args.threads, eval_samples=args.eval_samples,
            calibration_samples=args.calibration_samples, latency_runs=args.runs,
            seed=args.seed, progress=not args.no_progress, agent=args.agent,
            objective=args.objective, sensitivity=args.sensitivity, predictor=args.predictor,
            warm_start=args.warm_start, warm_start_from=args.warm_start_from)
    except KeyboardInterrupt:
        print("onnxamc: search interrupted; the finished trials are stored: run the same "
              "command again to continue", file=sys.stderr)
        return 130
    r = outcome.result
    print(f"study {outcome.study_name!r} in {outcome.storage}: "
          f"{len(r.study.trials)} trials ({r.new_trials} new, "
          f"{r.trials_per_minute:.1f} trials/min)")
    if outcome.policy is None:
        print("no trial finished; nothing written", file=sys.stderr)
        return 1
    if not r.feasible:
        print("warning: no policy met the objective's constraint; wrote the closest one",
              file=sys.stderr)
    o, c = outcome.original, outcome.compressed
    print(f"best trial #{r.best.number}: accuracy {100 * c.accuracy:.2f}% "
          f"(original {100 * o.accuracy:.2f}%), latency x{c.latency_ratio:.3f} "
          f"({c.latency.median_ms:.3f} ms vs {o.latency.median_ms:.3f} ms, "
          f"re-measured interleaved), size x{c.size_bytes / o.size_bytes:.3f}")
    if r.predictor:
        print("predictor: {evaluations_saved} evaluations saved, {wrong} of {audited} audited "
              "skips wrong".format(**r.predictor))
    if r.pareto:
        print(f"Pareto front: {len(r.pareto)} policies (trials "
              f"{', '.join(str(t.number) for t in r.pareto)})")
    print(f"wrote {outcome.model_path} and {outcome.policy_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
