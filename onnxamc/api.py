"""The public Python API: analyze, apply, evaluate, bench, search.

Every function takes a model as a path, a ModelProto, or None for the bundled default
(ResNet-20 trained on Fashion-MNIST), and data as a path or built-in name. Errors a
user can act on are `onnxamc.errors.OnnxAmcError` with a one-line message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import onnx
import optuna

from onnxamc.data import Dataset, load_data
from onnxamc.errors import DataError, EvaluationError, OnnxAmcError, PolicyError, SearchError
from onnxamc.evaluate import Evaluator, Metrics, compare
from onnxamc.graph import ModelInfo, analyze as _analyze, load_model, save_model, serialized_size
from onnxamc.models import bundled_model_path
from onnxamc.graph.blocks import ResidualBlock, residual_blocks
from onnxamc.graph.groups import ChannelGroup, channel_groups as _channel_groups
from onnxamc.passes import CALIBRATION_METHODS, apply_policy, structural_fit
from onnxamc.graph.size import layer_bits_per_weight
from onnxamc.policy import LayerAction, Policy, parse_uniform
from onnxamc.runtime import DEFAULT_THREADS
from onnxamc.runtime.target import DEFAULT_TARGET, Target, load_target
from onnxamc.search import (AccuracyBound, LatencyBudget, MultiObjective, SearchResult,
                            SearchSpace, Shaping, make_sampler, open_study, parse_objective,
                            run_search, slots_from_layers)
from onnxamc.search.predictor import AccuracyPredictor
from onnxamc.search.priors import load_sensitivity, prior_policies
from onnxamc.search.transfer import transfer_policy
from onnxamc.search.sensitivity import DEFAULT_ACTIONS as DEFAULT_SENSITIVITY_ACTIONS
from onnxamc.search.sensitivity import SensitivityTable

ModelLike = str | Path | onnx.ModelProto | None
DataLike = str | Path | Dataset
TargetLike = str | Path | Target | None  # shipped name, TOML path; None: cpu-ort

DEFAULT_DATA = "fashion-mnist"
DEFAULT_CALIBRATION = "fashion-mnist:calib"
DEFAULT_CALIBRATION_SAMPLES = 256
# Channel pruning and int8 are the actions that make onnxruntime faster; sparsity only
# shrinks the zipped file, so it is opt-in (--actions prune,quant,sparsity).
DEFAULT_ACTIONS = ("prune", "quant")
CALIBRATION_BATCH = 32


def load(model: ModelLike = None) -> onnx.ModelProto:
    """A checked, shape-inferred model; None is the bundled ResNet-20."""
    return load_model(bundled_model_path() if model is None else model)


def export(entry: str, input_shape: Sequence[int] | str, output: str | Path,
           weights: str | Path | None = None) -> onnx.ModelProto:
    """Export a torch model (`package.module:factory`) to ONNX, verified against torch."""
    from onnxamc.export import export_torch, load_factory, parse_shape

    shape = parse_shape(input_shape) if isinstance(input_shape, str) else tuple(input_shape)
    module = load_factory(entry, weights)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    return export_torch(module, shape, output)


def is_torch_entry(model: ModelLike) -> bool:
    """`pkg.mod:factory` (not an existing file) names a torch model to export first."""
    return (isinstance(model, str) and ":" in model and not Path(model).exists()
            and not model.endswith(".onnx"))


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
    structural = {"keep", "rank", "remove"} & set(values)
    if structural:  # skip the layers that cannot take them (output layer, depthwise...)
        fit = structural_fit(proto)
        defaults = LayerAction()
        policy.layers = {n: replace(a, **{f: getattr(defaults, f) for f in structural - fit[n]})
                         for n, a in policy.layers.items()}
    policy.fingerprint = info.fingerprint
    return policy


def channel_groups(model: ModelLike = None) -> list[ChannelGroup]:
    """The channel groups: layers pruned together, and for each blocked one, why."""
    return _channel_groups(load(model)).groups


def removable_blocks(model: ModelLike = None) -> list[ResidualBlock]:
    """Residual blocks that `remove` can replace by the identity."""
    return residual_blocks(load(model))


def apply(model: ModelLike, policy: Policy | str | Path,
          calibration: DataLike | None = None,
          calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
          calibration_method: str = "minmax", output: str | Path | None = None, *,
          reconstruct: bool = False, channel_multiple: int = 8,
          importance: str = "l1") -> onnx.ModelProto:
    """Apply a policy (object or JSON file) and optionally save the result.

    `reconstruct` refits pruned layers on the calibration data (least squares)."""
    proto = load(model)
    if not isinstance(policy, Policy):
        policy = Policy.load(policy)
    if calibration_method not in CALIBRATION_METHODS:
        raise PolicyError(f"unknown calibration method {calibration_method!r}; "
                          f"use one of {', '.join(CALIBRATION_METHODS)}")
    out = apply_policy(proto, policy, _lazy_calibration(proto, calibration, calibration_samples),
                       calibration_method, reconstruct=reconstruct,
                       channel_multiple=channel_multiple, importance=importance)
    onnx.checker.check_model(out)
    if output is not None:
        save_model(out, output)
    return out


def _lazy_calibration(model: onnx.ModelProto, calibration: DataLike | None, samples: int,
                      data: DataLike | None = None):
    """Calibration feeds, loaded only when a policy quantizes or reconstructs. Without a
    choice: the user's evaluation `data` (the best calibration set we have), or for the
    bundled Fashion-MNIST its calibration subset, with a hint when that does not fit."""
    if calibration is None and data is not None and not _is_fashion_mnist(data):
        calibration = data
    loaded: list[Dataset] = []

    def feeds():
        if not loaded:
            try:
                loaded.append(data_for(model, calibration or DEFAULT_CALIBRATION, samples))
            except DataError as exc:
                if calibration is not None:
                    raise
                raise DataError(f"quantization needs calibration data that fits the model "
                                f"(--calibration); the default {DEFAULT_CALIBRATION} does not: "
                                f"{exc}") from None
        return loaded[0].batches(CALIBRATION_BATCH)

    return feeds


def evaluate(model: ModelLike, data: DataLike = DEFAULT_DATA,
             threads: int | None = None, runs: int = 100, *,
             target: TargetLike = None) -> Metrics:
    """Accuracy (top-1, or fidelity without labels), latency, size, MACs, params."""
    return bench([model], data, threads, runs, target=target)[0]


def bench(models: Sequence[ModelLike], data: DataLike | None = DEFAULT_DATA,
          threads: int | None = None, runs: int = 100, warmup: int = 10,
          limit: int | None = None, fgsm_epsilon: float | None = None, *,
          target: TargetLike = None, layer_table: bool | str | Path = False) -> list[Metrics]:
    """Metrics side by side, ratios to the first model, latency runs interleaved.

    `fgsm_epsilon` adds `robust_accuracy`: accuracy on FGSM inputs crafted on the first
    model (a transfer attack, so all models face the same inputs; needs torch).
    `target` says where latency is measured; `threads` overrides its thread count.
    `layer_table` (True or a JSON path) adds the per-layer table's prediction and its
    error against the measured latency.
    """
    target = load_target(target, threads)
    threads = DEFAULT_THREADS if threads is None else threads
    protos = [load(m) for m in models]
    dataset = data_for(protos[0], data, limit) if data is not None else None
    if dataset is None:
        from onnxamc.data import random_data

        dataset_for_feed = random_data(_analyze(protos[0]).inputs, 1)
        results = compare(protos, None, threads, runs, warmup, feed=dataset_for_feed.one(),
                          target=target)
        return _add_layer_predictions(protos, results, target, layer_table)
    results = compare(protos, dataset, threads, runs, warmup, target=target)
    if fgsm_epsilon is not None:
        from onnxamc.evaluate import top1
        from onnxamc.recover.robustness import fgsm_dataset
        from onnxamc.runtime import make_session, run_batches

        attacked = fgsm_dataset(protos[0], dataset, fgsm_epsilon)
        targets = attacked.labels
        if targets is None:  # fidelity: agreement with the first model on clean inputs
            first = run_batches(make_session(protos[0], threads), dataset.batches(256))
            targets = first.reshape(len(dataset), -1).argmax(1)
        for proto, metrics in zip(protos, results):
            outputs = run_batches(make_session(proto, threads), attacked.batches(256))
            metrics.extra["robust_accuracy"] = top1(outputs, targets)
            metrics.extra["fgsm_epsilon"] = fgsm_epsilon
    return _add_layer_predictions(protos, results, target, layer_table)


def _add_layer_predictions(protos, results, target: Target, table_path) -> list[Metrics]:
    if not table_path:
        return results
    from onnxamc.runtime.layer_table import LayerTable

    table = LayerTable(target, None if table_path is True else table_path)
    scale = None  # measured / predicted on the first model: what the sum leaves out
    for proto, metrics in zip(protos, results):
        if metrics.latency is not None:
            prediction = table.predict(proto)
            measured = metrics.latency.median_ms
            scale = scale or measured / prediction.total_ms
            metrics.extra["layer_table"] = {
                **prediction.to_dict(), "table": str(table.path),
                "error": prediction.error(measured),
                "calibrated_error": prediction.total_ms * scale / measured - 1.0}
    return results


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
           calibration: DataLike | None = None, *, latency: float | None = None,
           max_drop: float | None = None, trials: int = 30, timeout: float | None = None,
           storage: str | Path | None = None, study: str | None = None,
           output: str | Path | None = None, actions: Sequence[str] = DEFAULT_ACTIONS,
           threads: int | None = None, eval_samples: int | None = None,
           calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES, latency_runs: int = 50,
           seed: int | None = 0, progress: bool = True, verify_runs: int = 200,
           agent: str = "tpe", objective: str | None = None,
           sensitivity: str | Path | None = None, predictor: bool = False,
           warm_start: Policy | str | Path | None = None,
           warm_start_from: ModelLike = None, shaping: Shaping | None = None,
           target: TargetLike = None, pick: str | None = None,
           allow_emulated: bool = False) -> SearchOutcome:
    """Search per-layer policies with an agent (Optuna sampler), measuring latency on
    `target`, then write the best policy and its model.

    `latency` asks for the best accuracy within latency ≤ ratio × original;
    `max_drop` (the default, 0.01) for the lowest latency within that accuracy drop.
    `objective` picks another goal (amc, amc-latency, weighted:λ, pareto), `agent` the
    sampler (tpe, random, qmc, cmaes, gp, nsga2, ddpg, rl). `actions` items may carry
    ranges: "sparsity=0:0.8", "quant=32/8". `sensitivity` (a per-layer table, see
    search.priors) seeds the study with good first policies; `predictor` skips
    candidates an accuracy regression predicts to be far worse. `warm_start` is a
    policy tried first; with `warm_start_from` (the model it was found for) it is
    transferred to this model's layers by type and relative depth. `shaping` adds a
    diversity bonus and a penalty per removed layer to single objectives. `pick` (with
    objective "pareto") chooses the policy written from the front: "drop<=0.01",
    "latency<=0.5", "size<=0.3" or "knee" (see search.pick). A board whose agent is
    emulated (qemu) is refused unless `allow_emulated` (to try the workflow).
    Running it again with the same storage and study continues where it stopped.
    """
    target = load_target(target, threads)
    threads = DEFAULT_THREADS if threads is None else threads
    proto = load(model)
    info = _analyze(proto)
    try:
        goal = parse_objective(objective, latency, max_drop, pick)
        prunable = {n for n, fit in structural_fit(proto).items() if "keep" in fit}
        space = SearchSpace(slots_from_layers(info.layers, prunable), list(actions))
        sampler = make_sampler(agent, space, goal, seed, trials)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    output = Path(output) if output is not None else default_output(model)
    storage = str(storage) if storage is not None else str(output.with_suffix(".journal"))
    name = study or f"{output.stem}-{goal.label}" + (
        "" if target.name == DEFAULT_TARGET else f"-{target.name}")
    dataset = data_for(proto, data, eval_samples)
    calib = _lazy_calibration(proto, calibration, calibration_samples, data)
    reconstruct = "prune" in space.actions  # least-squares refit: AMC's cheap recovery
    evaluator = Evaluator(proto, dataset, threads, latency_runs, target=target,
                          allow_emulated=allow_emulated)
    original_size = serialized_size(proto)

    def evaluate_policy(policy: Policy) -> dict:
        try:
            compressed = apply_policy(proto, policy, calib, reconstruct=reconstruct)
            metrics = evaluator.evaluate(compressed).to_dict()
            return {**metrics, "size_ratio": metrics["size_bytes"] / original_size}
        except OnnxAmcError:
            raise
        except Exception as exc:  # an onnxruntime or quantizer failure on this candidate
            raise EvaluationError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc

    st = open_study(storage, name, goal, info.fingerprint, sampler=sampler)
    st.set_user_attr("reference_accuracy", evaluator.reference_accuracy)
    seeds = space.seeds()
    if sensitivity is not None:
        seeds = prior_policies(space, load_sensitivity(sensitivity)) + seeds
    if warm_start is not None:
        first = (transfer(warm_start, warm_start_from, proto) if warm_start_from is not None
                 else _loaded_policy(warm_start))
        first.validate({l.name: l.op_type for l in info.layers})
        seeds = [first] + seeds
    result = run_search(st, space, goal, evaluate_policy, trials, timeout, progress, seeds,
                        shaping=shaping,
                        predictor=AccuracyPredictor(space, seed=seed) if predictor else None)
    outcome = SearchOutcome(result, result.policy, None, None, storage, name)
    if result.policy is None:
        return outcome
    build = lambda p: apply_policy(proto, p, calib, reconstruct=reconstruct)  # noqa: E731
    chosen, compressed, (outcome.original, outcome.compressed) = _confirm_best(
        result, goal, space, proto, build, dataset, threads, verify_runs, target)
    result.best, result.policy = chosen, space.policy_from_params(chosen.params)
    policy = result.policy
    policy.fingerprint, policy.model_name = info.fingerprint, _model_name(model)
    policy.meta = {"objective": goal.describe(), "agent": agent, "feasible": result.feasible,
                   "study": name, "storage": storage, "trial": chosen.number,
                   "metrics": chosen.user_attrs["metrics"],
                   "confirmed": outcome.compressed.to_dict()}
    if getattr(goal, "pick", None) is not None:
        policy.meta["pick"] = goal.pick.describe()
    onnx.checker.check_model(compressed)
    outcome.policy = policy
    outcome.model_path = save_model(compressed, output)
    outcome.policy_path = policy.save(output.with_suffix(".policy.json"))
    return outcome


CONFIRM_TOP = 3  # best feasible trials of a constrained search re-measured


CONFIRM_FRONT = 16  # Pareto-front members re-measured before the pick rule chooses


def _confirm_best(result, goal, space, reference, build, dataset, threads, runs, target):
    """Re-measure the best candidates side by side with the original and choose by these
    numbers: a latency measured within one trial is noisy on a shared machine, and the
    search's best is often its luckiest measurement rather than its fastest model.
    Constrained objectives re-measure their few best feasible trials; a Pareto search
    re-measures its front and applies its pick rule to the new numbers (and sets
    `result.feasible` to whether the rule is met). Other objectives keep their best.
    Returns (trial, model, (original metrics, its metrics))."""
    multi = isinstance(goal, MultiObjective) and bool(result.pareto)
    if multi:
        candidates = sorted(result.pareto, key=lambda t: abs(
            t.user_attrs["metrics"]["latency_ratio"]
            - result.best.user_attrs["metrics"]["latency_ratio"]))[:CONFIRM_FRONT]
    elif result.feasible and isinstance(goal, (LatencyBudget, AccuracyBound)):
        sign = -1 if goal.direction == "maximize" else 1
        ranked = sorted((t for t in result.study.get_trials(
                            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                         if t.constraints and all(v <= 0 for v in t.constraints.values())),
                        key=lambda t: sign * t.value)
        seen, candidates = set(), []
        for t in ranked:
            key = json.dumps(t.params, sort_keys=True)
            if key not in seen:
                seen.add(key)
                candidates.append(t)
            if len(candidates) == CONFIRM_TOP:
                break
    else:
        candidates = [result.best]
    models = [build(space.policy_from_params(t.params)) for t in candidates]
    measured = compare([reference] + models, dataset, threads, runs, target=target)
    original = measured[0]
    rows = []
    for m in measured[1:]:
        row = m.to_dict()
        row["accuracy_drop"] = original.accuracy - row["accuracy"]
        row["size_ratio"] = m.size_bytes / original.size_bytes
        rows.append(row)
    if multi:
        best, result.feasible = goal.pick_rule.choose(rows) or (0, False)
    else:
        def score(i: int):
            if not isinstance(goal, (LatencyBudget, AccuracyBound)):
                return (False, 0.0, i)
            sign = -1 if goal.direction == "maximize" else 1
            return (goal.constraint(rows[i]) > 0, sign * goal.value(rows[i]), i)

        best = min(range(len(candidates)), key=score)
    return candidates[best], models[best], (original, measured[best + 1])


def sensitivity(model: ModelLike = None, data: DataLike = DEFAULT_DATA,
                calibration: DataLike | None = None,
                actions: dict[str, dict[str, Any]] | None = None,
                layers: Sequence[str] | None = None, eval_samples: int | None = None,
                calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
                calibration_method: str = "minmax", threads: int = DEFAULT_THREADS,
                progress: bool = False) -> SensitivityTable:
    """The accuracy drop when one layer alone takes each action (`actions`: label →
    LayerAction fields; default: every quantization kind). Actions that do not fit a
    layer are recorded as None."""
    proto = load(model)
    info = _analyze(proto)
    actions = dict(DEFAULT_SENSITIVITY_ACTIONS if actions is None else actions)
    for label, fields in actions.items():
        LayerAction.from_dict(fields, f"action {label}")
    unknown = sorted(set(layers or ()) - set(info.layer_names))
    if unknown:
        raise PolicyError(f"not layers of this model: {', '.join(unknown)}")
    evaluator = Evaluator(proto, data_for(proto, data, eval_samples), threads)
    calib = _lazy_calibration(proto, calibration, calibration_samples, data)
    table = SensitivityTable(info.fingerprint, evaluator.reference_accuracy,
                             evaluator.accuracy_kind, actions,
                             meta={"eval_samples": len(evaluator.data),
                                   "calibration_method": calibration_method})
    for layer in layers or info.layer_names:
        table.drops[layer], table.bits[layer] = {}, {}
        for label, fields in actions.items():
            policy = Policy({layer: LayerAction(**fields)}, info.fingerprint)
            try:
                policy.validate({l.name: l.op_type for l in info.layers})
            except PolicyError:
                table.drops[layer][label] = table.bits[layer][label] = None
                continue
            compressed = apply_policy(proto, policy, calib, calibration_method)
            metrics = evaluator.evaluate(compressed, measure_latency=False)
            table.drops[layer][label] = round(evaluator.reference_accuracy - metrics.accuracy, 6)
            table.bits[layer][label] = round(layer_bits_per_weight(compressed, layer), 3)
            if progress:
                print(f"{layer:<32} {label:<18} drop {100 * table.drops[layer][label]:+.2f}",
                      flush=True)
    return table


@dataclass
class CompressOutcome:
    search: SearchOutcome | None  # None when a given policy was applied without a search
    model_path: Path | None
    policy_path: Path | None
    before_after: dict[str, dict]
    policy: Policy | None = None
    report: Any = None  # report.ReportFiles
    train_report: Any = None  # recover.TrainReport
    recovery_search: Any = None  # recover.recovery_search.RecoverySearch
    kept: str = "post-training quantization"
    models: dict[str, onnx.ModelProto] = field(default_factory=dict, repr=False)  # as before_after
    verified_on: str | None = None  # the data before_after was measured on, if not `data`
    data_name: str | None = None  # `data`: what the search and the recovery chose by


def compress(model: ModelLike = None, data: DataLike = DEFAULT_DATA,
             calibration: DataLike | None = None, *, policy: Policy | str | Path | None = None,
             train_data: DataLike | None = None,
             input_shape: Sequence[int] | str | None = None, weights: str | Path | None = None,
             epochs: float = 1.0, train_seconds: float | None = None,
             lr: float | str = "auto", distill: float = 0.5, feature_distill: float = 0.0,
             distill_trials: int = 0, trial_steps: int = 200, qat: bool = True,
             report: bool = True, verify_data: DataLike | None = None,
             report_dir: str | Path | None = None, output: str | Path | None = None,
             progress: bool = True, **search_options: Any) -> CompressOutcome:
    """Convert (if given a torch entry point), search (or apply the given `policy`),
    recover, verify, report.

    Recovery: with `train_data`, the float part of the policy is fine-tuned with
    distillation from the original (`distill` weight) and quantization-aware training for
    the quantized layers, then quantized. A layer's `distill` in the policy (or
    `feature_distill` for every layer) also matches that layer's output to the
    original's where its shape is kept. Short trainings of `trial_steps` steps, scored on
    held-out training data, choose what is not given: the learning rate when `lr` is
    "auto" (one trial per rate in recover.LR_CHOICES), and with `distill_trials` > 0
    the per-layer distillation rates, which are written into the policy. The trained
    model is kept only if it beats plain post-training compression on the evaluation
    data. Without training data, the compressed model (least-squares reconstruction for
    pruned layers) stands as it is.

    `verify_data` measures the final before/after table on other data than the one the
    search and the recovery chose by (their choices are biased towards `data`).
    """
    output = Path(output) if output is not None else default_output(model)
    if is_torch_entry(model):
        if input_shape is None:
            raise OnnxAmcError(f"{model} is a torch entry point: give its input shape "
                               "(--input-shape 1,3,224,224)")
        exported = output.with_name(output.stem.removesuffix("-compressed") + "-original.onnx")
        export(str(model), input_shape, exported, weights)
        model = exported
    proto = load(model)
    if distill_trials and train_data is None:
        raise OnnxAmcError("searching distillation rates (--distill-trials) needs --train-data")
    if lr != "auto" and (isinstance(lr, str) or not 0 < lr < 10):
        raise OnnxAmcError(f"learning rate must be a positive number or 'auto', got {lr!r}")
    if policy is not None:
        result = _apply_given_policy(model, proto, policy, data, calibration, output,
                                     search_options)
    else:
        found = search(model, data, calibration, output=output, progress=progress,
                       **search_options)
        result = CompressOutcome(found, found.model_path, found.policy_path, {}, found.policy)
        if found.policy is None:
            return result
        result.before_after = {"original": found.original.to_dict(),
                               "compressed": found.compressed.to_dict()}
        result.models = {"original": proto, "compressed": load_model(found.model_path)}
    if train_data is not None:
        _recover_by_training(result, proto, data, calibration, train_data, epochs, train_seconds,
                             lr, distill, feature_distill, distill_trials, trial_steps, qat,
                             progress, search_options)
    chosen_on = result.before_after  # measured on `data`, like the trials
    result.data_name = str(getattr(data, "name", data))
    if verify_data is not None:
        _verify(result, proto, verify_data, search_options)
    if report:
        from onnxamc.report import write_report

        info = _analyze(proto)
        directory = Path(report_dir) if report_dir else output.with_name(output.stem + "-report")
        found = result.search
        result.report = write_report(
            directory, found.result.study if found else None, result.policy,
            [l.to_dict() for l in info.layers], result.before_after,
            title=f"onnxamc: {output.name}",
            chosen_trial=found.result.best.number if found else None,
            notes=_recovery_notes(result), markers=chosen_on)
    return result


def _apply_given_policy(model, proto, policy, data, calibration, output: Path,
                        options: dict) -> CompressOutcome:
    """Compress with a policy the user gives (skipping the search): apply, verify
    against the original in the same run, write the model and the policy."""
    info = _analyze(proto)
    policy = _loaded_policy(policy)
    policy.validate({l.name: l.op_type for l in info.layers}, info.fingerprint)
    calib = _lazy_calibration(proto, calibration,
                              options.get("calibration_samples", DEFAULT_CALIBRATION_SAMPLES), data)
    compressed = apply_policy(proto, policy, calib,
                              reconstruct=any(a.keep < 1 for a in policy.layers.values()))
    onnx.checker.check_model(compressed)
    original, measured = compare([proto, compressed], data_for(proto, data,
                                                               options.get("eval_samples")),
                                 options.get("threads") or DEFAULT_THREADS,
                                 options.get("verify_runs", 200), target=options.get("target"))
    policy.fingerprint, policy.model_name = info.fingerprint, _model_name(model)
    policy.meta = {**policy.meta, "confirmed": measured.to_dict()}
    model_path = save_model(compressed, output)
    policy_path = policy.save(output.with_suffix(".policy.json"))
    return CompressOutcome(None, model_path, policy_path,
                           {"original": original.to_dict(), "compressed": measured.to_dict()},
                           policy, models={"original": proto, "compressed": compressed})


def _recover_by_training(result: CompressOutcome, proto, data, calibration, train_data, epochs,
                         train_seconds, lr, distill, feature_distill, distill_trials,
                         trial_steps, qat, progress, options) -> None:
    from onnxamc.policy import LayerAction
    from onnxamc.recover import TrainConfig, train

    policy = result.policy
    float_policy = Policy({n: LayerAction(sparsity=a.sparsity, keep=a.keep, rank=a.rank,
                                          remove=a.remove) for n, a in policy.layers.items()})
    calib = _lazy_calibration(proto, calibration,
                              options.get("calibration_samples", DEFAULT_CALIBRATION_SAMPLES), data)
    float_model = apply_policy(proto, float_policy, calib,
                               reconstruct=any(a.keep < 1 for a in policy.layers.values()))
    float_info = _analyze(float_model)
    bits = {n: a.bits for n, a in policy.layers.items()
            if a.bits != 32 and n in float_info.layer_names}
    full = data_for(proto, train_data)
    cut = max(1, len(full) // 10)  # the last tenth validates (early stop), never trains
    train_set = full.take(len(full) - cut)
    val = Dataset({k: v[-cut:] for k, v in full.inputs.items()},
                  None if full.labels is None else full.labels[-cut:], "validation")
    config = TrainConfig(epochs=epochs, time_budget=train_seconds,
                         lr=TrainConfig.lr if lr == "auto" else lr, distill_weight=distill,
                         qat_bits=_qat_bits(policy, float_info) if qat else {},
                         threads=options.get("threads") or DEFAULT_THREADS, progress=progress)
    if lr == "auto" or distill_trials:
        if val.labels is None:
            raise DataError("choosing the learning rate or distillation rates needs labelled "
                            "training data: give --lr and no --distill-trials")
        _search_recovery(result, float_model, proto, train_set, val, config,
                         lr, distill_trials, trial_steps, options)
        policy = result.policy
    config.feature_weights = _feature_weights(float_model, proto, policy, feature_distill)
    trained, result.train_report = train(float_model, train_set, config,
                                         val if val.labels is not None else None, teacher=proto)
    final = trained
    if bits:
        quant_fields = ("bits", "granularity", "block_size", "weight_only", "accuracy_level",
                        "dynamic", "mixed_low_bits_ratio", "share_bits")
        bits_policy = Policy({n: LayerAction(**{f: getattr(policy.layers[n], f)
                                                for f in quant_fields}) for n in bits})
        final = apply_policy(trained, bits_policy, calib)
    onnx.checker.check_model(final)
    dataset = data_for(proto, data, options.get("eval_samples"))
    original, ptq, tuned = compare([proto, result.models["compressed"], final], dataset,
                                   options.get("threads") or DEFAULT_THREADS,
                                   options.get("verify_runs", 200), target=options.get("target"))
    label = "compressed + " + ("QAT + KD" if bits and qat else "fine-tune + KD")
    result.before_after = {"original": original.to_dict(), "compressed": ptq.to_dict(),
                           label: tuned.to_dict()}
    result.models[label] = final
    if tuned.accuracy >= ptq.accuracy:
        save_model(final, result.model_path)
        result.kept = label.removeprefix("compressed + ")


def _qat_bits(policy: Policy, info: ModelInfo) -> dict[str, int]:
    """{weight initializer: bits} of the layers whose quantization the trainer's fake
    quantizer mirrors (symmetric integers per output channel, static); the others are
    quantized after training only."""
    return {info.layer(n).weight: a.bits for n, a in policy.layers.items()
            if n in info.layer_names and a.bits in (4, 8) and a.granularity == "per-channel"
            and not (a.weight_only or a.dynamic or a.share_bits or a.mixed_low_bits_ratio)}


def _verify(result: CompressOutcome, proto, verify_data, options: dict) -> None:
    """Measure every model of the before/after table again, side by side, on data that
    chose nothing."""
    labels = list(result.models)
    measured = compare([result.models[l] for l in labels], data_for(proto, verify_data),
                       options.get("threads") or DEFAULT_THREADS, options.get("verify_runs", 200),
                       target=options.get("target"))
    result.before_after = {l: m.to_dict() for l, m in zip(labels, measured)}
    result.verified_on = str(getattr(verify_data, "name", verify_data))


RECOVERY_VAL_SAMPLES = 2000  # enough to rank the trials, cheap enough to score each one


def _search_recovery(result: CompressOutcome, float_model, proto, train_set, val, config,
                     lr, distill_trials: int, steps: int, options: dict) -> None:
    """Choose the learning rate (`lr` "auto") and the per-layer `distill` rates by short
    trainings; set them in `config` and in the policy (and its JSON)."""
    from onnxamc.recover.recovery_search import LR_CHOICES, search_recovery
    from onnxamc.search import open_storage

    found = result.search
    storage = (found.storage if found else options.get("storage")
               or str(result.model_path.with_suffix(".journal")))
    name = (found.study_name if found else result.model_path.stem) + "-recovery"
    searched = search_recovery(
        float_model, proto, train_set, val.take(min(len(val), RECOVERY_VAL_SAMPLES)), config,
        lrs=LR_CHOICES if lr == "auto" else (lr,), distill_layers=list(result.policy.layers),
        distill_trials=distill_trials, steps=steps, storage=open_storage(str(storage)),
        study_name=name, seed=options.get("seed") or 0)
    result.recovery_search = searched
    config.lr = searched.lr
    result.policy.layers = {
        n: replace(result.policy.action(n), distill=searched.rates.get(n, a.distill))
        for n, a in result.policy.layers.items()}
    result.policy.meta = {**result.policy.meta, "recovery_search": {
        "study": searched.study.study_name, "trials": len(searched.study.trials),
        "steps": steps, "lr": searched.lr, "best_val_accuracy": searched.best_val_accuracy,
        "val_accuracy_by_lr": searched.by_lr}}
    result.policy.save(result.policy_path)


def _recovery_notes(result: CompressOutcome) -> list[str]:
    notes = []
    if result.verified_on is not None:
        notes.append(f"Before/after measured on {result.verified_on}: data the search and the "
                     "recovery did not choose by.")
    elif result.data_name is not None:
        notes.append(f"Before/after measured on {result.data_name}, the data the policy and "
                     "the recovery were chosen by (--verify-data measures on data that chose "
                     "nothing).")
    if result.search is None and result.policy_path is not None:
        notes.append("Policy given by the user (no search).")
    if result.recovery_search is not None:
        r = result.recovery_search
        by_lr = ", ".join(f"{lr:g}: {100 * acc:.2f}%" for lr, acc in r.by_lr.items())
        chosen = {n: v for n, v in r.rates.items() if v > 0}
        notes.append(f"Recovery settings: {len(r.study.trials)} trainings of {r.steps} steps "
                     f"scored on held-out training data (logits only, by learning rate: "
                     f"{by_lr}); chosen: learning rate {r.lr:g}"
                     + (", feature distillation " + ", ".join(f"{n}={v:g}" for n, v in
                                                              chosen.items()) if chosen else "")
                     + f" ({100 * r.best_val_accuracy:.2f}%).")
    if result.train_report is not None:
        t = result.train_report
        notes.append(f"Recovery training: {t.steps} steps in {t.seconds:.0f} s "
                     f"({t.stopped_because}); kept: {result.kept}.")
    return notes


def _feature_weights(model: onnx.ModelProto, teacher: onnx.ModelProto, policy: Policy,
                     uniform: float = 0.0) -> dict[str, float]:
    """{output tensor of a layer: its distillation weight} (the policy's `distill`, or
    `uniform` for every layer), for tensors the teacher computes with the same shape."""
    from onnxamc.recover.recovery_search import feature_tensors

    tensors = feature_tensors(model, teacher)
    weights = {name: a.distill or uniform for name, a in policy.layers.items()}
    if uniform:
        weights = {**{n: uniform for n in tensors}, **weights}
    return {tensors[n]: w for n, w in weights.items() if w > 0 and n in tensors}


def report(storage: str | Path, directory: str | Path, study: str | None = None,
           model: ModelLike = None, policy: Policy | str | Path | None = None):
    """The report of a stored study (Pareto plot, history, policy chart)."""
    import optuna

    from onnxamc.report import write_report
    from onnxamc.search import open_storage

    store = open_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(store)
             if s.user_attrs.get("kind") != "recovery"]  # the trainings that chose lr, distill
    if study is None:
        if len(names) != 1:
            raise SearchError(f"{storage} holds {len(names)} studies ({', '.join(names)}): "
                              "give --study")
        study = names[0]
    if study not in names:
        raise SearchError(f"no study {study!r} in {storage} (studies: {', '.join(names) or 'none'})")
    st = optuna.load_study(study_name=study, storage=store)
    info = _analyze(load(model))
    if policy is None:
        from onnxamc.search import LayerSlot as Slot

        space = SearchSpace([Slot(l.name, l.op_type) for l in info.layers])
        finished = [t for t in st.get_trials(deepcopy=False) if t.values is not None]
        best = min(finished, key=lambda t: t.values[0] if st.directions[0].name == "MINIMIZE"
                   else -t.values[0]) if finished else None
        policy = space.policy_from_params(best.params) if best else None
    elif not isinstance(policy, Policy):
        policy = Policy.load(policy)
    return write_report(directory, st, policy, [l.to_dict() for l in info.layers],
                        title=f"onnxamc: study {study}")


def transfer(policy: Policy | str | Path, source: ModelLike, target: ModelLike) -> Policy:
    """A policy found for `source` applied to `target`, a model of similar architecture
    (layers matched by type and relative depth; see search.transfer)."""
    src, dst = _analyze(load(source)), _analyze(load(target))
    out = transfer_policy(_loaded_policy(policy), slots_from_layers(src.layers),
                          slots_from_layers(dst.layers))
    out.fingerprint = dst.fingerprint
    return out


def _loaded_policy(policy: Policy | str | Path) -> Policy:
    return policy if isinstance(policy, Policy) else Policy.load(policy)


def _is_fashion_mnist(data: DataLike) -> bool:
    return isinstance(data, (str, Path)) and str(data).split(":")[0] == "fashion-mnist"


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


__all__ = ["OnnxAmcError", "CompressOutcome", "SearchOutcome", "SensitivityTable", "TargetStatus",
           "analyze", "apply", "bench", "channel_groups", "compress", "data_for", "evaluate",
           "export", "load", "removable_blocks", "search", "sensitivity", "targets", "transfer",
           "uniform_policy"]
