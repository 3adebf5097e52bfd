"""The argument parser: one function per command, defaults read from onnxamc.config."""

from __future__ import annotations

import argparse
import math

from onnxamc import __version__
from onnxamc.actions import searchable_help
from onnxamc.cli import commands
from onnxamc.cli.texts import DATA_FORMATS, DATA_HELP, METRIC_HELP, MODEL_HELP, PREPROCESS_HELP
from onnxamc.config import (CALIBRATION_METHODS, DEFAULT_CALIBRATION, PRUNERS, RecoveryConfig,
                            RunConfig, SearchConfig)
from onnxamc.search import AGENTS, OBJECTIVES


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes are one line too (argparse prints the whole usage first): the
    command, the problem, and where the help is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="onnxamc",
        description="ONNX model compression: per-layer channel pruning, quantization, "
                    "low-rank, sparsity and block removal, searched (AMC-style) against "
                    "latency measured on the target in onnxruntime or TVM.")
    parser.add_argument("--version", action="version", version=f"onnxamc {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in (_inspect, _apply, _bench, _export, _search, _compress, _report,
                _sensitivity, _targets, _device):
        add(sub)
    return parser


def _inspect(sub) -> None:
    p = sub.add_parser("inspect", help="print the layer table (AMC features, MACs, params)",
                       description="Print every compressible layer (Conv, ConvTranspose, Gemm, "
                                   "MatMul with a constant weight) with its features, then "
                                   "the channel groups (layers pruned together, or the op "
                                   "that blocks them) and the removable residual blocks.")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    _input_shape_arg(p)
    p.add_argument("--json", action="store_true", help="print {macs, params, layers} as JSON")
    p.set_defaults(run=commands.inspect)


def _input_shape_arg(p) -> None:
    p.add_argument("--input-shape", action="append", metavar="NAME:DIMS",
                   help="fix an input's shape, e.g. images:1,3,640,640 (repeatable; dynamic "
                        "dimensions are replaced and shapes re-inferred; for compress of a "
                        "torch entry point, its export shape, e.g. 1,3,224,224)")


def _apply(sub) -> None:
    p = sub.add_parser("apply", help="apply a policy (JSON or uniform) and write the model",
                       description="Apply a per-layer policy to a model. Give --policy FILE "
                                   "or --uniform FIELD=VALUE,... (e.g. keep=0.5,bits=8). "
                                   "Pruned layers are refit by least squares on the "
                                   "calibration data.")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--policy", help="policy JSON file")
    src.add_argument("--uniform", help="the same action on every layer that can take it, "
                     "e.g. sparsity=0.5,bits=8 or keep=0.5 or rank=0.5")
    p.add_argument("-o", "--output", required=True, help="where to write the compressed model")
    _input_shape_arg(p)
    _calibration_args(p, has_data=False)
    p.add_argument("--preprocess", metavar="SPEC", help=PREPROCESS_HELP)
    p.add_argument("--save-policy", help="also write the policy that was applied (JSON)")
    p.add_argument("--no-reconstruct", action="store_true",
                   help="do not refit pruned layers on the calibration data")
    p.add_argument("--channel-multiple", type=int, default=RunConfig.channel_multiple,
                   help="round kept channel counts to this multiple (default %(default)s)")
    p.add_argument("--importance", choices=["l1", "l2"], default=RunConfig.importance,
                   help="channel importance norm (default %(default)s)")
    p.add_argument("--no-latency-guard", dest="latency_guard", action="store_false",
                   help="with --uniform bits=8: skip timing int8 beside float on onnxruntime "
                        "(by default int8 that is not faster than float is not written)")
    p.set_defaults(run=commands.apply)


def _bench(sub) -> None:
    from onnxamc.workflows.benching import BENCH_RUNS

    p = sub.add_parser("bench", help="compare models side by side (quality, latency, size)",
                       description="Metrics of each model with ratios to the first; latency "
                                   "runs are interleaved in one process with a fixed thread count.")
    p.add_argument("models", nargs="+", help="ONNX files; the first is the baseline")
    p.add_argument("--data", default=RunConfig.data, help=DATA_HELP)
    _input_shape_arg(p)
    p.add_argument("--no-data", action="store_true", help="latency and size only (random input)")
    p.add_argument("--eval-samples", type=int, help="evaluate on the first N samples only")
    _metric_args(p)
    p.add_argument("--fgsm", type=_non_negative, metavar="EPS",
                   help="also report quality under an FGSM attack of this size, crafted on "
                        "the first model (transfer attack; needs torch)")
    _runtime_args(p, runs=BENCH_RUNS)
    p.add_argument("--layer-table", nargs="?", const=True, default=False, metavar="JSON",
                   help="also predict latency from the per-layer table (default file: "
                        "~/.cache/onnxamc/layer-tables/TARGET.json) and report its error")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(run=commands.bench)


