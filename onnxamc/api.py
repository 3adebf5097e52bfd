"""The public Python API: a thin facade over the workflows.

Every function takes a model as a path, a ModelProto, or None for the bundled default
(ResNet-20 trained on Fashion-MNIST), and data in any form onnxamc.data reads: an .npz
path, a built-in name, a folder of images, "package.module:function", a dict of arrays,
any iterable of feed dicts, a torch DataLoader, or a function returning one. `metric=` is
a built-in name, a spec, or your own function (onnxamc.quality).
Settings are keyword arguments, the fields of onnxamc.config's RunConfig, SearchConfig
and RecoveryConfig (each default is written there once). Errors a user can act on are
`onnxamc.errors.OnnxAmcError` with a one-line message.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import onnx

from onnxamc.config import (ConfigError, RecoveryConfig, RunConfig, SearchConfig,
                            default_output, split_options)
from onnxamc.errors import OnnxAmcError, PolicyError
from onnxamc.graph import FrontDoorReport, ModelInfo
from onnxamc.graph.blocks import ResidualBlock
from onnxamc.graph.context import ModelContext
from onnxamc.graph.groups import ChannelGroup
from onnxamc.graph.model import save_model
from onnxamc.metrics import Metrics
from onnxamc.policy import LayerAction, Policy, parse_uniform, uniform_policy as _uniform
from onnxamc.workflows import benching, compressing, preflight, reporting, searching
from onnxamc.workflows.compressing import CompressOutcome
from onnxamc.workflows.run import ModelLike, Run, input_shapes_of, load_context
from onnxamc.workflows.searching import SearchOutcome

DataLike = Any  # see onnxamc.data.load_data


def load(model: ModelLike = None, input_shapes: dict[str, tuple[int, ...]] | None = None
         ) -> onnx.ModelProto:
    """A checked model through the front door (graph/normalize.py: constants folded,
    `input_shapes` fixed, shapes inferred); None is the bundled ResNet-20."""
    return load_context(model, input_shapes).model


def front_door(model: ModelLike = None, input_shapes: dict[str, tuple[int, ...]] | None = None
               ) -> tuple[onnx.ModelProto, FrontDoorReport]:
    """The normalized model and what the front door changed (for `inspect`)."""
    from onnxamc.graph import load_with_report
    from onnxamc.models import bundled_model_path

    return load_with_report(bundled_model_path() if model is None else model, input_shapes)


def analyze(model: ModelLike = None) -> ModelInfo:
    """The layer table with AMC features, MACs and params."""
    return load_context(model).info


def channel_groups(model: ModelLike = None) -> list[ChannelGroup]:
    """The channel groups: layers pruned together, and for each blocked one, why."""
    return load_context(model).channels.groups


def removable_blocks(model: ModelLike = None) -> list[ResidualBlock]:
    """Residual blocks that `remove` can replace by the identity."""
    return load_context(model).blocks


def data_for(model: ModelLike, data: DataLike, limit: int | None = None, **options: Any):
    """Data loaded and checked against the model's inputs (one-line DataError if not):
    a Dataset in memory, or a StreamData read batch by batch (options: RunConfig fields,
    e.g. `preprocess` for an image folder)."""
    (config,) = split_options(options, RunConfig)
    return Run(model, config).load(data, limit)


def uniform_policy(model: ModelLike, spec: str | dict[str, Any],
                   input_shapes: Any = None) -> Policy:
    """The same action on every layer that can take it: `"keep=0.5,bits=8"` or a dict
    (`bits=8` alone takes, per layer, the int8 form that pays for its op); a PolicyError
    if it asks something and no layer can take it."""
    values = parse_uniform(spec) if isinstance(spec, str) else dict(spec)
    context = load_context(model, input_shapes_of(input_shapes))
    policy = _uniform(context, values)
    if policy.is_identity and not LayerAction.from_dict(dict(values), "uniform").is_identity:
        raise PolicyError(f"no layer of {context.name} can take {spec} (its layers: "
                          f"{', '.join(context.layer_ops) or 'none'})")
    return policy


def apply_guarded(model: ModelLike, policy: Policy, output: str | Path | None = None,
                  runs: int = 60, *, policy_output: str | Path | None = None,
                  **options: Any) -> tuple[onnx.ModelProto, str]:
    """`apply` for a quantizing policy that must not make the model slower: its int8
    placements timed beside the float model (workflows.int8_guard); returns the model
    and a one-line verdict."""
    from onnxamc.workflows.int8_guard import apply_guarded as guarded

    (config,) = split_options(options, RunConfig)
    preflight.check_outputs(output, policy_output)
    out, verdict = guarded(Run(model, config), policy, runs)
    if output is not None:
        save_model(out, output)
    if policy_output is not None:
        policy.save(policy_output)
    return out, verdict


def apply(model: ModelLike, policy: Policy | str | Path, output: str | Path | None = None,
          *, policy_output: str | Path | None = None, **options: Any) -> onnx.ModelProto:
    """Apply a policy (object or JSON file); with `output`, write the model (and with
    `policy_output`, the policy). Pruned layers are refit by least squares on the
    calibration data (`reconstruct=False` skips it)."""
    (config,) = split_options(options, RunConfig)
    preflight.check_outputs(output, policy_output)
    run = Run(model, config)
    policy = _policy(policy)
    out = run.apply(policy)
    if output is not None:
        save_model(out, output)
    if policy_output is not None:
        policy.save(policy_output)
    return out


def bench(models: Sequence[ModelLike], data: DataLike | None = "fashion-mnist",
          fgsm_epsilon: float | None = None, layer_table: bool | str | Path = False,
          **options: Any) -> list[Metrics]:
    """Metrics side by side, ratios to the first model, latency runs interleaved;
    `data` None measures latency and size only."""
    options.setdefault("runs", benching.BENCH_RUNS)
    (config,) = split_options({**options, "data": data or "random:1"}, RunConfig)
    if fgsm_epsilon is not None:
        if not (isinstance(fgsm_epsilon, (int, float)) and 0 <= fgsm_epsilon < math.inf):
            raise ConfigError(f"fgsm epsilon must be a number >= 0, got {fgsm_epsilon!r}")
        preflight.require("the FGSM attack (--fgsm)", ["torch"], "train")
    if layer_table and layer_table is not True:
        preflight.check_outputs(layer_table)
    runs = [Run(m, config) for m in models]
    return benching.bench(runs, data is not None, fgsm_epsilon, layer_table)


def evaluate(model: ModelLike, data: DataLike = "fashion-mnist", **options: Any) -> Metrics:
    """Quality, latency, size, MACs, params of one model."""
    return bench([model], data, **options)[0]


def search(model: ModelLike = None, data: DataLike = "fashion-mnist",
           output: str | Path | None = None, **options: Any) -> SearchOutcome:
    """Search per-layer policies (agent = an Optuna sampler), measuring latency on the
    target; re-measure the best side by side with the original, write the policy and its
    model (default MODEL-compressed.onnx). Options: RunConfig and SearchConfig fields,
    e.g. `max_drop=0.01` or `latency=0.6`, `trials`, `agent`, `objective`, `actions`,
    `storage`. The same call again continues the stored study."""
    config, search_config = split_options({**options, "data": data}, RunConfig, SearchConfig)
    return searching.search(Run(model, config), search_config,
                            Path(output) if output else default_output(model))


def compress(model: ModelLike = None, data: DataLike = "fashion-mnist",
             output: str | Path | None = None, *, policy: Policy | str | Path | None = None,
             input_shape: Sequence[int] | str | None = None, weights: str | Path | None = None,
             verify_data: DataLike | None = None, report: bool = True,
             report_dir: str | Path | None = None, **options: Any) -> CompressOutcome:
    """Convert (a torch entry point `pkg.mod:factory` is exported first), search (or
    apply `policy`), recover by training (with `train_data`), verify on `verify_data`,
    write the model, the policy and a report. Options: RunConfig, SearchConfig and
    RecoveryConfig fields."""
    config, search_config, recovery = split_options({**options, "data": data}, RunConfig,
                                                    SearchConfig, RecoveryConfig)
    output = Path(output) if output else default_output(model)
    if is_torch_entry(model):
        if input_shape is None:
            raise OnnxAmcError(f"{model} is a torch entry point: give its input shape "
                               "(--input-shape 1,3,224,224)")
        exported = output.with_name(output.stem.removesuffix("-compressed") + "-original.onnx")
        preflight.check_outputs(output, exported)  # before the export, not after it
        export(str(model), input_shape, exported, weights)
        model = exported
    return compressing.compress(Run(model, config), search_config, recovery, output,
                                _policy(policy) if policy is not None else None, verify_data,
                                report, Path(report_dir) if report_dir else None)


def sensitivity(model: ModelLike = None, data: DataLike = "fashion-mnist",
                actions: dict[str, dict[str, Any]] | None = None,
                layers: Sequence[str] | None = None, **options: Any):
    """The quality drop when one layer alone takes each action (`actions`: label →
    LayerAction fields; default: every quantization form)."""
    from onnxamc.search.sensitivity import DEFAULT_ACTIONS

    progress = options.pop("progress", False)
    (config,) = split_options({**options, "data": data}, RunConfig)
    return benching.sensitivity(Run(model, config), dict(actions or DEFAULT_ACTIONS), layers,
                                progress)


def report(storage: str | Path, directory: str | Path, study: str | None = None,
           model: ModelLike = None, policy: Policy | str | Path | None = None):
    """The report of a stored study: the policy the search chose, the Pareto plot..."""
    return reporting.report(storage, directory, Run(model), study,
                            _policy(policy) if policy is not None else None)


def transfer(policy: Policy | str | Path, source: ModelLike, target: ModelLike) -> Policy:
    """A policy found for `source` applied to `target`, a model of similar architecture
    (layers matched by type and relative depth; see search.transfer)."""
    from onnxamc.search.transfer import transfer_policy

    src, dst = load_context(source), load_context(target)
    out = transfer_policy(_policy(policy), searching.search_slots(src),
                          searching.search_slots(dst))
    out.fingerprint = dst.fingerprint
    return out


def export(entry: str, input_shape: Sequence[int] | str, output: str | Path,
           weights: str | Path | None = None) -> onnx.ModelProto:
    """Export a torch model (`package.module:factory`) to ONNX, verified against torch."""
    from onnxamc.export import export_torch, load_factory, parse_shape

    shape = parse_shape(input_shape) if isinstance(input_shape, str) else tuple(input_shape)
    preflight.check_outputs(output)
    preflight.require("exporting a torch model", preflight.EXPORT_NEEDS, "train")
    module = load_factory(entry, weights)
    return export_torch(module, shape, output)


def is_torch_entry(model: ModelLike) -> bool:
    """`pkg.mod:factory` (not an existing file) names a torch model to export first."""
    return (isinstance(model, str) and ":" in model and not Path(model).exists()
            and not model.endswith(".onnx"))


def targets(paths: Sequence[str | Path] = (), probe_remote: bool = False):
    """The shipped targets (and any extra TOML files), each validated and checked
    against this machine; remote ones probe their tracker only when asked."""
    from onnxamc.workflows.devices import target_statuses

    return target_statuses(paths, probe_remote)


def device_serve(host: str = "127.0.0.1", port: int = 9090, tracker: str | None = None,
                 key: str = "", silent: bool = False):
    """Start the device agent (TVM RPC server + onnxruntime timing); returns the server."""
    from onnxamc.workflows.devices import serve

    return serve(host, port, tracker, key, silent)


def device_tracker(host: str = "127.0.0.1", port: int = 9190):
    """Start a TVM RPC tracker (the queue of devices by key); returns it."""
    from onnxamc.workflows.devices import tracker

    return tracker(host, port)


def load_policy(path: str | Path) -> Policy:
    """A policy from its JSON file (checked; one-line PolicyError)."""
    return Policy.load(path)


def _policy(policy: Policy | str | Path) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, (str, Path)):
        return Policy.load(policy)
    raise PolicyError(f"a policy must be a Policy or a JSON file path, got {type(policy).__name__}")


__all__ = ["CompressOutcome", "ModelContext", "OnnxAmcError", "SearchOutcome", "analyze",
           "apply", "bench", "channel_groups", "compress", "data_for", "evaluate", "export", "load",
           "load_context", "load_policy",
           "removable_blocks", "report", "search", "sensitivity", "targets", "transfer",
           "uniform_policy"]
