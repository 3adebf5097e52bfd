"""Searching the per-layer feature-distillation rates (the policy's `distill` action).

Which layers' outputs are worth matching to the original's only shows after training,
so the rates are not searched with the latency search (whose trials do not train) but
after it, on the chosen compressed model: each trial trains the same number of steps
from the same start, on the same batches, with its own per-layer rates, and is scored on
held-out training data (never on the evaluation data the final model is reported on).
The study lives in the search's storage, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

import onnx
import optuna

from onnxamc.data import Dataset
from onnxamc.recover.train import TrainConfig, train
from onnxamc.search.study import recover_interrupted

DISTILL_CHOICES = (0.0, 0.1, 0.3, 1.0)


@dataclass
class DistillSearch:
    rates: dict[str, float]  # layer -> weight of its output's MSE to the original's
    study: optuna.Study
    best_val_accuracy: float
    logits_only_val_accuracy: float | None  # the first trial: every rate 0
    steps: int


def feature_tensors(student: onnx.ModelProto, teacher: onnx.ModelProto) -> dict[str, str]:
    """{layer: its output tensor} for the student's layers whose output the teacher
    computes too, with the same shape (pruning changes the shapes of the others), other
    than the model's outputs (the logits are distilled already)."""
    from onnxamc.graph import analyze, node_names

    layers = set(analyze(student).layer_names)
    shapes = [_shapes(m) for m in (student, teacher)]
    outputs = {o.name for o in student.graph.output}
    found = {}
    for name, node in zip(node_names(student), student.graph.node):
        tensor = node.output[0] if node.output else None
        if name in layers and tensor and tensor not in outputs and tensor in shapes[1] \
                and shapes[0].get(tensor) == shapes[1][tensor]:
            found[name] = tensor
    return found


def search_distill_rates(student: onnx.ModelProto, teacher: onnx.ModelProto,
                         layers: list[str], train_set: Dataset, val: Dataset,
                         config: TrainConfig, trials: int, steps: int,
                         storage: str | optuna.storages.BaseStorage, study_name: str,
                         seed: int = 0) -> DistillSearch:
    """Run (or continue) the study of per-layer rates over `layers` and return the best.
    `config` is the final training's (lr, logits distillation, QAT bits); each trial
    trains `steps` steps of it."""
    tensors = feature_tensors(student, teacher)
    layers = [l for l in layers if l in tensors]
    name = f"{study_name}-{_digest(student, layers, steps)}"
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, trials)),
        load_if_exists=True)
    if not study.trials:
        study.enqueue_trial({f"{l}:distill": 0.0 for l in layers})  # logits only: the baseline
    recover_interrupted(study)  # a trial cut off by a kill is queued again
    trial_config = replace(config, steps=steps, epochs=1.0, time_budget=None, progress=False,
                           patience=10 ** 9)

    def objective(trial: optuna.Trial) -> float:
        rates = {l: trial.suggest_categorical(f"{l}:distill", DISTILL_CHOICES) for l in layers}
        cfg = replace(trial_config, feature_weights={tensors[l]: r for l, r in rates.items()
                                                     if r > 0})
        _, report = train(student, train_set, cfg, val, teacher=teacher)
        return float(report.best_val_accuracy)

    done = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    if trials > done:
        study.optimize(objective, n_trials=trials - done, gc_after_trial=False)
    best = study.best_trial
    logits_only = [t.value for t in study.trials if t.value is not None
                   and not any(t.params.values())]
    return DistillSearch({l: float(best.params[f"{l}:distill"]) for l in layers}, study,
                         float(best.value), float(logits_only[0]) if logits_only else None,
                         steps)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                                for d in dims)
    return shapes


def _digest(student: onnx.ModelProto, layers: list[str], steps: int) -> str:
    """Names the study after what it tunes: the same compressed model, layers and steps."""
    shapes = sorted((i.name, tuple(i.dims)) for i in student.graph.initializer)
    text = json.dumps([shapes, layers, steps])
    return hashlib.sha1(text.encode()).hexdigest()[:8]
