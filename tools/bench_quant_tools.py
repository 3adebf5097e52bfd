"""Benchmark a quant-only search against NNCF and Intel Neural Compressor (issue 14; slow).

The issue's goal: within the wall time the accuracy-aware quantizers a user would pick
instead take, `api.search(actions="quant")` reaches a policy at least as good as theirs,
accuracy and latency measured side by side. Per bundled model (ResNet-20, the
MobileNetV2-style one), on the same Fashion-MNIST data for all three tools:
- NNCF `quantize_with_accuracy_control` (ONNX backend), max_drop 0.01 absolute (1 point);
- `inc`: Intel Neural Compressor 2.6 `quantization.fit` on onnxruntime (its default
  auto strategy: conservative, then basic op-wise fallback), AccuracyCriterion
  tolerable_loss 0.01, absolute by default (`--inc-criterion relative`);
- `inc-onnx`: onnx-neural-compressor 1.0 (INC's onnxruntime line after 2.x)
  `autotune` over its static int8 tuning set, tolerable_loss 0.01 (relative: its only kind);
- our quant-only search, max_drop 0.01, its timeout the slowest of their wall times;
then ALL resulting models in ONE `api.bench` call (latency interleaved with the
original, ratios with their interval, top-1, size). Every tool calibrates on the first
`--calibration-samples` of fashion-mnist:calib and chooses on the evaluation subset the
table's top-1 is measured on (no held-out split: the same footing for all three).
The third-party validation functions use 1 intra-op thread, as onnxamc's evaluation
does; the tools' own calibration sessions keep their defaults.

NNCF and INC are not project dependencies: run this from a separate venv that has them.
Both INC packages declare numpy<2 (their onnxruntime paths run on our numpy 2.4), so they
go in with --no-deps after their own needs (prettytable, scipy and six are needed but
undeclared); INC 2.6 also reads `onnx.mapping`, gone since onnx 1.19 (onnx_mapping_shim
below). neural-compressor 3.x has no onnxruntime path.

    python3.11 -m venv /work/cmp-venv
    /work/cmp-venv/bin/pip install -c constraints.txt -e .
    /work/cmp-venv/bin/pip install -c constraints.txt nncf==3.4.0 deprecated \\
        opencv-python-headless pandas prettytable py-cpuinfo pyyaml requests schema \\
        pycocotools six onnxruntime-extensions pydantic transformers
    /work/cmp-venv/bin/pip install -c constraints.txt --no-deps neural-compressor==2.6 \\
        onnx-neural-compressor==1.0

    /work/cmp-venv/bin/python tools/bench_quant_tools.py --out out/bench-quant-tools
    /work/cmp-venv/bin/python tools/bench_quant_tools.py --models resnet20 \\
        --timeout 20 --eval-samples 500 --runs 50          # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # as the CLI does: before numpy is imported

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from onnxamc import api  # noqa: E402
from onnxamc.models import bundled_model_path  # noqa: E402
from onnxamc.runtime import make_session  # noqa: E402

EVAL_BATCH = 256
TOOLS = {"nncf": "nncf", "inc": "neural_compressor", "inc-onnx": "onnx_neural_compressor"}


@dataclass
class Outcome:
    """One tool's result on one model: its model, its wall time, or why it has none."""

    tool: str
    model: onnx.ModelProto | None
    seconds: float | None  # None: the tool never ran (not installed)
    why: str = ""  # one line when model is None (or a note beside it)


@dataclass
class Arrays:
    """A data subset as plain arrays: what the third-party tools are fed."""

    name: str  # the model's input
    images: np.ndarray
    labels: np.ndarray


def arrays(path: str, spec: str, limit: int | None) -> Arrays:
    """The same samples onnxamc reads for `spec`, so all tools see identical data."""
    data = api.data_for(path, spec, limit).in_memory()
    ((name, images),) = data.inputs.items()
    return Arrays(name, images, np.asarray(data.labels))


