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
        description="ONNX model compression: per-layer channel pruning, quantization, "
                    "low-rank, sparsity and block removal, searched (AMC-style) against "
                    "latency measured on the target in onnxruntime or TVM.")
    parser.add_argument("--version", action="version", version=f"onnxamc {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("inspect", help="print the layer table (AMC features, MACs, params)",
                       description="Print every compressible layer (Conv, ConvTranspose, Gemm, "
                                   "MatMul with a constant weight) with its features, then "
                                   "the channel groups (layers pruned together, or the op "
                                   "that blocks them) and the removable residual blocks.")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    _input_shape_arg(p)
    p.add_argument("--json", action="store_true", help="print {macs, params, layers} as JSON")
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser("apply", help="apply a policy (JSON or uniform) and write the model",
                       description="Apply a per-layer policy to a model. Give --policy FILE "
                                   "or --uniform FIELD=VALUE,... (e.g. sparsity=0.5,bits=8).")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--policy", help="policy JSON file")
    src.add_argument("--uniform", help="the same action on every layer that can take it, "
                     "e.g. sparsity=0.5,bits=8 or keep=0.5 or rank=0.5")
    p.add_argument("-o", "--output", required=True, help="where to write the compressed model")
    _calibration_args(p)
    p.add_argument("--save-policy", help="also write the policy that was applied (JSON)")
    p.add_argument("--reconstruct", action="store_true",
                   help="refit pruned layers by least squares on the calibration data")
    p.add_argument("--channel-multiple", type=int, default=8,
                   help="round kept channel counts to this multiple (default %(default)s)")
    p.add_argument("--importance", choices=["l1", "l2"], default="l1",
                   help="channel importance norm (default %(default)s)")
    p.set_defaults(run=cmd_apply)

    p = sub.add_parser("bench", help="compare models side by side (accuracy, latency, size)",
                       description="Metrics of each model with ratios to the first; latency "
                                   "runs are interleaved in one process with a fixed thread count.")
    p.add_argument("models", nargs="+", help="ONNX files; the first is the baseline")
    p.add_argument("--data", default="fashion-mnist", help=DATA_HELP)
    p.add_argument("--no-data", action="store_true", help="latency and size only (random input)")
    p.add_argument("--limit", type=int, help="evaluate on the first N samples only")
    p.add_argument("--fgsm", type=float, metavar="EPS",
                   help="also report accuracy under an FGSM attack of this size, crafted on "
                        "the first model (transfer attack; needs torch)")
    _runtime_args(p, runs=100)
    p.add_argument("--layer-table", nargs="?", const=True, default=False, metavar="JSON",
                   help="also predict latency from the per-layer table (default file: "
                        "~/.cache/onnxamc/layer-tables/TARGET.json) and report its error")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("export", help="export a torch model (package.module:factory) to ONNX",
                       description="Export the nn.Module that FACTORY returns with torch.onnx "
                                   "(dynamo exporter, TorchScript fallback), dynamic batch axis, "
                                   "layers named after the torch modules; outputs are checked "
                                   "against torch.")
    p.add_argument("entry", metavar="package.module:factory")
    p.add_argument("--input-shape", required=True, help="example input shape, e.g. 1,3,224,224")
    p.add_argument("--weights", help="state_dict file (torch.save) to load first")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("search", help="search per-layer policies against measured latency",
                       description="Search per-layer actions with Optuna TPE. The objective is "
                                   "the lowest latency within an accuracy drop (--max-drop, "
                                   "default 0.01) or the best accuracy within a latency budget "
                                   "(--latency RATIO of the original). Trials are stored; running "
                                   "the same command again continues the study.")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    _search_args(p)
    p.set_defaults(run=cmd_search)

    p = sub.add_parser("compress", help="convert, search, recover, verify and report in one go",
                       description="Convert and compress: export a torch model if given "
                                   "package.module:factory, search per-layer policies (or take "
                                   "--policy), apply the best, recover accuracy (fine-tuning "
                                   "with distillation, per-layer rates optionally searched, and "
                                   "quantization-aware training when --train-data is given), "
                                   "verify against the original in the same run, and write the "
                                   "model, the policy JSON and a report (HTML, markdown, PNG).")
    p.add_argument("model", nargs="?",
                   help=MODEL_HELP + ", or a torch entry point package.module:factory")
    p.add_argument("--input-shape", help="input shape for a torch entry point, e.g. 1,3,224,224")
    p.add_argument("--weights", help="state_dict for a torch entry point")
    p.add_argument("--policy", metavar="JSON", help="apply this policy instead of searching "
                   "(then recover, verify and report as usual)")
    _search_args(p)
    p.add_argument("--train-data", help="labelled training data for fine-tuning (same formats "
                                        "as --data, e.g. fashion-mnist:train)")
    p.add_argument("--epochs", type=float, default=1.0, help="fine-tuning epochs (default 1)")
    p.add_argument("--train-seconds", type=float, help="fine-tuning time budget in seconds")
    p.add_argument("--lr", type=_lr, default="auto",
                   help="fine-tuning learning rate, or 'auto' (default): short trainings at "
                        "0.001, 0.003 and 0.01 scored on held-out training data choose it, "
                        "the largest within one standard error of the best "
                        "(BatchNorm folded into the convolutions makes the best rate differ "
                        "from model to model, and a wrong one diverge)")
    p.add_argument("--distill", type=float, default=0.5,
                   help="weight of distillation from the original, 0..1 (default 0.5)")
    p.add_argument("--feature-distill", type=float, default=0.0, metavar="W",
                   help="also match each layer's output to the original's (MSE, weight W) where "
                        "pruning kept its shape; a policy's per-layer 'distill' overrides it")
    p.add_argument("--distill-trials", type=int, default=0, metavar="N",
                   help="also search the per-layer feature-distillation rates: N more short "
                        "trainings scored on held-out training data (needs --train-data)")
    p.add_argument("--trial-steps", type=int, default=200, metavar="STEPS",
                   help="training steps of each short training (--lr auto, --distill-trials; "
                        "default 200)")
    p.add_argument("--no-qat", action="store_true", help="fine-tune in float, quantize after")
    p.add_argument("--verify-data", metavar="DATA",
                   help="measure the final before/after table on this data instead of --data, "
                        "which the search and the recovery chose by (e.g. fashion-mnist:test)")
    p.add_argument("--report-dir", help="report folder (default: OUTPUT-report/)")
    p.add_argument("--no-report", action="store_true", help="write no report")
    p.set_defaults(run=cmd_compress)

    p = sub.add_parser("report", help="write the report of a stored study",
                       description="Pareto plot (uniform baselines marked), search history, "
                                   "the policy chart and Optuna's parameter importances of a "
                                   "study, "
                                   "as report.html, report.md and PNG files.")
    p.add_argument("--storage", required=True, help="journal file or database URL of the study")
    p.add_argument("--study", help="study name (default: the only study in the storage)")
    p.add_argument("--model", help=MODEL_HELP + " (for the per-layer chart)")
    p.add_argument("--policy", help="policy JSON to chart (default: the best trial's)")
    p.add_argument("-o", "--output", required=True, help="report folder")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("sensitivity", help="accuracy drop when one layer alone takes each action",
                       description="For every layer and every candidate action (fp16, int8, "
                                   "int4, per-block, MatMulNBits, 8/4 mix, weight sharing by "
                                   "default), apply the action to that layer alone and measure "
                                   "the accuracy drop. Writes a JSON table the search can load.")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--data", default="fashion-mnist", help=DATA_HELP)
    p.add_argument("--actions", help="comma-separated labels of built-in actions "
                                     "(default: all: fp16, int8, int8-per-tensor, int4, "
                                     "int4-per-block32, nbits4, mixed8/4, shared4)")
    p.add_argument("--action", action="append", default=[], metavar="FIELD=VALUE,...",
                   help="an extra action as policy fields, e.g. bits=4,granularity=per-block,"
                        "block_size=64 (repeatable)")
    p.add_argument("--layers", help="comma-separated layer names (default: all)")
    p.add_argument("--eval-samples", type=int, help="evaluate on the first N samples only")
    p.add_argument("-o", "--output", help="write the table as JSON to this file")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--progress", action="store_true", help="print each measurement")
    _calibration_args(p)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.set_defaults(run=cmd_sensitivity)

    p = sub.add_parser("targets", help="list and validate the deployment targets",
                       description="List the shipped targets (targets/*.toml) and any "
                                   "TOML files given, validate each, and say whether this "
                                   "machine can measure on it now.")
    p.add_argument("paths", nargs="*", help="extra target TOML files to validate")
    p.add_argument("--probe", action="store_true",
                   help="also ask the tracker of each remote target for its device key")
    p.set_defaults(run=cmd_targets)

    p = sub.add_parser("device", help="run the device agent or a tracker (remote targets)")
    dsub = p.add_subparsers(title="device commands", metavar="WHAT")
    d = dsub.add_parser("serve", help="serve this machine as a measuring device",
                        description="TVM RPC server plus onnxruntime timing, registered with a "
                                    "tracker under a device key. TVM RPC has no authentication: "
                                    "it binds to 127.0.0.1 unless --host is given.")
    d.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; anything else is reachable "
                        "without authentication)")
    d.add_argument("--port", type=int, default=9090, help="first port to try (default 9090)")
    d.add_argument("--tracker", metavar="HOST:PORT", help="tracker to register with")
    d.add_argument("--key", default="", help="device key hosts ask the tracker for")
    d.set_defaults(run=cmd_device_serve)
    d = dsub.add_parser("tracker", help="run a TVM RPC tracker (the queue of devices by key)")
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=9190, help="first port to try (default 9190)")
    d.set_defaults(run=cmd_device_tracker)
    return parser