def _export(sub) -> None:
    p = sub.add_parser("export", help="export a torch model (package.module:factory) to ONNX",
                       description="Export the nn.Module that FACTORY returns with torch.onnx "
                                   "(dynamo exporter, TorchScript fallback), dynamic batch axis, "
                                   "layers named after the torch modules; outputs are checked "
                                   "against torch.")
    p.add_argument("entry", metavar="package.module:factory")
    p.add_argument("--input-shape", required=True, help="example input shape, e.g. 1,3,224,224")
    p.add_argument("--weights", help="state_dict file (torch.save) to load first")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.set_defaults(run=commands.export)


def _search(sub) -> None:
    p = sub.add_parser("search", help="search per-layer policies against measured latency",
                       description="Search per-layer actions with an agent (an Optuna sampler: "
                                   f"{', '.join(AGENTS)}). The default objective is the lowest "
                                   "latency within a quality drop (--max-drop, default 0.01) "
                                   "or the best quality within a latency budget (--latency "
                                   "RATIO of the original). Trials are stored; running the "
                                   "same command again continues the study.")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    _search_args(p)
    p.set_defaults(run=commands.search)


def _compress(sub) -> None:
    p = sub.add_parser("compress", help="convert, search, recover, verify and report in one go",
                       description="Convert and compress: export a torch model if given "
                                   "package.module:factory, search per-layer policies (or take "
                                   "--policy), apply the best, recover quality (fine-tuning "
                                   "with distillation, per-layer rates optionally searched, and "
                                   "quantization-aware training when --train-data is given), "
                                   "verify against the original in the same run, and write the "
                                   "model, the policy JSON and a report (HTML, markdown, PNG).")
    p.add_argument("model", nargs="?",
                   help=MODEL_HELP + ", or a torch entry point package.module:factory")
    p.add_argument("--weights", help="state_dict for a torch entry point")
    p.add_argument("--policy", metavar="JSON", help="apply this policy instead of searching "
                   "(then recover, verify and report as usual)")
    _search_args(p)
    _recovery_args(p)
    p.add_argument("--verify-data", metavar="DATA",
                   help="measure the final before/after table on this data instead of --data, "
                        "which the search and the recovery chose by (e.g. fashion-mnist:test)")
    p.add_argument("--report-dir", help="report folder (default: OUTPUT-report/)")
    p.add_argument("--no-report", action="store_true", help="write no report")
    p.set_defaults(run=commands.compress)


def _recovery_args(p) -> None:
    d = RecoveryConfig
    p.add_argument("--train-data", help="labelled training data for fine-tuning (same formats "
                                        "as --data, e.g. fashion-mnist:train)")
    p.add_argument("--epochs", type=float, default=d.epochs,
                   help="fine-tuning epochs (default %(default)s)")
    p.add_argument("--train-seconds", type=float, help="fine-tuning time budget in seconds")
    p.add_argument("--lr", type=_lr, default=d.lr,
                   help="fine-tuning learning rate, or 'auto' (default): short trainings at "
                        "0.001, 0.003 and 0.01 scored on held-out training data choose it, "
                        "the largest within one standard error of the best "
                        "(BatchNorm folded into the convolutions makes the best rate differ "
                        "from model to model, and a wrong one diverge)")
    p.add_argument("--distill", type=float, default=d.distill,
                   help="weight of distillation from the original, 0..1 (default %(default)s)")
    p.add_argument("--feature-distill", type=float, default=d.feature_distill, metavar="W",
                   help="also match each layer's output to the original's (MSE, weight W) where "
                        "pruning kept its shape; a policy's per-layer 'distill' overrides it")
    p.add_argument("--distill-trials", type=int, default=d.distill_trials, metavar="N",
                   help="also search the per-layer feature-distillation rates: N more short "
                        "trainings scored on held-out training data (needs --train-data)")
    p.add_argument("--trial-steps", type=int, default=d.trial_steps, metavar="STEPS",
                   help="training steps of each short training (--lr auto, --distill-trials; "
                        "default %(default)s)")
    p.add_argument("--no-qat", action="store_true", help="fine-tune in float, quantize after")


def _report(sub) -> None:
    p = sub.add_parser("report", help="write the report of a stored study",
                       description="Pareto plot (uniform baselines marked), search history, "
                                   "the chosen policy's chart and Optuna's parameter "
                                   "importances of a study, as report.html, report.md and "
                                   "PNG files.")
    p.add_argument("--storage", required=True, help="journal file or database URL of the study")
    p.add_argument("--study", help="study name (default: the only study in the storage)")
    p.add_argument("--model", help=MODEL_HELP + " (the searched model)")
    p.add_argument("--policy", help="policy JSON to chart (default: the one the search chose)")
    p.add_argument("-o", "--output", required=True, help="report folder")
    p.set_defaults(run=commands.report)