def load_for_tools(path: str) -> onnx.ModelProto:
    """The model as the third-party tools get it: the bundled files (torch's dynamo
    export) carry value_info for their weights, which INC 2.6 leaves stale when it turns
    Gemm(transB) into MatMul with a transposed weight (onnx shape inference then fails:
    "Inferred shape and existing shape differ in dimension 0: (64) vs (10)"); dropping
    those entries changes no computation."""
    model = onnx.load(path)
    weights = {init.name for init in model.graph.initializer}
    kept = [v for v in model.graph.value_info if v.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return model


def correct(sess, name: str, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample 0/1 top-1 hits, evaluated in batches."""
    hits = [np.argmax(sess.run(None, {name: images[i:i + EVAL_BATCH]})[0], axis=1)
            == labels[i:i + EVAL_BATCH] for i in range(0, len(images), EVAL_BATCH)]
    return np.concatenate(hits).astype(np.float64)


class CachedSessions:
    """NNCF calls its validation function once per sample while ranking; building a
    session per call would measure session creation, not the tool."""

    def __init__(self):
        self._model, self._session = None, None

    def __call__(self, model: onnx.ModelProto):
        if model is not self._model:
            self._model, self._session = model, make_session(model, 1)
        return self._session


def timed(tool: str, run: Callable[[], tuple[onnx.ModelProto | None, str]]) -> Outcome:
    """Run one tool; a failure is one line in its row, never the end of the benchmark
    (onnx-neural-compressor's autotune calls exit() when no configuration meets its
    criterion: caught too)."""
    start = time.time()
    try:
        model, why = run()
    except SystemExit as error:
        model, why = None, f"failed: the tool called exit({error.code}) without a model"
    except Exception as error:  # noqa: BLE001 - any tool failure is a row
        text = str(error).strip().splitlines()
        model, why = None, f"failed: {type(error).__name__}: {text[0] if text else ''}"[:200]
    return Outcome(tool, model, time.time() - start, why)


def missing(module: str) -> str | None:
    """None when `module` imports; else the one line the row and the log say."""
    try:
        __import__(module)
    except ImportError as error:
        return f"not installed ({error}); run this script from the venv that has it"
    return None


def run_nncf(path: str, calib: Arrays, val: Arrays, max_drop: float) -> Outcome:
    """NNCF's accuracy-controlled PTQ: quantize everything, then revert the quantizers
    that cost most accuracy until the drop is within max_drop (absolute)."""
    if why := missing("nncf"):
        return Outcome("nncf", None, None, why)

    def run():
        import nncf

        nncf.set_log_level(logging.WARNING)
        model = load_for_tools(path)
        sessions = CachedSessions()

        def validate(candidate: onnx.ModelProto, items) -> tuple[float, list[float]]:
            items = list(items)
            images = np.concatenate([image for image, _ in items])
            labels = np.concatenate([label for _, label in items])
            hits = correct(sessions(candidate), val.name, images, labels)
            return float(hits.mean()), hits.tolist()

        calibration = nncf.Dataset([calib.images[i:i + 1] for i in range(len(calib.images))],
                                   lambda image: {calib.name: image})
        validation = nncf.Dataset([(val.images[i:i + 1], val.labels[i:i + 1])
                                   for i in range(len(val.images))],
                                  lambda item: {val.name: item[0]})
        out = nncf.quantize_with_accuracy_control(
            model, calibration, validation, validate, max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib.images))
        return out, ""

    return timed("nncf", run)


class _IncDataset:
    """(sample, label) pairs for INC's own DataLoader, which batches and re-batches."""

    def __init__(self, data: Arrays):
        self.data = data

    def __len__(self) -> int:
        return len(self.data.images)

    def __getitem__(self, index: int):
        return self.data.images[index], self.data.labels[index]


@contextlib.contextmanager
def onnx_mapping_shim():
    """INC 2.6's onnxruntime quantizer reads `onnx.mapping`, which onnx 1.19 removed
    (we pin 1.23): the same two tables, rebuilt from onnx.helper, while INC runs only."""
    if hasattr(onnx, "mapping"):
        yield
        return
    to_numpy = {}
    for code in sorted(onnx.TensorProto.DataType.values()):
        try:
            to_numpy[code] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(code))
        except (KeyError, TypeError, ValueError):
            continue
    to_tensor: dict = {}
    for code, dtype in to_numpy.items():  # ascending: uint8 -> UINT8, int8 -> INT8, ...
        to_tensor.setdefault(dtype, code)
    onnx.mapping = types.SimpleNamespace(TENSOR_TYPE_TO_NP_TYPE=to_numpy,
                                         NP_TYPE_TO_TENSOR_TYPE=to_tensor)
    try:
        yield
    finally:
        del onnx.mapping


def run_inc(path: str, calib: Arrays, val: Arrays, loss: float, criterion: str,
            workspace: Path) -> Outcome:
    """INC 2.x's accuracy-aware tuning on onnxruntime (basic strategy: int8 everywhere,
    then op-type and op-wise fallback to float until the criterion is met)."""
    if why := missing("neural_compressor"):
        return Outcome("inc", None, None, why)

    def run():
        from neural_compressor import PostTrainingQuantConfig, quantization, set_workspace
        from neural_compressor.config import AccuracyCriterion, TuningCriterion
        from neural_compressor.data import DataLoader

        logging.getLogger("neural_compressor").setLevel(logging.WARNING)
        set_workspace(str(workspace))  # its tuning history: not ./nc_workspace in the repo
        config = PostTrainingQuantConfig(
            approach="static", calibration_sampling_size=[len(calib.images)],
            accuracy_criterion=AccuracyCriterion(higher_is_better=True, criterion=criterion,
                                                 tolerable_loss=loss),
            tuning_criterion=TuningCriterion(strategy="basic", timeout=0, max_trials=100))
        loader = DataLoader(framework="onnxruntime", dataset=_IncDataset(calib), batch_size=32)

        def evaluate(candidate: onnx.ModelProto) -> float:
            hits = correct(make_session(candidate, 1), val.name, val.images, val.labels)
            return float(hits.mean())

        with onnx_mapping_shim():
            result = quantization.fit(load_for_tools(path), config, calib_dataloader=loader,
                                      eval_func=evaluate)
        if result is None:
            return None, f"no configuration within {criterion} loss {loss:g}"
        return result.model, ""

    return timed("inc", run)


def run_inc_onnx(path: str, calib: Arrays, val: Arrays, loss: float, workdir: Path) -> Outcome:
    """onnx-neural-compressor 1.0's autotune (INC's onnxruntime line after 2.x): static
    int8 configurations (op-type sets x per-channel x last MatMul) tried in turn until one
    is within `loss`, relative to the fp32 top-1 (the only criterion it has)."""
    if why := missing("onnx_neural_compressor"):
        return Outcome("inc-onnx", None, None, why)

    def run():
        from onnx_neural_compressor import data_reader
        from onnx_neural_compressor.quantization import config, tuning

        logging.getLogger("onnx_neural_compressor").setLevel(logging.WARNING)
        workdir.mkdir(parents=True, exist_ok=True)
        source = workdir / "model.onnx"  # autotune takes a path, and evaluates paths
        onnx.save(load_for_tools(path), source)

        class Reader(data_reader.CalibrationDataReader):
            def __init__(self):
                self.rewind()

            def get_next(self):
                return next(self.feeds, None)

            def rewind(self):
                self.feeds = ({calib.name: calib.images[i:i + 1]} for i in range(len(calib.images)))

        def evaluate(model_path: str) -> float:
            hits = correct(make_session(model_path, 1), val.name, val.images, val.labels)
            return float(hits.mean())

        configs = config.StaticQuantConfig.get_config_set_for_tuning(
            calibration_sampling_size=len(calib.images))
        model = tuning.autotune(str(source), tuning.TuningConfig(config_set=configs,
                                                                 tolerable_loss=loss),
                                evaluate, calibration_data_reader=Reader())
        return model, ""

    return timed("inc-onnx", run)


def run_ours(path: str, seconds: float, out: Path, label: str, args) -> Outcome:
    """Our quant-only search within `seconds` (trials unbounded, the timeout binds); a
    fresh study each time, so an earlier run's trials are not counted as free."""
    stem = out / f"{label}-ours"
    for old in out.glob(f"{stem.name}.*"):
        old.unlink()

    def run():
        outcome = api.search(path, "fashion-mnist", f"{stem}.onnx",
                             calibration="fashion-mnist:calib",
                             calibration_samples=args.calibration_samples,
                             eval_samples=args.eval_samples, storage=f"{stem}.journal",
                             study=f"{label}-quant", trials=args.trials, actions="quant",
                             max_drop=args.max_drop, timeout=seconds, progress=False)
        if outcome.model is None:
            return None, "no policy within the drop"
        trials = len(outcome.result.study.trials)
        return outcome.model, f"{trials} trials"

    return timed("onnxamc (quant search)", run)


def bench(path: str, outcomes: list[Outcome], args) -> list[Any]:
    """All models with a result in ONE interleaved bench: ratios to the original. A model
    onnxamc's front door refuses loses its row's figures, not the others'."""
    for o in outcomes:
        if o.model is not None:
            try:
                api.load(o.model)
            except Exception as error:  # noqa: BLE001 - one line in its row
                o.model, o.why = None, f"not benched: {str(error).splitlines()[0][:160]}"
    models = [path] + [o.model for o in outcomes if o.model is not None]
    return api.bench(models, "fashion-mnist", threads=args.threads, runs=args.runs,
                     eval_samples=args.eval_samples)


def row(tool: str, wall: str, metrics, why: str = "", reference: bool = False) -> str:
    """tool | wall s | top-1 (change in points) | latency ratio [interval] | size ratio."""
    if metrics is None:
        return f"| {tool} | {wall} | {why} | - | - |"
    drop = "" if reference or metrics.quality_drop is None else \
        f" ({0.0 - 100 * metrics.quality_drop:+.2f})"
    latency = "1" if metrics.latency_ratio is None else f"x{metrics.latency_ratio:.3f}"
    interval = metrics.latency_interval
    if interval and interval.get("rounds"):
        latency += f" [{interval['low']:.3f}, {interval['high']:.3f}]"
    if metrics.latency_flags:
        latency += f" ({', '.join(metrics.latency_flags)})"
    size = "1" if metrics.size_ratio is None else f"x{metrics.size_ratio:.3f}"
    note = f" ({why})" if why else ""
    return f"| {tool}{note} | {wall} | {100 * metrics.quality:.2f}%{drop} | {latency} | {size} |"


def table(label: str, outcomes: list[Outcome], results: list[Any], args, budget: float) -> str:
    """The markdown table for one model; results[0] is the original."""
    lines = [f"### {label}: quant-only search ({budget:.1f} s budget) vs NNCF and INC",
             f"(top-1 on {args.eval_samples or 'all 2000'} fashion-mnist eval images; "
             f"latency batch 1, {args.threads} thread, {args.runs} interleaved runs, ratio "
             f"to the original [95% interval]; loss {args.max_drop:g}: nncf absolute, inc "
             f"{args.inc_criterion}, inc-onnx relative; ours absolute)", "",
             "| tool | wall s | top-1 (change, points) | latency ratio [interval] | size ratio |",
             "|---|---|---|---|---|", row("original (fp32)", "-", results[0], reference=True)]
    measured = iter(results[1:])
    for o in outcomes:
        metrics = next(measured) if o.model is not None else None
        lines.append(row(o.tool, _seconds(o), metrics, o.why))
    return "\n".join(lines)


def _seconds(outcome: Outcome) -> str:
    return "-" if outcome.seconds is None else f"{outcome.seconds:.1f}"


def compare(label: str, args, out: Path) -> tuple[str, dict]:
    """The tools on one model, then our search within the slowest one's time, then
    one side-by-side bench."""
    path = str(bundled_model_path(label)) if not label.endswith(".onnx") else label
    calib = arrays(path, "fashion-mnist:calib", args.calibration_samples)
    val = arrays(path, "fashion-mnist", args.eval_samples)
    runners = {
        "nncf": lambda: run_nncf(path, calib, val, args.max_drop),
        "inc": lambda: run_inc(path, calib, val, args.max_drop, args.inc_criterion,
                               out / f"{label}-inc-workspace"),
        "inc-onnx": lambda: run_inc_onnx(path, calib, val, args.max_drop,
                                         out / f"{label}-inc-onnx-workspace"),
    }
    theirs = [runners[name]() for name in args.tools]
    for o in theirs:
        print(f"{label}: {o.tool} {_seconds(o)} s {o.why}", flush=True)
    spent = [o.seconds for o in theirs if o.model is not None and o.seconds is not None]
    budget = args.timeout or (max(spent) if spent else args.fallback_seconds)
    ours = run_ours(path, budget, out, label, args)
    print(f"{label}: ours {ours.seconds:.1f} s {ours.why}", flush=True)
    outcomes = [ours] + theirs
    for o in theirs:  # ours is written by the search itself (LABEL-ours.onnx)
        if o.model is not None:
            onnx.save(o.model, out / f"{label}-{o.tool}.onnx")
    results = bench(path, outcomes, args)
    text = table(label, outcomes, results, args, budget)
    return text, {"model": label, "budget_s": budget,
                  "tools": [{"tool": o.tool, "seconds": o.seconds, "why": o.why} for o in outcomes],
                  "bench": [r.to_dict() for r in results]}


def versions() -> str:
    """The packages' versions, for the record beside the figures."""
    from importlib import metadata

    parts = []
    for package in ("onnxruntime", "onnx", "numpy", "nncf", "neural-compressor",
                    "onnx-neural-compressor"):
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{package} not installed")
    return ", ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenetv2")
    parser.add_argument("--max-drop", type=float, default=0.01, help="1 point top-1")
    parser.add_argument("--tools", default="nncf,inc,inc-onnx",
                        help="of nncf, inc (neural-compressor 2.6), inc-onnx "
                             "(onnx-neural-compressor 1.0)")
    parser.add_argument("--inc-criterion", choices=("absolute", "relative"),
                        default="absolute", help="inc's loss; inc-onnx's is always relative")
    parser.add_argument("--timeout", type=float, default=None,
                        help="our search's budget (default: the slower tool's wall time)")
    parser.add_argument("--fallback-seconds", type=float, default=110.0,
                        help="our budget when neither tool produced a model")
    parser.add_argument("--trials", type=int, default=100000, help="the timeout binds")
    parser.add_argument("--calibration-samples", type=int, default=256)
    parser.add_argument("--eval-samples", type=int, default=None, help="smoke runs only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", default="out/bench-quant-tools")
    args = parser.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := set(args.tools) - set(TOOLS):
        parser.error(f"unknown tools {', '.join(sorted(unknown))}; known: {', '.join(TOOLS)}")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for tool in args.tools:
        if why := missing(TOOLS[tool]):
            print(f"{tool}: {why}", flush=True)
    load = os.getloadavg()
    report = [f"# bench_quant_tools {datetime.datetime.now():%Y-%m-%d %H:%M}", versions()]
    records = []
    for label in [m.strip() for m in args.models.split(",") if m.strip()]:
        text, record = compare(label, args, out)
        report += ["", text]
        records.append(record)
        print(text + "\n", flush=True)
    report.append(f"\nload average before: {load[0]:.1f} / after: {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} cores")
    (out / "bench_quant_tools.md").write_text("\n".join(report) + "\n")
    (out / "bench_quant_tools.json").write_text(json.dumps(records, indent=2, default=str) + "\n")
    print(report[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
