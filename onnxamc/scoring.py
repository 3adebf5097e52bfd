"""Quality of models on data read batch by batch: what the Evaluator's quality side runs.

A model runs on the evaluation data one batch at a time (onnxruntime CPU, this host),
and each batch's outputs go to the metric's tally with the batch's truth, so no model's
outputs over the whole set are ever held (unless a user's metric asks for them). The
truth of each batch (labels, or what the metric keeps of the original's outputs) is
computed once and kept up to TRUTH_CACHE_BYTES; past that, the original runs again
beside each candidate on the batches that did not fit, so memory stays bounded whatever
the size of the data. Streamed data must give the same samples in the same order on
every pass.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import onnx

from onnxamc.errors import EvaluationError
from onnxamc.quality import OutputSpec, Quality, Score, finite
from onnxamc.runtime import make_session

EVAL_BATCH = 256
TRUTH_CACHE_BYTES = 256 * 2**20


class QualityScorer:
    def __init__(self, reference: onnx.ModelProto, data, quality: Quality, threads: int = 1,
                 batch: int = EVAL_BATCH):
        self.reference, self.data, self.quality = reference, data, quality
        self.threads, self.batch = threads, fixed_batch(reference) or batch
        self.truths: list[Any] = []
        self.cached_bytes, self.caching = 0, True
        self._reference_session = None

    def score(self, model: onnx.ModelProto, is_reference: bool = False) -> Score:
        """The metric of `model` over the whole data (its truths from the reference)."""
        session = make_session(model, self.threads)
        if self.quality.runs_session:
            value = self.quality.score_session(session, Batches(self.data, self.batch))
            return self._checked(Score(value, {}, self.data.size or 0))
        tally, samples = self.quality.start(), 0
        for number, (feed, labels) in enumerate(self.data.labelled_batches(self.batch)):
            outputs = session.run(None, feed)
            tally.add(outputs, self._truth(number, feed, labels,
                                           outputs if is_reference else None))
            samples += len(outputs[0]) if outputs else 0
        return self._checked(Score(tally.value(), tally.per_output(), samples))

    def _truth(self, number: int, feed, labels, own_outputs) -> Any:
        if number < len(self.truths):
            return self.truths[number]
        reference = None
        if self.quality.reads_reference:
            reference = own_outputs if own_outputs is not None else \
                self._reference().run(None, feed)
        truth = self.quality.truth(reference, labels)
        if self.caching and number == len(self.truths):
            size = nbytes(truth)
            if self.cached_bytes + size <= TRUTH_CACHE_BYTES:
                self.truths.append(truth)
                self.cached_bytes += size
            else:
                self.caching = False
        return truth

    def _reference(self):
        if self._reference_session is None:
            self._reference_session = make_session(self.reference, self.threads)
        return self._reference_session

    def _checked(self, score: Score) -> Score:
        if not finite(score.value):
            raise EvaluationError(f"{self.quality.label()} is {score.value}: the model's "
                                  "outputs are not finite numbers on this data")
        return score


class Batches:
    """The evaluation data as (feed dict, labels) batches, readable again (what a
    session metric is given as `data`)."""

    def __init__(self, data, size: int):
        self.data, self.size = data, size

    def __iter__(self) -> Iterator:
        return iter(self.data.labelled_batches(self.size))


def output_specs(model: onnx.ModelProto) -> list[OutputSpec]:
    """The model's outputs with their inferred shapes and producing ops."""
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    specs = []
    for index, value in enumerate(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        specs.append(OutputSpec(index, value.name, shape, producers.get(value.name)))
    return specs


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size a model with a fixed batch dimension takes (None: dynamic)."""
    from onnxamc.graph.model import model_inputs

    sizes = {s.shape[0] for s in model_inputs(model) if s.shape and s.shape[0]}
    return min(sizes) if sizes else None


def nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    return 64
