"""Metrics of one compressed model: accuracy, latency, size, MACs, params.

Accuracy is top-1 against labels; where the data has none, it is fidelity: top-1
agreement with the reference (original) model's outputs. Accuracy runs on this host with
onnxruntime CPU; latency runs on the Target (onnxruntime or TVM, local or remote), always
side by side with the reference, and is reported as a ratio too. A model the target's
runtime cannot run gets no latency, `supported: False` and a ratio of infinity, which the
search scores as infeasible. Energy is labelled measured or estimated.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import onnx

from onnxamc.data import Dataset
from onnxamc.graph import analyze, serialized_size
from onnxamc.graph.size import bits_per_weight, weight_storage
from onnxamc.errors import UnsupportedOnTargetError
from onnxamc.runtime import DEFAULT_THREADS, LatencyStats, make_session, run_batches
from onnxamc.runtime.energy import energy_of
from onnxamc.runtime.measure import Prepared, TargetMeter
from onnxamc.runtime.target import Target, load_target

EVAL_BATCH = 256


@dataclass
class Metrics:
    accuracy: float | None
    accuracy_kind: str  # "top1" (labels) or "fidelity" (agreement with the original)
    size_bytes: int
    macs: int
    params: int
    size_zipped_bytes: int | None = None  # zlib level 6: what zeros (sparsity) save on disk
    latency: LatencyStats | None = None
    latency_ratio: float | None = None  # median / reference median, same run
    extra: dict = field(default_factory=dict)
    bits_per_weight: float | None = None  # stored weight bits (scales, codebooks too) / weights
    layer_bits: dict = field(default_factory=dict)  # the same, per layer

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "accuracy_kind": self.accuracy_kind,
            "size_bytes": self.size_bytes,
            "size_zipped_bytes": self.size_zipped_bytes,
            "macs": self.macs,
            "params": self.params,
            "latency": self.latency.to_dict() if self.latency else None,
            "latency_ratio": self.latency_ratio,
            "bits_per_weight": self.bits_per_weight,
            "layer_bits": self.layer_bits,
            **self.extra,
        }


def top1(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Share of samples whose arg-max over the last axis equals the target class."""
    predicted = outputs.reshape(len(outputs), -1).argmax(axis=1)
    return float(np.mean(predicted == targets))


def static_metrics(model: onnx.ModelProto) -> tuple[int, int, int, int]:
    """Size on disk, MACs, params, zipped size."""
    info = analyze(model)
    zipped = len(zlib.compress(model.SerializeToString(), 6))
    return serialized_size(model), info.macs, info.params, zipped


def with_storage(metrics: Metrics, model: onnx.ModelProto) -> Metrics:
    """Fill in the effective bits per weight, of the model and of each layer."""
    storage = weight_storage(model)
    metrics.bits_per_weight = bits_per_weight(storage)
    metrics.layer_bits = {s.name: round(s.bits_per_weight, 3) for s in storage}
    return metrics


