"""The evaluator: Metrics of candidate models against one reference model, on one data
set and one target.

Quality runs on this host with onnxruntime CPU, batch by batch (onnxamc.scoring), scored
by a named metric (onnxamc.quality: a built-in, the default chosen from the labels and
the outputs' shapes, or the user's function) against labels or the reference's outputs;
latency runs on the Target
(onnxruntime or TVM, local or remote), always side by side with the reference, so every
ratio is measured in one run. A model the target's runtime cannot run gets no latency,
`supported=False` and a ratio of infinity, which the search scores as infeasible.
What does not change between candidates (the truth of each batch, the reference's
static metrics, its prepared runner) is computed once.
"""

from __future__ import annotations

import zlib
from functools import cached_property
from typing import Any, Sequence

import onnx

from onnxamc.data import Data, random_data
from onnxamc.errors import UnsupportedOnTargetError
from onnxamc.graph.context import ModelContext
from onnxamc.graph.size import bits_per_weight, weight_storage
from onnxamc.metrics import Metrics
from onnxamc.quality import Quality, Score, resolve_quality
from onnxamc.runtime.energy import energy_of
from onnxamc.runtime.measure import Prepared, TargetMeter
from onnxamc.runtime.target import Target, load_target
from onnxamc.scoring import QualityScorer, output_specs

ENERGY_SECONDS = 0.5


class Evaluator:
    """Scores models against `reference`; `data` None measures latency and size only
    (on random inputs of the model's shapes). `quality` is a Quality, a metric name or
    spec, or a function (onnxamc.quality.choose); None chooses the default."""

    def __init__(self, reference: ModelContext | onnx.ModelProto, data: Data | None,
                 target: Target | str | None = None, *, quality: Quality | Any = None,
                 runs: int = 50, warmup: int = 10, measure_energy: bool = True):
        self.reference = reference if isinstance(reference, ModelContext) \
            else ModelContext(reference)
        self.data = data
        self.target = load_target(target)
        labels = data.peek()[1] if data is not None else None
        self.quality = resolve_quality(quality if data is not None else None,
                                       output_specs(self.reference.model), labels)
        self.runs, self.warmup, self.measure_energy = runs, warmup, measure_energy
        self.meter = TargetMeter(self.target)
        self.feed = (data if data is not None else random_data(self.reference.inputs, 1)).one()
        self.scorer = None if data is None else \
            QualityScorer(self.reference.model, data, self.quality, self.target.threads)

    # --- what is computed once --------------------------------------------------------
    @cached_property
    def reference_metrics(self) -> Metrics:
        metrics = self.static_metrics(self.reference.model)
        if self.data is not None:
            self._set_quality(metrics, self.scorer.score(self.reference.model, is_reference=True))
        return metrics

    @cached_property
    def _reference_prepared(self) -> Prepared:
        return self.meter.prepare(self.reference.model, self.feed)

    # --- one candidate ----------------------------------------------------------------
    def evaluate(self, model: onnx.ModelProto, measure_latency: bool = True) -> Metrics:
        """The candidate's metrics, its latency timed interleaved with the reference."""
        metrics = self.score(model)
        if measure_latency:
            self._time([model], [metrics], with_reference=True)
        return metrics.relate_to(self.reference_metrics)

    def score(self, model: onnx.ModelProto) -> Metrics:
        """Static metrics and quality, no latency."""
        metrics = self.static_metrics(model)
        if self.data is not None:
            self._set_quality(metrics, self.scorer.score(model))
        return metrics

    # --- several side by side -------------------------------------------------------
    def compare(self, models: Sequence[onnx.ModelProto], runs: int | None = None) -> list[Metrics]:
        """[reference, *models] measured side by side; ratios to the reference."""
        results = [self.score(m) for m in models]
        reference = self.reference_metrics
        self._time(list(models), results, with_reference=True, runs=runs)
        reference.relate_to(reference)
        return [reference] + [m.relate_to(reference) for m in results]

    # --- parts ------------------------------------------------------------------------
    def static_metrics(self, model: onnx.ModelProto) -> Metrics:
        context = self.reference if model is self.reference.model else ModelContext(model)
        storage = weight_storage(model)
        return Metrics(metric=self.quality.name, higher_is_better=self.quality.higher_is_better,
                       metric_label=self.quality.headline(),
                       size_bytes=model.ByteSize(),
                       size_zipped_bytes=len(zlib.compress(model.SerializeToString(), 6)),
                       macs=context.info.macs, params=context.info.params,
                       bits_per_weight=bits_per_weight(storage),
                       layer_bits={s.name: round(s.bits_per_weight, 3) for s in storage},
                       target=self.target.name)

    def _set_quality(self, metrics: Metrics, score: Score) -> None:
        metrics.quality, metrics.per_output = score.value, score.per_output
        metrics.error = self.quality.error(score.value)
        metrics.data = self.data.name

    def _time(self, models, results: list[Metrics], with_reference: bool,
              runs: int | None = None) -> None:
        """Latency of `models` (and the reference first), interleaved on the target."""
        prepared = [self._prepare(m, r) for m, r in zip(models, results)]
        timed = [i for i, p in enumerate(prepared) if p is not None]
        runners = ([self._reference_prepared] if with_reference else []) + \
            [prepared[i] for i in timed]
        stats = self.meter.time(runners, self.feed, self.warmup, runs or self.runs)
        if with_reference:
            ref_stats, stats = stats[0], stats[1:]
            self.reference_metrics.latency = ref_stats
            self.reference_metrics.device = self.meter.device_info
            if self.reference_metrics.energy is None:
                self.reference_metrics.energy = self._energy(self._reference_prepared,
                                                             self.reference_metrics)
        for i, latency in zip(timed, stats):
            results[i].latency = latency
            results[i].energy = self._energy(prepared[i], results[i])
            results[i].device = self.meter.device_info

    def _prepare(self, model, metrics: Metrics) -> Prepared | None:
        try:
            return self.meter.prepare(model, self.feed)
        except UnsupportedOnTargetError as exc:
            metrics.supported, metrics.latency_error = False, str(exc)
            return None

    def _energy(self, prepared: Prepared, metrics: Metrics) -> dict:
        """Measured by a hardware counter around local runs where one is readable, else
        estimated from MACs and weight bytes; labelled either way."""
        run = prepared.run if self.measure_energy else None
        return energy_of(run, self.target.compute_device, metrics.macs, metrics.size_bytes,
                         seconds=ENERGY_SECONDS).to_dict()


def compare(models: Sequence[onnx.ModelProto], data: Data | None,
            target: Target | str | None = None, runs: int = 100,
            warmup: int = 10) -> list[Metrics]:
    """Metrics of several models side by side, ratios to the first (a convenience over
    Evaluator for benchmarks and tests)."""
    evaluator = Evaluator(models[0], data, target, runs=runs, warmup=warmup)
    return evaluator.compare(list(models[1:]))
