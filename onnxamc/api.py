"""The public Python API: analyze, apply, evaluate, bench, search.

Every function takes a model as a path, a ModelProto, or None for the bundled default
(ResNet-20 trained on Fashion-MNIST), and data as a path or built-in name. Errors a
user can act on are `onnxamc.errors.OnnxAmcError` with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import onnx

from onnxamc.data import Dataset, load_data
from onnxamc.errors import OnnxAmcError, PolicyError, SearchError
from onnxamc.evaluate import Evaluator, Metrics, compare
from onnxamc.graph import ModelInfo, analyze as _analyze, load_model, save_model
from onnxamc.models import bundled_model_path
from onnxamc.passes import CALIBRATION_METHODS, apply_policy
from onnxamc.policy import Policy, parse_uniform
from onnxamc.runtime import DEFAULT_THREADS
from onnxamc.runtime.target import DEFAULT_TARGET, Target, load_target
from onnxamc.search import (LayerSlot, SearchResult, SearchSpace, make_objective, open_study,
                            run_search)

ModelLike = str | Path | onnx.ModelProto | None
DataLike = str | Path | Dataset
TargetLike = str | Path | Target | None  # shipped name, TOML path; None: cpu-ort

DEFAULT_DATA = "fashion-mnist"
DEFAULT_CALIBRATION = "fashion-mnist:calib"
DEFAULT_CALIBRATION_SAMPLES = 256
CALIBRATION_BATCH = 32


def load(model: ModelLike = None) -> onnx.ModelProto:
    """A checked, shape-inferred model; None is the bundled ResNet-20."""
    return load_model(bundled_model_path() if model is None else model)


def analyze(model: ModelLike = None) -> ModelInfo:
    """The layer table with AMC features, MACs and params."""
    return _analyze(load(model))


def data_for(model: onnx.ModelProto, data: DataLike, limit: int | None = None) -> Dataset:
    """Load `data` and check it fits the model's inputs (one-line error if not)."""
    return load_data(data, _analyze(model).inputs, limit=limit)


def uniform_policy(model: ModelLike, spec: str | dict[str, Any]) -> Policy:
    """The same action on every layer: `"sparsity=0.5,bits=8"` or a dict."""
    proto = load(model)
    info = _analyze(proto)
    values = parse_uniform(spec) if isinstance(spec, str) else dict(spec)
    policy = Policy.uniform(info.layer_names, {l.name: l.op_type for l in info.layers}, **values)
    policy.fingerprint = info.fingerprint
    return policy


def apply(model: ModelLike, policy: Policy | str | Path,
          calibration: DataLike = DEFAULT_CALIBRATION,
          calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
          calibration_method: str = "minmax", output: str | Path | None = None) -> onnx.ModelProto:
    """Apply a policy (object or JSON file) and optionally save the result."""
    proto = load(model)
    if not isinstance(policy, Policy):
        policy = Policy.load(policy)
    if calibration_method not in CALIBRATION_METHODS:
        raise PolicyError(f"unknown calibration method {calibration_method!r}; "
                          f"use one of {', '.join(CALIBRATION_METHODS)}")
    calib: list[Dataset] = []

    def feeds():
        if not calib:  # loaded only when the policy quantizes
            calib.append(data_for(proto, calibration, calibration_samples))
        return calib[0].batches(CALIBRATION_BATCH)

    out = apply_policy(proto, policy, feeds, calibration_method)
    onnx.checker.check_model(out)
    if output is not None:
        save_model(out, output)
    return out


def evaluate(model: ModelLike, data: DataLike = DEFAULT_DATA,
             threads: int | None = None, runs: int = 100, *,
             target: TargetLike = None) -> Metrics:
    """Accuracy (top-1, or fidelity without labels), latency, size, MACs, params."""
    return bench([model], data, threads, runs, target=target)[0]


def bench(models: Sequence[ModelLike], data: DataLike | None = DEFAULT_DATA,
          threads: int | None = None, runs: int = 100, warmup: int = 10,
          limit: int | None = None, *, target: TargetLike = None,
          layer_table: bool | str | Path = False) -> list[Metrics]:
    """Metrics side by side, ratios to the first model, latency runs interleaved.
    `target` says where latency is measured; `threads` overrides its thread count.
    `layer_table` (True or a JSON path) adds the per-layer table's prediction and its
    error against the measured latency."""
    target = load_target(target, threads)
    threads = DEFAULT_THREADS if threads is None else threads
    protos = [load(m) for m in models]
    dataset = data_for(protos[0], data, limit) if data is not None else None
    if dataset is None:
        from onnxamc.data import random_data

        dataset_for_feed = random_data(_analyze(protos[0]).inputs, 1)
        results = compare(protos, None, threads, runs, warmup, feed=dataset_for_feed.one(),
                          target=target)
    else:
        results = compare(protos, dataset, threads, runs, warmup, target=target)
    if layer_table:
        _add_layer_predictions(protos, results, target, layer_table)
    return results


def _add_layer_predictions(protos, results, target: Target, table_path) -> None:
    from onnxamc.runtime.layer_table import LayerTable

    table = LayerTable(target, None if table_path is True else table_path)
    for proto, metrics in zip(protos, results):
        if metrics.latency is None:
            continue
        prediction = table.predict(proto)
        metrics.extra["layer_table"] = {**prediction.to_dict(), "table": str(table.path),
                                        "error": prediction.error(metrics.latency.median_ms)}


@dataclass
class SearchOutcome:
    result: SearchResult
    policy: Policy | None
    model_path: Path | None
    policy_path: Path | None
    storage: str
    study_name: str
    original: Metrics | None = None
    compressed: Metrics | None = None