def _lr(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a positive number or 'auto', got {text!r}") from None
    if not 0 < value < 10:
        raise argparse.ArgumentTypeError(f"a positive number or 'auto', got {text!r}")
    return value


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="fashion-mnist", help=DATA_HELP)
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--latency", type=float, metavar="RATIO",
                      help="latency budget as a ratio of the original (e.g. 0.6)")
    goal.add_argument("--max-drop", type=float, metavar="DROP",
                      help="largest accuracy drop allowed (default 0.01 = 1 point)")
    p.add_argument("--trials", type=int, default=30, help="total trials of the study (default 30)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--actions", default="prune,quant",
                   help="actions to search, each with an optional range: prune[=LOW:HIGH[:STEP]] "
                        "(channel keep ratio, with least-squares reconstruction), "
                        "quant[=32/8] (bits), sparsity[=LOW:HIGH[:STEP]] "
                        "(default: prune,quant)")
    p.add_argument("--agent", default="tpe", help="search agent (Optuna sampler): tpe, random, "
                   "qmc, cmaes, gp, nsga2, ddpg, rl (default: tpe)")
    p.add_argument("--objective", help="constrained (default: --latency or --max-drop), amc, "
                   "amc-latency, weighted[:LAMBDA], pareto")
    p.add_argument("--pick", metavar="RULE", help="with --objective pareto: which policy of "
                   "the front to write: drop<=D (fastest losing at most D; default: "
                   "--max-drop or 0.01), latency<=R or size<=R (most accurate within the "
                   "ratio), knee")
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