class Evaluator:
    """Evaluates candidate models against one reference model on one dataset.

    The reference outputs and session are computed once; each candidate is scored on
    the data, then timed interleaved with the reference so the ratio is honest.
    """

    def __init__(self, reference: onnx.ModelProto, data: Dataset,
                 threads: int = DEFAULT_THREADS, latency_runs: int = 50,
                 latency_warmup: int = 10, target: Target | str | None = None,
                 allow_emulated: bool = False):
        self.target = load_target(target, threads if target is None else None)
        self.reference = reference
        self.data = data
        self.threads = threads
        self.latency_runs = latency_runs
        self.latency_warmup = latency_warmup
        self.reference_session = make_session(reference, threads)
        self.reference_outputs = self.predict(self.reference_session)
        if data.labels is not None:
            self.targets, self.accuracy_kind = data.labels, "top1"
        else:
            self.targets = self.reference_outputs.reshape(len(data), -1).argmax(axis=1)
            self.accuracy_kind = "fidelity"
        self.reference_accuracy = top1(self.reference_outputs, self.targets)
        # a search never optimises on latency measured under emulation unless told to
        self.meter, self.feed = TargetMeter(self.target, allow_emulated), data.one()
        self.reference_prepared = self.meter.prepare(reference, self.feed)

    def predict(self, session) -> np.ndarray:
        return run_batches(session, self.data.batches(EVAL_BATCH))

    def evaluate(self, model: onnx.ModelProto, measure_latency: bool = True) -> Metrics:
        session = make_session(model, self.threads)
        accuracy = top1(self.predict(session), self.targets)
        metrics = with_storage(Metrics(accuracy, self.accuracy_kind, *static_metrics(model)), model)
        if measure_latency:
            prepared = prepare_or_mark(self.meter, model, self.feed, metrics)
            if prepared is not None:
                ref, cand = self.meter.time([self.reference_prepared, prepared], self.feed,
                                            self.latency_warmup, self.latency_runs)
                metrics.latency = cand
                metrics.latency_ratio = cand.median_ms / ref.median_ms
                metrics.extra["reference_latency"] = ref.to_dict()
                metrics.extra["energy"] = energy(prepared, self.target, metrics).to_dict()
                if self.meter.emulated:
                    metrics.extra["emulated"] = self.meter.emulated
        metrics.extra["accuracy_drop"] = self.reference_accuracy - accuracy
        return metrics


def prepare_or_mark(meter: TargetMeter, model: onnx.ModelProto, feed: dict,
                    metrics: Metrics) -> Prepared | None:
    """The model prepared for the target, or None with the reason recorded in metrics."""
    metrics.extra["target"] = meter.target.name
    try:
        return meter.prepare(model, feed)
    except UnsupportedOnTargetError as exc:
        metrics.latency_ratio = math.inf
        metrics.extra.update(supported=False, latency_error=str(exc))
        return None


def energy(prepared: Prepared, target: Target, metrics: Metrics):
    """Measured by a hardware counter around local runs where one is readable, else
    estimated from MACs and weight bytes; labelled either way."""
    return energy_of(prepared.run, target.compute_device, metrics.macs, metrics.size_bytes,
                     seconds=0.5)


def compare(models: Sequence[onnx.ModelProto], data: Dataset | None,
            threads: int = DEFAULT_THREADS, runs: int = 100, warmup: int = 10,
            feed: dict[str, np.ndarray] | None = None, *,
            target: Target | str | None = None) -> list[Metrics]:
    """Metrics of several models side by side; ratios are to the first model, and the
    latency runs of all models are interleaved (on a board: alternating blocks)."""
    target = load_target(target, threads if target is None else None)
    sessions = [make_session(m, threads) for m in models]
    results: list[Metrics] = []
    targets, kind = None, "top1"
    if data is not None:
        first = run_batches(sessions[0], data.batches(EVAL_BATCH))
        if data.labels is not None:
            targets = data.labels
        else:
            targets, kind = first.reshape(len(data), -1).argmax(axis=1), "fidelity"
    for model, session in zip(models, sessions):
        accuracy = None
        if targets is not None:
            accuracy = top1(run_batches(session, data.batches(EVAL_BATCH)), targets)
        results.append(with_storage(Metrics(accuracy, kind, *static_metrics(model)), model))
    feed = feed if feed is not None else data.one()
    meter = TargetMeter(target)
    prepared = [prepare_or_mark(meter, m, feed, r) for m, r in zip(models, results)]
    timed = [i for i, p in enumerate(prepared) if p is not None]
    stats = meter.time([prepared[i] for i in timed], feed, warmup, runs) if timed else []
    base = stats[0].median_ms if timed and timed[0] == 0 else math.nan
    for i, latency in zip(timed, stats):
        results[i].latency = latency
        results[i].latency_ratio = latency.median_ms / base
        results[i].extra["energy"] = energy(prepared[i], target, results[i]).to_dict()
        if meter.device_info:
            results[i].extra["device"] = meter.device_info
        if meter.emulated:  # the label travels with the numbers: they mean nothing
            results[i].extra["emulated"] = meter.emulated
    return results