def default_output(model: ModelLike) -> Path:
    stem = "resnet20" if model is None or isinstance(model, onnx.ModelProto) else Path(model).stem
    return Path(f"{stem}-compressed.onnx")


def search(model: ModelLike = None, data: DataLike = DEFAULT_DATA,
           calibration: DataLike = DEFAULT_CALIBRATION, *, latency: float | None = None,
           max_drop: float | None = None, trials: int = 30, timeout: float | None = None,
           storage: str | Path | None = None, study: str | None = None,
           output: str | Path | None = None, actions: Sequence[str] = ("quant", "sparsity"),
           threads: int | None = None, eval_samples: int | None = None,
           calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES, latency_runs: int = 50,
           seed: int | None = 0, progress: bool = True, verify_runs: int = 200,
           target: TargetLike = None) -> SearchOutcome:
    """Search per-layer policies with TPE, then write the best policy and its model.

    `latency` asks for the best accuracy within latency ≤ ratio × original;
    `max_drop` (the default, 0.01) for the lowest latency within that accuracy drop.
    Running it again with the same storage and study continues where it stopped.
    """
    target = load_target(target, threads)
    threads = DEFAULT_THREADS if threads is None else threads
    proto = load(model)
    info = _analyze(proto)
    try:
        objective = make_objective(latency, max_drop)
        space = SearchSpace([LayerSlot(l.name, l.op_type) for l in info.layers], list(actions))
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    output = Path(output) if output is not None else default_output(model)
    storage = str(storage) if storage is not None else str(output.with_suffix(".journal"))
    name = study or f"{output.stem}-{objective.label}" + (
        "" if target.name == DEFAULT_TARGET else f"-{target.name}")
    dataset = data_for(proto, data, eval_samples)
    calib = data_for(proto, calibration, calibration_samples)
    evaluator = Evaluator(proto, dataset, threads, latency_runs, target=target)

    def evaluate_policy(policy: Policy) -> dict:
        compressed = apply_policy(proto, policy, lambda: calib.batches(CALIBRATION_BATCH))
        return evaluator.evaluate(compressed).to_dict()

    st = open_study(storage, name, objective, info.fingerprint, seed=seed)
    st.set_user_attr("reference_accuracy", evaluator.reference_accuracy)
    result = run_search(st, space, objective, evaluate_policy, trials, timeout, progress)
    outcome = SearchOutcome(result, result.policy, None, None, storage, name)
    if result.policy is None:
        return outcome
    policy = result.policy
    policy.fingerprint, policy.model_name = info.fingerprint, _model_name(model)
    best = result.best.user_attrs["metrics"]
    policy.meta = {"objective": objective.describe(), "feasible": result.feasible,
                   "study": name, "storage": storage, "trial": result.best.number,
                   "metrics": best}
    compressed = apply_policy(proto, policy, lambda: calib.batches(CALIBRATION_BATCH))
    onnx.checker.check_model(compressed)
    outcome.model_path = save_model(compressed, output)
    outcome.policy_path = policy.save(output.with_suffix(".policy.json"))
    outcome.original, outcome.compressed = compare([proto, compressed], dataset, threads,
                                                   verify_runs, target=target)
    return outcome


@dataclass
class TargetStatus:
    name: str
    path: Path | None
    target: Target | None  # None when the file does not validate
    error: str | None  # why it does not validate
    unavailable: str | None  # why this machine cannot measure on it now


def targets(paths: Sequence[str | Path] = (), probe_remote: bool = False) -> list[TargetStatus]:
    """The shipped targets (and any extra TOML files), each validated and checked
    against this machine; remote ones probe their tracker only when asked."""
    from onnxamc.errors import TargetError
    from onnxamc.runtime.measure import unavailable_reason
    from onnxamc.runtime.target import shipped_targets

    out = []
    for spec in [*shipped_targets(), *paths]:
        try:
            t = load_target(spec)
        except TargetError as exc:
            out.append(TargetStatus(Path(spec).stem, Path(spec), None, str(exc), None))
            continue
        out.append(TargetStatus(t.name, t.path, t, None, unavailable_reason(t, probe_remote)))
    return out


def device_serve(host: str = "127.0.0.1", port: int = 9090, tracker: str | None = None,
                 key: str = "", silent: bool = False):
    """Start the device agent (TVM RPC server + onnxruntime timing); returns the server."""
    from onnxamc.runtime.agent import serve
    from onnxamc.runtime.target import parse_address
    from onnxamc.runtime.tvm_build import require_tvm

    require_tvm("device agent")
    address = parse_address(tracker, "--tracker") if tracker else None
    if address and not key:
        raise OnnxAmcError("--tracker needs --key (the device key hosts ask for)")
    return serve(host, port, port + 100, address, key, silent)


def device_tracker(host: str = "127.0.0.1", port: int = 9190):
    """Start a TVM RPC tracker (the queue of devices by key); returns it."""
    from onnxamc.runtime.agent import start_tracker
    from onnxamc.runtime.tvm_build import require_tvm

    require_tvm("tracker")
    return start_tracker(host, port, port + 10, silent=False)


def _model_name(model: ModelLike) -> str:
    if model is None:
        return bundled_model_path().name
    return Path(model).name if not isinstance(model, onnx.ModelProto) else "model.onnx"


__all__ = ["OnnxAmcError", "analyze", "apply", "bench", "data_for", "evaluate", "load",
           "search", "targets", "uniform_policy", "SearchOutcome", "TargetStatus"]