def _search_kwargs(args) -> dict:
    return dict(latency=args.latency, max_drop=args.max_drop, trials=args.trials,
                timeout=args.timeout, storage=args.storage, study=args.study,
                actions=[a.strip() for a in args.actions.split(",") if a.strip()],
                threads=args.threads, eval_samples=args.eval_samples,
                calibration_samples=args.calibration_samples, latency_runs=args.runs,
                seed=args.seed, agent=args.agent, objective=args.objective,
                sensitivity=args.sensitivity, predictor=args.predictor,
                warm_start=args.warm_start, warm_start_from=args.warm_start_from,
                target=args.target, pick=args.pick)


def _input_shape_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", action="append", metavar="NAME:DIMS",
                   help="fix an input's shape, e.g. images:1,3,640,640 (repeatable; dynamic "
                        "dimensions are replaced and shapes re-inferred)")


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
    p.add_argument("--target", metavar="NAME|PATH",
                   help="where latency is measured: a shipped target (see `onnxamc targets`) "
                        "or a TOML file (default: cpu-ort)")
    p.add_argument("--threads", type=int,
                   help="threads, overriding the target's (cpu-ort: 1, stable on shared machines)")
    p.add_argument("--runs", type=int, default=runs,
                   help=f"timed runs per model after warm-up (default {runs})")