def _sensitivity(sub) -> None:
    from onnxamc.search.sensitivity import DEFAULT_ACTIONS

    p = sub.add_parser("sensitivity", help="quality drop when one layer alone takes each action",
                       description="For every layer and every candidate action, apply the "
                                   "action to that layer alone and measure the quality drop. "
                                   "Writes a JSON table the search can load.")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--data", default=RunConfig.data, help=DATA_HELP)
    p.add_argument("--actions", help="comma-separated labels of built-in actions (default: "
                                     f"all: {', '.join(DEFAULT_ACTIONS)})")
    p.add_argument("--action", action="append", default=[], metavar="FIELD=VALUE,...",
                   help="an extra action as policy fields, e.g. bits=4,granularity=per-block,"
                        "block_size=64 (repeatable)")
    p.add_argument("--layers", help="comma-separated layer names (default: all)")
    _input_shape_arg(p)
    p.add_argument("--eval-samples", type=int, help="evaluate on the first N samples only")
    _metric_args(p)
    p.add_argument("-o", "--output", help="write the table as JSON to this file")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--progress", action="store_true", help="print each measurement")
    _calibration_args(p)
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default 1)")
    p.set_defaults(run=commands.sensitivity)


def _targets(sub) -> None:
    p = sub.add_parser("targets", help="list and validate the deployment targets",
                       description="List the shipped targets (targets/*.toml) and any TOML "
                                   "files given, validate each, and say whether this machine "
                                   "can measure on it now.")
    p.add_argument("paths", nargs="*", help="extra target TOML files to validate")
    p.add_argument("--probe", action="store_true",
                   help="also ask the tracker of each remote target for its device key")
    p.set_defaults(run=commands.targets)


def _device(sub) -> None:
    p = sub.add_parser("device", help="run the device agent or a tracker (remote targets)")
    dsub = p.add_subparsers(title="device commands", metavar="WHAT")
    d = dsub.add_parser("serve", help="serve this machine as a measuring device",
                        description="TVM RPC server plus onnxruntime timing, registered with a "
                                    "tracker under a device key. TVM RPC has no authentication: "
                                    "it binds to 127.0.0.1 unless --host is given.")
    d.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; anything else is reachable "
                        "without authentication)")
    d.add_argument("--port", type=_port, default=9090, help="first port to try (default 9090)")
    d.add_argument("--tracker", metavar="HOST:PORT", help="tracker to register with")
    d.add_argument("--key", default="", help="device key hosts ask the tracker for")
    d.set_defaults(run=commands.device_serve)
    d = dsub.add_parser("tracker", help="run a TVM RPC tracker (the queue of devices by key)")
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    d.add_argument("--port", type=_port, default=9190, help="first port to try (default 9190)")
    d.set_defaults(run=commands.device_tracker)


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=RunConfig.data, help=DATA_HELP)
    _input_shape_arg(p)
    _goal_args(p)
    _agent_args(p)
    _study_args(p)
    p.add_argument("-o", "--output", help="compressed model path (default: MODEL-compressed.onnx)")
    p.add_argument("--eval-samples", type=int, help="evaluate on the first N samples only")
    _metric_args(p)
    held = p.add_mutually_exclusive_group()
    held.add_argument("--validation-split", type=float, metavar="SHARE",
                      help="hold this share of --data out (spread along it, e.g. 0.5): the "
                           "policy is chosen on the rest and reported on it too")
    held.add_argument("--select-data", metavar="DATA",
                      help="choose the policy on this data (same forms as --data); --data is "
                           "then held out and the result reported on both")
    p.add_argument("--seed", type=int, default=RunConfig.seed,
                   help="sampler seed (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verify-runs", type=int, default=RunConfig.verify_runs,
                   help="timed runs when the best policies are re-measured side by side with "
                        "the original at the end (default %(default)s; fewer on a slow board)")
    p.add_argument("--allow-emulated", action="store_true",
                   help="search on a board whose agent is emulated (qemu): its latency means "
                        "nothing; only to try the board workflow")
    _calibration_args(p, with_method=False)
    _runtime_args(p, runs=RunConfig.runs)


