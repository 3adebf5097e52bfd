"""Building and scoring one candidate of a search, in stages that may stop early.

`TrialEvaluator` is the callable the search (search/study.py) calls with a policy and a
checkpoint: it builds the compressed model, times it beside the original, shows the
checkpoint the latency, then scores quality on growing slices of the evaluation data,
showing the checkpoint each (search/fidelity.py decides whether to go on). When a
latency alone may end the trial and the policy prunes, the first build skips the
least-squares reconstruction (latency does not depend on weight values): the
reconstruction is paid only by candidates that survive their latency. Models built in
full are kept (a few, by size) for the final re-measurement.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import onnx

from onnxamc.errors import EvaluationError, OnnxAmcError
from onnxamc.evaluate import Candidate, Evaluator
from onnxamc.metrics import Metrics
from onnxamc.policy import Policy
from onnxamc.profiling import phase
from onnxamc.runtime.device_lock import compute_step
from onnxamc.search.fidelity import REDUCTION, Checkpoint, slices
from onnxamc.workflows.run import Run

CACHE_BYTES = 256 << 20  # built models kept for the final re-measurement
QUICK_CALIBRATION = 8  # samples calibrating a build whose quality is not scored
LATENCY_FIELDS = ("latency", "latency_ratio", "latency_interval", "latency_flags", "busy",
                  "reference_latency", "energy", "device", "supported", "latency_error")


def build_candidate(run: Run, policy: Policy, quick: bool = False) -> onnx.ModelProto:
    """The compressed model of one candidate (the original itself for the identity
    policy); what goes wrong in onnxruntime or the quantizer on this candidate becomes
    an EvaluationError (the trial fails, the search goes on). `quick`: no
    reconstruction and a few calibration samples: the structure, for timing only."""
    if policy.is_identity:
        return run.model
    try:
        if quick:
            return run.apply(policy, reconstruct=False, check=False,
                             calibration_samples=QUICK_CALIBRATION)
        return run.apply(policy, check=False)
    except OnnxAmcError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise EvaluationError(f"{type(exc).__name__}: {first}") from exc


def policy_key(policy: Policy) -> str:
    """The policy's layer actions as canonical JSON (what makes two policies equal)."""
    return json.dumps(policy.to_dict()["layers"], sort_keys=True)


class ModelCache:
    """The last models built in full, up to CACHE_BYTES, by policy."""

    def __init__(self, limit: int = CACHE_BYTES):
        self.limit, self.models = limit, OrderedDict()

    def get(self, key: str) -> onnx.ModelProto | None:
        model = self.models.get(key)
        if model is not None:
            self.models.move_to_end(key)
        return model

    def put(self, key: str, model: onnx.ModelProto) -> None:
        self.models[key] = model
        self.models.move_to_end(key)
        while len(self.models) > 1 and sum(m.ByteSize() for m in self.models.values()) > self.limit:
            self.models.popitem(last=False)


class TrialEvaluator:
    """policy, checkpoint → Metrics, in stages (see the module docstring)."""

    def __init__(self, run: Run, evaluator: Evaluator, cache: ModelCache | None = None):
        self.run, self.evaluator = run, evaluator
        self.cache = cache or ModelCache()

    def __call__(self, policy: Policy, checkpoint: Checkpoint | None = None) -> Metrics:
        checkpoint = checkpoint or Checkpoint(None, None)
        key = policy_key(policy)
        quick = checkpoint.stops_on_latency and self.run.config.reconstruct and \
            any(a.keep < 1 for a in policy.layers.values())
        with compute_step(), phase("build"):  # never beside another worker's measurement
            model = build_candidate(self.run, policy, quick=quick)
        with compute_step():
            candidate = self.evaluator.candidate(model)
        self.evaluator.time([candidate], remeasure=1)
        checkpoint.latency(candidate.metrics)
        if quick:
            candidate = self._full(policy, candidate)
        self.cache.put(key, candidate.model)
        return self._quality(candidate, checkpoint)

    def _full(self, policy: Policy, timed: Candidate) -> Candidate:
        """The candidate built in full, with the latency its quick build measured."""
        with compute_step(), phase("build"):
            model = build_candidate(self.run, policy)
        full = self.evaluator.candidate(model, prepare=False)
        for name in LATENCY_FIELDS:
            setattr(full.metrics, name, getattr(timed.metrics, name))
        return full

    def _quality(self, candidate: Candidate, checkpoint: Checkpoint) -> Metrics:
        reference = self.evaluator.reference_metrics
        if self.evaluator.data is not None:
            total = self.evaluator.data.size  # None: a stream of unknown length
            sizes = slices(total) if total and self.evaluator.partial_quality else [total]
            for i, samples in enumerate(sizes):
                final = i == len(sizes) - 1
                self.evaluator.quality_upto(candidate, None if final else samples)
                checkpoint.quality(candidate.metrics, REDUCTION ** i,
                                   candidate.metrics.extra.get("quality_samples", samples or 0),
                                   final=final)
        ratio = candidate.metrics.latency_ratio
        candidate.metrics.relate_to(reference)
        if ratio is not None:  # exact (the original) or measured: as the timing gave it
            candidate.metrics.latency_ratio = ratio
        return candidate.metrics

    def model_for(self, policy: Policy) -> onnx.ModelProto:
        """The full model of a policy: kept from its trial, else built again."""
        model = self.cache.get(policy_key(policy))
        if model is None:
            with phase("build"):
                model = build_candidate(self.run, policy)
        return model
