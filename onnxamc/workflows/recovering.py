"""Recovery by training: fine-tune the float part of a compressed model with
distillation from the original and quantization-aware training, after short trainings
chose what the user left open (learning rate, per-layer distillation rates).

The trained model is kept only if it beats plain post-training compression on the
evaluation data; every figure is measured side by side with the original.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import onnx

from onnxamc.config import RecoveryConfig
from onnxamc.data import Dataset
from onnxamc.errors import DataError
from onnxamc.graph.context import ModelContext
from onnxamc.graph.model import save_model
from onnxamc.metrics import Metrics
from onnxamc.policy import LayerAction, Policy
from onnxamc.workflows.run import Run

RECOVERY_VAL_SAMPLES = 2000  # enough to rank the trials, cheap enough to score each one
FLOAT_ACTIONS = ("remove", "prune", "low-rank", "sparsity")
UNLABELLED = ("choosing the learning rate or distillation rates needs labelled training "
              "data: give --lr and no --distill-trials")


@dataclass
class Recovered:
    """What training recovery did: the rows it measured, the model it kept."""

    before_after: dict[str, Metrics]
    models: dict[str, onnx.ModelProto]
    kept: str  # "post-training quantization" or the trained variant's label
    train_report: Any = None  # recover.TrainReport
    recovery_search: Any = None  # recover.recovery_search.RecoverySearch
    policy: Policy | None = None
    notes: list[str] = field(default_factory=list)


def recover(run: Run, policy: Policy, compressed: onnx.ModelProto, config: RecoveryConfig,
            storage: str, study_name: str) -> Recovered:
    """Train the float part of `policy` (applied to the run's model), quantize it as the
    policy says, and measure original / compressed / trained side by side."""
    from onnxamc.recover import TrainConfig, train

    float_model = run.apply(policy.only(*FLOAT_ACTIONS))
    train_set, val = _split(run.load(config.train_data, role="training data", in_memory=True))
    settings = TrainConfig(epochs=config.epochs, time_budget=config.train_seconds,
                           lr=TrainConfig.lr if config.lr == "auto" else config.lr,
                           distill_weight=config.distill,
                           qat_bits=qat_bits(policy, ModelContext(float_model)) if config.qat
                           else {}, threads=run.target.threads, progress=run.config.progress)
    searched = None
    if config.lr == "auto" or config.distill_trials:
        if val.labels is None:
            raise DataError(UNLABELLED)
        searched = _search_settings(run, policy, float_model, train_set, val, settings, config,
                                    storage, study_name)
        settings.lr = searched.lr
        policy = _with_distill(policy, searched.rates)
    settings.feature_weights = feature_weights(float_model, run.model, policy,
                                               config.feature_distill)
    trained, report = train(float_model, train_set, settings,
                            val if val.labels is not None else None, teacher=run.model)
    quantized = {n: a for n, a in policy.layers.items() if a.bits != 32
                 and n in ModelContext(trained).layer_ops}
    final = trained
    if quantized:
        quant_only = Policy({n: LayerAction(**{k: v for k, v in a.to_dict().items()
                                               if k not in _float_fields()})
                             for n, a in quantized.items()})
        final = Run(ModelContext(trained), run.config).apply(quant_only)
    label = "compressed + " + ("QAT + KD" if quantized and config.qat else "fine-tune + KD")
    original, ptq, tuned = run.evaluator(runs=run.config.verify_runs).compare([compressed, final])
    kept = label.removeprefix("compressed + ") if _at_least_as_good(tuned, ptq) \
        else "post-training quantization"
    return Recovered({"original": original, "compressed": ptq, label: tuned},
                     {"original": run.model, "compressed": compressed, label: final},
                     kept, report, searched, policy)


def keep_better(recovered: Recovered, path) -> None:
    """Write the trained model over the compressed one when recovery kept it."""
    if recovered.kept != "post-training quantization":
        label = next(k for k in recovered.models if k.startswith("compressed + "))
        save_model(recovered.models[label], path)


def qat_bits(policy: Policy, context: ModelContext) -> dict[str, int]:
    """{weight initializer: bits} of the layers whose quantization the trainer's fake
    quantizer mirrors (symmetric integers per output channel, static); the others are
    quantized after training only."""
    layers = {layer.name: layer for layer in context.info.layers}
    return {layers[n].weight: a.bits for n, a in policy.layers.items()
            if n in layers and a.bits in (4, 8) and a.granularity == "per-channel"
            and not (a.weight_only or a.dynamic or a.share_bits or a.mixed_low_bits_ratio)}


def feature_weights(model: onnx.ModelProto, teacher: onnx.ModelProto, policy: Policy,
                    uniform: float = 0.0) -> dict[str, float]:
    """{output tensor of a layer: its distillation weight} (the policy's `distill`, or
    `uniform` for every layer), for tensors the teacher computes with the same shape."""
    from onnxamc.recover.recovery_search import feature_tensors

    tensors = feature_tensors(model, teacher)
    weights = {name: a.distill or uniform for name, a in policy.layers.items()}
    if uniform:
        weights = {**{n: uniform for n in tensors}, **weights}
    return {tensors[n]: w for n, w in weights.items() if w > 0 and n in tensors}


def _split(full: Dataset) -> tuple[Dataset, Dataset]:
    """The last tenth validates (early stopping, the settings' trials), never trains."""
    cut = max(1, len(full) // 10)
    val = Dataset({k: v[-cut:] for k, v in full.inputs.items()},
                  None if full.labels is None else full.labels[-cut:], "validation")
    return full.take(len(full) - cut), val


def _search_settings(run, policy, float_model, train_set, val, settings, config, storage,
                     study_name):
    from onnxamc.recover.recovery_search import LR_CHOICES, search_recovery
    from onnxamc.search import open_storage

    return search_recovery(
        float_model, run.model, train_set, val.take(min(len(val), RECOVERY_VAL_SAMPLES)),
        settings, lrs=LR_CHOICES if config.lr == "auto" else (config.lr,),
        distill_layers=list(policy.layers), distill_trials=config.distill_trials,
        steps=config.trial_steps, storage=open_storage(storage),
        study_name=study_name + "-recovery", seed=run.config.seed or 0)


def _with_distill(policy: Policy, rates: dict[str, float]) -> Policy:
    layers = {n: replace(a, distill=rates.get(n, a.distill)) for n, a in policy.layers.items()}
    return Policy(layers, policy.fingerprint, policy.model_name, dict(policy.meta))


def _float_fields() -> set[str]:
    from onnxamc.actions import BY_NAME

    return {f.name for name in (*FLOAT_ACTIONS, "distill") for f in BY_NAME[name].fields}


def _at_least_as_good(a: Metrics, b: Metrics) -> bool:
    return (a.quality_drop or 0.0) <= (b.quality_drop or 0.0)


def recovery_notes(recovered: Recovered) -> list[str]:
    """Lines for the report and the console on what the recovery chose and did."""
    notes = []
    r = recovered.recovery_search
    if r is not None:
        by_lr = ", ".join(f"{lr:g}: {100 * acc:.2f}%" for lr, acc in r.by_lr.items())
        chosen = {n: v for n, v in r.rates.items() if v > 0}
        notes.append(f"Recovery settings: {len(r.study.trials)} trainings of {r.steps} steps "
                     f"scored on held-out training data (logits only, by learning rate: "
                     f"{by_lr}); chosen: learning rate {r.lr:g}"
                     + (", feature distillation " + ", ".join(f"{n}={v:g}" for n, v in
                                                              chosen.items()) if chosen else "")
                     + f" ({100 * r.best_val_accuracy:.2f}%).")
    t = recovered.train_report
    if t is not None:
        notes.append(f"Recovery training: {t.steps} steps in {t.seconds:.0f} s "
                     f"({t.stopped_because}); kept: {recovered.kept}.")
    return notes
