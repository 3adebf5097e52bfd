"""Measuring models as they are: bench (several side by side) and sensitivity (one
action on one layer at a time)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Sequence

from onnxamc.errors import PolicyError
from onnxamc.graph.size import layer_bits_per_weight
from onnxamc.metrics import Metrics
from onnxamc.policy import LayerAction, Policy
from onnxamc.workflows.run import Run, load_context

BENCH_RUNS = 100


def bench(runs: Sequence[Run], with_data: bool = True, fgsm_epsilon: float | None = None,
          layer_table: bool | str | Path = False) -> list[Metrics]:
    """Metrics side by side, ratios to the first model, latency runs interleaved.

    `fgsm_epsilon` adds `robust_quality` (in `extra`): the quality on FGSM inputs crafted
    on the first model (a transfer attack, so all models face the same inputs; torch).
    `layer_table` (True or a JSON path) adds the per-layer table's latency prediction
    and its error against the measured latency."""
    first = runs[0]
    evaluator = first.evaluator(first.data if with_data else None)
    results = evaluator.compare([r.model for r in runs[1:]])
    if fgsm_epsilon is not None and with_data:
        _add_robustness(runs, results, evaluator, fgsm_epsilon)
    if layer_table:
        _add_layer_predictions(runs, results, first.target, layer_table)
    return results


def _add_robustness(runs, results, evaluator, epsilon: float) -> None:
    from onnxamc.evaluate import Evaluator
    from onnxamc.recover.robustness import fgsm_dataset
    from onnxamc.runtime import make_session, run_batches

    clean = runs[0].data.in_memory()  # the attack needs the inputs at hand
    attacked = fgsm_dataset(runs[0].model, clean, epsilon)
    if attacked.labels is None:  # fidelity: agreement with the first model on clean inputs
        scores = run_batches(make_session(runs[0].model), clean.batches(256))[0]
        attacked.labels = scores.reshape(len(scores), -1).argmax(axis=1)
    robust = Evaluator(runs[0].context, attacked, evaluator.target, quality="top1")
    for run, metrics in zip(runs, results):
        metrics.extra["robust_quality"] = robust.score(run.model).quality
        metrics.extra["fgsm_epsilon"] = epsilon


def _add_layer_predictions(runs, results, target, table_path) -> None:
    from onnxamc.runtime.layer_table import LayerTable

    table = LayerTable(target, None if table_path is True else table_path)
    scale = None  # measured / predicted on the first model: what the sum leaves out
    for run, metrics in zip(runs, results):
        if metrics.latency is None:
            continue
        prediction = table.predict(run.model)
        measured = metrics.latency.median_ms
        scale = scale or measured / prediction.total_ms
        metrics.extra["layer_table"] = {
            **prediction.to_dict(), "table": str(table.path),
            "error": prediction.error(measured),
            "calibrated_error": prediction.total_ms * scale / measured - 1.0}


def sensitivity(run: Run, actions: dict[str, dict[str, Any]],
                layers: Sequence[str] | None = None, progress: bool = False):
    """The quality drop when one layer alone takes each action (`actions`: label →
    LayerAction fields). Actions that do not fit a layer are recorded as None."""
    from onnxamc.search.sensitivity import SensitivityTable

    context = run.context
    checked = {label: LayerAction.from_dict(fields, f"action {label}")
               for label, fields in actions.items()}
    unknown = sorted(set(layers or ()) - set(context.layer_ops))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(context.layer_ops), 3, 0.6)
        raise PolicyError(f"not layers of this model: {', '.join(unknown)}"
                          + (f"; did you mean {', '.join(close)}?" if close else
                             f" (layers: {', '.join(context.layer_ops)})"))
    evaluator = run.evaluator()
    reference = evaluator.reference_metrics
    table = SensitivityTable(context.fingerprint, reference.quality, reference.metric,
                             dict(actions), meta={"eval_samples": len(run.select_data),
                                                  "calibration_method":
                                                      run.config.calibration_method})
    for layer in layers or context.info.layer_names:
        table.drops[layer], table.bits[layer] = {}, {}
        for label, action in checked.items():
            policy = Policy({layer: action}, context.fingerprint)
            try:
                policy.validate(context.layer_ops)
            except PolicyError:
                table.drops[layer][label] = table.bits[layer][label] = None
                continue
            compressed = run.apply(policy)
            drop = evaluator.evaluate(compressed, measure_latency=False).quality_drop
            table.drops[layer][label] = round(drop, 6)
            table.bits[layer][label] = round(layer_bits_per_weight(compressed, layer), 3)
            if progress:
                print(f"{layer:<32} {label:<18} drop {drop:+.4g}", flush=True)
    return table


__all__ = ["BENCH_RUNS", "bench", "load_context", "sensitivity"]