def _goal_args(p: argparse.ArgumentParser) -> None:
    """What the search optimises: the bound, the objective, the pick rule."""
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--latency", type=float, metavar="RATIO",
                      help="latency budget as a ratio of the original's, whatever the metric "
                           "(e.g. 0.6): the best quality within it")
    goal.add_argument("--max-drop", type=float, metavar="DROP",
                      help="largest quality drop from the original, in the metric's units: "
                           "0.01 = 1 point of top1/top5/agreement/iou, 0.01 of cosine, 1 = "
                           "1 dB of snr against labels, a rise of 0.01 in mse (default 0.01; "
                           "snr against the original: at least 30 dB, see --min-quality; mse "
                           "and your own metric have no default)")
    goal.add_argument("--min-quality", type=float, metavar="Q",
                      help="the worst quality allowed, in the metric's units (0.99 cosine, "
                           "30 dB snr; for mse the largest): for fidelity metrics, where the "
                           "original scores perfectly against itself (snr 100 dB)")
    p.add_argument("--objective", help=f"{', '.join(OBJECTIVES)} (default: constrained, by "
                   "--latency or --max-drop; weighted takes :LAMBDA)")
    p.add_argument("--pick", metavar="RULE", help="with --objective pareto: which policy of "
                   "the front to write: drop<=D (fastest losing at most D, in the metric's "
                   "units; default: --max-drop or --min-quality, or 0.01), latency<=R or "
                   "size<=R (best quality within the ratio), knee")


def _agent_args(p: argparse.ArgumentParser) -> None:
    """What the search tries, and how many."""
    d = SearchConfig
    p.add_argument("--trials", type=int, default=d.trials,
                   help="total trials of the study (default %(default)s)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--actions", default=",".join(d.actions),
                   help="actions to search, each with an optional range: "
                        f"{searchable_help()} (default: %(default)s)")
    p.add_argument("--agent", default=d.agent, choices=AGENTS,
                   help="search agent (Optuna sampler; default %(default)s)")
    p.add_argument("--sensitivity", metavar="JSON", help="per-layer sensitivity table "
                   "(onnxamc sensitivity -o): its policies are tried first")
    p.add_argument("--predictor", action="store_true",
                   help="skip candidates a quality predictor expects to be far worse")
    p.add_argument("--warm-start", metavar="POLICY", help="a policy JSON to try first")
    p.add_argument("--warm-start-from", metavar="MODEL", help="the model --warm-start was "
                   "found for: transfer it to this model's layers (type, relative depth)")


def _study_args(p: argparse.ArgumentParser) -> None:
    """Where the study lives, who works on it, how trials stop early."""
    d = SearchConfig
    p.add_argument("--storage", help="journal file or database URL, e.g. "
                   "postgresql://user@host/db: workers on several machines run the same "
                   "command against it (default: OUTPUT.journal)")
    p.add_argument("--study", help="study name (default: from the output name and objective)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="processes on this machine evaluating the study's trials; latency "
                        "measurements still take turns (default %(default)s)")
    p.add_argument("--pruner", default=d.pruner, choices=PRUNERS,
                   help="stop unpromising trials early: quality on growing slices of the "
                        "data compared by successive halving or Hyperband (default "
                        "%(default)s)")
    p.add_argument("--profile", action="store_true",
                   help="print where a trial's time goes (build per action, sessions, "
                        "quality, latency), in wall and CPU seconds")


def _metric_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", metavar="NAME|SPEC", help=METRIC_HELP)
    p.add_argument("--preprocess", metavar="SPEC", help=PREPROCESS_HELP)


def _calibration_args(p: argparse.ArgumentParser, with_method: bool = True,
                      has_data: bool = True) -> None:
    default = (f"{DEFAULT_CALIBRATION} for the bundled data, else the --data set" if has_data
               else f"{DEFAULT_CALIBRATION}, which fits the bundled models")
    p.add_argument("--calibration",
                   help=f"calibration data for quantization and reconstruction: "
                        f"{DATA_FORMATS}; only --calibration-samples of it are read "
                        f"(default: {default})")
    p.add_argument("--calibration-samples", type=int, default=RunConfig.calibration_samples,
                   help="samples used to calibrate (default: %(default)s)")
    if with_method:
        p.add_argument("--calibration-method", default=RunConfig.calibration_method,
                       choices=CALIBRATION_METHODS,
                       help="activation range method (default: %(default)s)")


def _runtime_args(p: argparse.ArgumentParser, runs: int) -> None:
    p.add_argument("--target", metavar="NAME|PATH",
                   help="where latency is measured: a shipped target (see `onnxamc targets`) "
                        "or a TOML file (default: cpu-ort)")
    p.add_argument("--threads", type=int,
                   help="threads, overriding the target's (cpu-ort: 1, stable on shared machines)")
    p.add_argument("--runs", type=int, default=runs,
                   help="timed runs per model after warm-up (default %(default)s)")


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"a number >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port (1-65535), got {text!r}")
    return value


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
