"""The evaluator: Metrics of candidate models against one reference model, on one data
set and one target.

Quality runs on this host with onnxruntime CPU, batch by batch (onnxamc.scoring), scored
by a named metric (onnxamc.quality: a built-in, the default chosen from the labels and
the outputs' shapes, or the user's function) against labels or the reference's outputs;
latency runs on the Target
(onnxruntime or TVM, local or remote), always side by side with the reference, so every
ratio is measured in one run and carries its bootstrap interval. A model the target's
runtime cannot run gets no latency, `supported=False` and a ratio of infinity, which
the search scores as infeasible.

What does not change between candidates (the truth of each batch, the reference's
static metrics, its prepared runner) is computed once; each candidate gets one
onnxruntime session, used for its latency and its quality alike when the target is this
machine's CPU. The reference model itself is never timed against itself: its ratio is 1
by construction. A search scores candidates in stages (`candidate`, `time`,
`quality_upto`) so that it can stop early; `evaluate` and `compare` do all of it at once.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import onnx

from onnxamc.data import Data, random_data
from onnxamc.errors import UnsupportedOnTargetError
from onnxamc.graph.context import ModelContext
from onnxamc.graph.size import bits_per_weight, weight_storage
from onnxamc.metrics import Metrics
from onnxamc.profiling import phase
from onnxamc.quality import Quality, Score, resolve_quality
from onnxamc.runtime.energy import energy_of
from onnxamc.runtime.latency import RatioInterval
from onnxamc.runtime.measure import Prepared, TargetMeter, Timing
from onnxamc.runtime.target import Target, load_target
from onnxamc.scoring import Progress, QualityScorer, output_specs

ENERGY_SECONDS = 0.5
MAX_SPREAD = 0.05  # a ratio's interval wider than ±5% is measured again, then flagged
UNCERTAIN, BUSY = "uncertain", "busy"


@dataclass
class Candidate:
    """One model being evaluated: its metrics so far, its prepared runner and session,
    and how far its quality has been scored (it grows over slices of the data)."""

    model: onnx.ModelProto
    metrics: Metrics
    prepared: Prepared | None = None
    session: object | None = None
    progress: Progress | None = None  # its quality scoring so far


class Evaluator:
    """Scores models against `reference`; `data` None measures latency and size only
    (on random inputs of the model's shapes). `quality` is a Quality, a metric name or
    spec, or a function (onnxamc.quality.choose); None chooses the default."""

    def __init__(self, reference: ModelContext | onnx.ModelProto, data: Data | None,
                 target: Target | str | None = None, *, quality: Quality | Any = None,
                 runs: int = 50, warmup: int = 10, measure_energy: bool = True,
                 max_spread: float = MAX_SPREAD, remeasure: int = 2,
                 allow_emulated: bool = True):
        self.reference = reference if isinstance(reference, ModelContext) \
            else ModelContext(reference)
        self.data = data
        self.target = load_target(target)
        labels = data.peek()[1] if data is not None else None
        self.quality = resolve_quality(quality if data is not None else None,
                                       output_specs(self.reference.model), labels)
        self.runs, self.warmup, self.measure_energy = runs, warmup, measure_energy
        self.max_spread, self.remeasure = max_spread, remeasure
        self.deadline: float | None = None  # time.monotonic(): no re-measuring after it
        # a search refuses latency measured under emulation (allow_emulated=False)
        self.meter = TargetMeter(self.target, allow_emulated)
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
        candidate = self.candidate(model, prepare=measure_latency)
        if measure_latency:
            self.time([candidate])
        self.quality_upto(candidate, None)
        return candidate.metrics.relate_to(self.reference_metrics)

    def score(self, model: onnx.ModelProto) -> Metrics:
        """Static metrics and quality, no latency."""
        return self.evaluate(model, measure_latency=False)

    def candidate(self, model: onnx.ModelProto, prepare: bool = True) -> Candidate:
        """Static metrics and, with `prepare`, the target's runner (one session)."""
        with phase("static metrics"):
            metrics = self.static_metrics(model)
        candidate = Candidate(model, metrics)
        if prepare:
            with phase("session"):
                candidate.prepared = self._prepare(model, metrics)
            if candidate.prepared is not None:
                candidate.session = candidate.prepared.session
        return candidate

    @property
    def partial_quality(self) -> bool:
        """Whether quality on the leading samples can be scored (see quality_upto)."""
        return self.scorer is not None and self.scorer.partial

    def quality_upto(self, candidate: Candidate, samples: int | None) -> Metrics:
        """Quality on (at least) the first `samples` of the data, whole batches (all with
        None), reading only the batches not read yet; returns the candidate's metrics,
        related to the reference's quality on the same batches."""
        if self.data is None:
            return candidate.metrics
        if samples is not None and not self.partial_quality:
            return candidate.metrics  # a user's metric scores everything, once
        reference = self.reference_metrics
        with phase("quality"):
            if candidate.progress is None:
                candidate.progress = self.scorer.start(
                    candidate.model, session=candidate.session)
            progress = candidate.progress
            score = self.scorer.score(candidate.model, session=progress.session) \
                if self.quality.runs_session else self.scorer.advance(progress, samples)
            metrics = candidate.metrics
            self._set_quality(metrics, score)
            whole = samples is None or progress.done or \
                score.samples >= (self.data.size or 0) > 0
            base = reference.quality if whole else self.scorer.reference_at(progress.read)
            metrics.quality_drop = metrics.drop_from(base)
            metrics.extra["quality_samples"] = score.samples
        return metrics
        return metrics

    # --- several side by side ---------------------------------------------------------
    def compare(self, models: Sequence[onnx.ModelProto], runs: int | None = None) -> list[Metrics]:
        """[reference, *models] measured side by side; ratios to the reference."""
        candidates = [self.candidate(m) for m in models]
        for c in candidates:
            self.quality_upto(c, None)
        self.time(candidates, runs=runs)
        reference = self.reference_metrics
        reference.relate_to(reference)
        return [reference] + [c.metrics for c in candidates]

    def time(self, candidates: Sequence[Candidate], runs: int | None = None,
             remeasure: int | None = None) -> None:
        """Latency of the candidates interleaved with the reference; every ratio with its
        interval. An interval wider than `max_spread` is measured again (more rounds),
        and a measurement other processes disturbed is taken again from the start, up
        to `remeasure` times in all and not past the deadline; then flagged uncertain,
        or busy."""
        timed = [c for c in candidates if c.prepared is not None and c.model is not
                 self.reference.model]
        if timed or self.reference_metrics.latency is None:  # bench of one model: itself
            self._time_measured(timed, runs, remeasure)
        for c in candidates:
            if c.model is self.reference.model:
                self._as_reference(c)

    def _time_measured(self, timed: Sequence[Candidate], runs: int | None,
                       remeasure: int | None) -> None:
        runners = [self._reference_prepared] + [c.prepared for c in timed]
        with phase("latency"):
            timing = self.meter.timing(runners, self.feed, self.warmup, runs or self.runs)
            tries = self.remeasure if remeasure is None else remeasure
            while tries > 0 and not self._past_deadline():
                if timing.contended:  # rounds others disturbed are not kept
                    timing = self.meter.timing(runners, self.feed, self.warmup,
                                               runs or self.runs)
                elif self._too_wide(timing):
                    timing = timing.extended(self.meter.timing(runners, self.feed, 1,
                                                               runs or self.runs))
                else:
                    break
                tries -= 1
        self._record(timing, timed)

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

    def _too_wide(self, timing: Timing) -> bool:
        return any(i.spread > self.max_spread for i in timing.intervals()[1:])

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _record(self, timing: Timing, timed: Sequence[Candidate]) -> None:
        ref_stats, *stats = timing.stats
        intervals = timing.intervals()[1:]
        reference = self.reference_metrics
        reference.latency, reference.device = ref_stats, self.meter.device_info
        reference.emulated = self.meter.emulated
        reference.latency_interval = RatioInterval.exact().to_dict()
        if reference.energy is None:
            reference.energy = self._energy(self._reference_prepared, reference)
        busy = timing.busy.to_dict() if timing.busy is not None else None
        for c, latency, interval in zip(timed, stats, intervals):
            m = c.metrics
            m.latency, m.device, m.busy = latency, self.meter.device_info, busy
            m.emulated = self.meter.emulated  # the label travels with the numbers
            m.energy = self._energy(c.prepared, m)
            m.latency_interval = interval.to_dict()
            m.latency_flags = ([UNCERTAIN] if interval.spread > self.max_spread else []) + \
                ([BUSY] if timing.contended else [])
            m.relate_to(reference)

    def _as_reference(self, candidate: Candidate) -> None:
        """The unchanged model: its ratio is 1 by construction, never measured."""
        m, reference = candidate.metrics, self.reference_metrics
        m.latency, m.device, m.emulated = reference.latency, reference.device, reference.emulated
        m.latency_interval = RatioInterval.exact().to_dict()
        m.latency_flags = []
        m.relate_to(reference)
        m.latency_ratio = 1.0

    def _prepare(self, model, metrics: Metrics) -> Prepared | None:
        if model is self.reference.model:
            return self._reference_prepared
        try:
            return self.meter.prepare(model, self.feed)
        except UnsupportedOnTargetError as exc:
            metrics.supported, metrics.latency_error = False, str(exc)
            metrics.latency_ratio = math.inf
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