# --- commands ---------------------------------------------------------------------
def cmd_inspect(args) -> int:
    from onnxamc import api
    from onnxamc.graph import parse_input_shapes

    model, door = api.front_door(args.model, parse_input_shapes(args.input_shape))
    info = api.analyze(model)
    groups, blocks = api.channel_groups(model), api.removable_blocks(model)
    if args.json:
        print(json.dumps({**info.to_dict(), "groups": [g.to_dict() for g in groups],
                          "blocks": [b.to_dict() for b in blocks],
                          "front_door": door.lines()}, indent=2))
        return 0
    print("\n".join(door.lines()))
    print()
    print(format_layer_table(info))
    print()
    print(format_structure(groups, blocks))
    return 0


def format_structure(groups, blocks) -> str:
    """Channel groups (what prunes together, or what blocks it) and removable blocks."""
    lines = ["channel groups (keep= prunes a whole group; its layers share the channels):"]
    for g in groups:
        state = "prunable" if g.prunable else f"blocked by {g.blocked_by}" if g.blocked_by \
            else "single channel"
        mixed = " (normalised across channels: pruning shifts its statistics)" if g.mixed else ""
        lines.append(f"  [{g.index}] {g.name}: {g.channels} channels, {state}{mixed}")
        lines.append(f"      layers: {', '.join(g.layers) or '-'}")
        lines.append(f"      read by: {', '.join(g.consumers) or '-'}")
    lines.append("removable residual blocks (remove=true on any of their layers):")
    lines += [f"  {b.name}: {', '.join(b.layers)}" for b in blocks] or ["  none"]
    return "\n".join(lines)


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


def cmd_export(args) -> int:
    from onnxamc import api

    api.export(args.entry, args.input_shape, args.output, args.weights)
    print(f"wrote {args.output} (outputs match torch)")
    return 0


def cmd_apply(args) -> int:
    from onnxamc import api

    policy = api.uniform_policy(args.model, args.uniform) if args.uniform else args.policy
    api.apply(args.model, policy, args.calibration, args.calibration_samples,
              args.calibration_method, args.output, reconstruct=args.reconstruct,
              channel_multiple=args.channel_multiple, importance=args.importance)
    if args.save_policy:
        from onnxamc.policy import Policy

        (policy if isinstance(policy, Policy) else Policy.load(policy)).save(args.save_policy)
    print(f"wrote {args.output}")
    return 0


def cmd_bench(args) -> int:
    from onnxamc import api

    data = None if args.no_data else args.data
    results = api.bench(args.models, data, args.threads, args.runs, limit=args.limit,
                        fgsm_epsilon=args.fgsm, target=args.target,
                        layer_table=args.layer_table)
    if args.json:
        print(json.dumps([{"model": m, **r.to_dict()} for m, r in zip(args.models, results)],
                         indent=2))
        return 0
    print(format_bench(args.models, results, args.threads))
    for name, r in zip(args.models, results):
        if r.extra.get("latency_error"):
            print(f"{Path(name).name}: {r.extra['latency_error']}")
        if r.extra.get("layer_table"):
            t = r.extra["layer_table"]
            print(f"{Path(name).name}: layer table predicts {t['predicted_ms']:.3f} ms vs "
                  f"{r.latency.median_ms:.3f} ms measured (error {100 * t['error']:+.1f}%; "
                  f"scaled by the first model's ratio: {100 * t['calibrated_error']:+.1f}%), "
                  f"{len(t['layers'])} layers, {t['measured_now']} newly measured, "
                  f"table {t['table']}")
    return 0


def format_bench(names, results, threads: int | None) -> str:
    base = results[0]
    head = ["model", "accuracy", "latency ms (median)", "p90", "cv", "x latency", "size KB",
            "x size", "zipped KB", "bits/weight", "MACs", "params", "energy mJ"]
    rows = []
    for name, r in zip(names, results):
        acc = "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}%"
        lat = [f"{r.latency.median_ms:.3f}", f"{r.latency.p90_ms:.3f}", f"{r.latency.cv:.2f}",
               f"{r.latency_ratio:.3f}"] if r.latency else ["unsupported", "-", "-", "-"]
        e = r.extra.get("energy")
        energy = f"{e['joules'] * 1e3:.3f} ({e['kind'][0]})" if e else "-"
        rows.append([Path(name).name, acc, *lat, f"{r.size_bytes / 1024:.1f}",
                     f"{r.size_bytes / base.size_bytes:.3f}", f"{r.size_zipped_bytes / 1024:.1f}",
                     f"{r.bits_per_weight or 0:.2f}",
                     f"{r.macs:,}", f"{r.params:,}", energy])
    if "robust_accuracy" in base.extra:
        head.insert(2, f"FGSM {base.extra['fgsm_epsilon']:g}")
        for row, r in zip(rows, results):
            row.insert(2, f"{100 * r.extra['robust_accuracy']:.2f}%")
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    kind = base.accuracy_kind if base.accuracy is not None else "none"
    timed = next((r for r in results if r.latency), None)
    runs = timed.latency.runs if timed else 0
    threads = threads or "the target's"
    lines.append(f"\naccuracy: {kind}; latency on target {base.extra.get('target', 'cpu-ort')}: "
                 f"batch 1, {threads} thread(s), {runs} "
                 f"interleaved runs; ratios to {Path(names[0]).name}; energy (m)easured or "
                 "(e)stimated")
    return "\n".join(lines)


def cmd_search(args) -> int:
    from onnxamc import api

    try:
        outcome = api.search(args.model, args.data, args.calibration, output=args.output,
                             progress=not args.no_progress, **_search_kwargs(args))
    except KeyboardInterrupt:
        return _interrupted()
    if not _print_search(outcome):
        return 1
    print(f"wrote {outcome.model_path} and {outcome.policy_path}")
    return 0


def cmd_compress(args) -> int:
    from onnxamc import api

    try:
        outcome = api.compress(
            args.model, args.data, args.calibration, train_data=args.train_data,
            input_shape=args.input_shape, weights=args.weights, epochs=args.epochs,
            train_seconds=args.train_seconds, lr=args.lr, distill=args.distill,
            feature_distill=args.feature_distill, policy=args.policy,
            distill_trials=args.distill_trials, trial_steps=args.trial_steps,
            qat=not args.no_qat, verify_data=args.verify_data, report=not args.no_report, report_dir=args.report_dir,
            output=args.output, progress=not args.no_progress, **_search_kwargs(args))
    except KeyboardInterrupt:
        return _interrupted()
    if outcome.search is not None and not _print_search(outcome.search):
        return 1
    if outcome.search is None:
        print(f"applied the given policy {args.policy}")
    if outcome.recovery_search is not None:
        r = outcome.recovery_search
        by_lr = ", ".join(f"{lr:g} {100 * acc:.2f}%" for lr, acc in r.by_lr.items())
        print(f"recovery settings: {len(r.study.trials)} trainings of {r.steps} steps, "
              f"held-out accuracy by learning rate {by_lr}; chosen lr {r.lr:g}, "
              f"{sum(v > 0 for v in r.rates.values())} layers feature-distilled "
              f"({100 * r.best_val_accuracy:.2f}%)")
    if outcome.train_report is not None:
        t = outcome.train_report
        print(f"recovery: {t.steps} training steps in {t.seconds:.0f} s ({t.stopped_because}); "
              f"kept: {outcome.kept}")
    if outcome.verified_on is not None:
        print(f"verified on {outcome.verified_on}:")
    if outcome.search is None or outcome.train_report is not None or outcome.verified_on:
        print(format_before_after(outcome.before_after))
    print(f"wrote {outcome.model_path} and {outcome.policy_path}")
    if outcome.report is not None:
        print(f"report: {outcome.report.html}")
    return 0


def cmd_report(args) -> int:
    from onnxamc import api

    files = api.report(args.storage, args.output, study=args.study, model=args.model,
                       policy=args.policy)
    print(f"wrote {files.html}, {files.markdown} and {len(files.plots)} plots")
    return 0


def _interrupted() -> int:
    print("onnxamc: search interrupted; the finished trials are stored: run the same "
          "command again to continue", file=sys.stderr)
    return 130


def _print_search(outcome) -> bool:
    r = outcome.result
    print(f"study {outcome.study_name!r} in {outcome.storage}: "
          f"{len(r.study.trials)} trials ({r.new_trials} new, "
          f"{r.trials_per_minute:.1f} trials/min)")
    if outcome.policy is None:
        print("no trial finished; nothing written", file=sys.stderr)
        return False
    if not r.feasible:
        rule = outcome.policy.meta.get("pick")
        print(f"warning: no policy on the front meets --pick {rule}; wrote the closest one"
              if rule else "warning: no policy met the objective's constraint; wrote the "
              "closest one", file=sys.stderr)
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
    return True


def format_before_after(rows: dict[str, dict]) -> str:
    lines = []
    for label, m in rows.items():
        lines.append(f"  {label:<28} accuracy {100 * m['accuracy']:.2f}%  "
                     f"latency x{m['latency_ratio']:.3f}  size {m['size_bytes'] / 1024:.1f} KB")
    return "\n".join(lines)


def cmd_sensitivity(args) -> int:
    from onnxamc import api
    from onnxamc.errors import PolicyError
    from onnxamc.policy import parse_uniform
    from onnxamc.search.sensitivity import DEFAULT_ACTIONS

    actions = dict(DEFAULT_ACTIONS)
    if args.actions:
        labels = [a.strip() for a in args.actions.split(",") if a.strip()]
        unknown = [a for a in labels if a not in DEFAULT_ACTIONS]
        if unknown:
            raise PolicyError(f"unknown actions {', '.join(unknown)}; built-in: "
                              f"{', '.join(DEFAULT_ACTIONS)} (or give --action FIELD=VALUE,...)")
        actions = {a: DEFAULT_ACTIONS[a] for a in labels}
    elif args.action:
        actions = {}
    for spec in args.action:
        actions[spec] = parse_uniform(spec)
    layers = [l.strip() for l in args.layers.split(",") if l.strip()] if args.layers else None
    table = api.sensitivity(args.model, args.data, args.calibration, actions, layers,
                            args.eval_samples, args.calibration_samples,
                            args.calibration_method, args.threads, args.progress)
    if args.output:
        table.save(args.output)
    print(json.dumps(table.to_dict(), indent=2) if args.json else table.format())
    if args.output and not args.json:
        print(f"wrote {args.output}")
    return 0


def cmd_targets(args) -> int:
    from onnxamc import api

    statuses = api.targets(args.paths, probe_remote=args.probe)
    rows = [["target", "runtime", "device", "threads", "status", "description / problem"]]
    for st in statuses:
        t = st.target
        if t is None:
            rows.append([st.name, "-", "-", "-", "INVALID", st.error])
            continue
        where = f"remote:{t.remote.key}@{t.remote.tracker}" if t.remote else t.device
        status = "ok" if st.unavailable is None else "unavailable"
        rows.append([t.name, t.runtime, where, str(t.threads), status,
                     st.unavailable or t.description])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    if not args.probe and any(st.target and st.target.is_remote for st in statuses):
        print("\nremote targets were not contacted; --probe asks their tracker")
    return 1 if any(st.target is None for st in statuses) else 0


def cmd_device_serve(args) -> int:
    from onnxamc import api

    server = api.device_serve(args.host, args.port, args.tracker, args.key)
    where = f", registered with tracker {args.tracker} as {args.key!r}" if args.tracker else ""
    print(f"onnxamc device agent on {args.host}:{server.port}{where}; Ctrl-C stops it",
          flush=True)
    return _run_until_stopped(server, "agent's server")


def cmd_device_tracker(args) -> int:
    from onnxamc import api

    tracker = api.device_tracker(args.host, args.port)
    print(f"tracker on {args.host}:{tracker.port}; Ctrl-C stops it", flush=True)
    return _run_until_stopped(tracker, "tracker")


def _run_until_stopped(server, what: str) -> int:
    """Wait while TVM's server process lives; Ctrl-C (KeyboardInterrupt) stops it."""
    import time

    try:
        while server.proc is not None and server.proc.is_alive():
            time.sleep(1)
    finally:
        server.terminate()
    print(f"onnxamc: the {what} process ended", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
