"""Quality of models on data read batch by batch: what the Evaluator's quality side runs.

A model runs on the evaluation data one batch at a time (onnxruntime CPU, this host),
and each batch's outputs go to the metric's tally with the batch's truth, so no model's
outputs over the whole set are ever held (unless a user's metric asks for them). The
truth of each batch (labels, or what the metric keeps of the original's outputs) is
computed once and kept up to TRUTH_CACHE_BYTES; past that, the original runs again
beside each candidate on the batches that did not fit, so memory stays bounded whatever
the size of the data. Streamed data must give the same samples in the same order on
every pass.

A search scores a candidate in stages (multi-fidelity, search/fidelity.py): `start`
opens a candidate's `Progress`, `advance` reads batches until a sample count is reached
and gives the score so far, and `reference_at` the original's score on the same leading
batches (recorded while the original is scored in full), so that a drop on a slice is
measured against the original on that slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import onnx

from onnxamc.errors import EvaluationError
from onnxamc.quality import OutputSpec, Quality, Score, finite
from onnxamc.quality.base import USER, Tally
from onnxamc.runtime import make_session
from onnxamc.runtime.device_lock import compute_step

EVAL_BATCH = 256
TRUTH_CACHE_BYTES = 256 * 2**20


@dataclass
class Progress:
    """One model's scoring so far: where in the data it stands and its tally."""

    session: Any
    tally: Tally
    batches: Iterator | None = None  # the data's (feed, labels) batches not read yet
    read: int = 0  # batches read
    samples: int = 0
    done: bool = False


class QualityScorer:
    def __init__(self, reference: onnx.ModelProto, data, quality: Quality, threads: int = 1,
                 batch: int = EVAL_BATCH):
        self.reference, self.data, self.quality = reference, data, quality
        self.threads, self.batch = threads, model_batch(reference) or batch
        self.truths: list[Any] = []
        self.cached_bytes, self.caching = 0, True
        self._reference_session = None
        self.reference_values: list[float] = []  # the original's score after each batch

    @property
    def partial(self) -> bool:
        """Whether a score on the leading batches means anything: built-in metrics (a
        user's function is called once, on everything)."""
        return not self.quality.runs_session and self.quality.against != USER

    def score(self, model: onnx.ModelProto, is_reference: bool = False,
              session: Any = None) -> Score:
        """The metric of `model` over the whole data (its truths from the reference)."""
        session = session or make_session(model, self.threads)
        if self.quality.runs_session:
            value = self.quality.score_session(session, Batches(self.data, self.batch))
            return self._checked(Score(value, {}, self.data.size or 0))
        return self.advance(self.start(model, session), None, is_reference)

    def start(self, model: onnx.ModelProto, session: Any = None) -> Progress:
        return Progress(session or make_session(model, self.threads), self.quality.start())

    def advance(self, progress: Progress, upto: int | None,
                is_reference: bool = False) -> Score:
        """Reads batches until `upto` samples are scored (None: all of them); the score
        on everything read so far."""
        if progress.batches is None and not progress.done:
            progress.batches = iter(self.data.labelled_batches(self.batch))
        record = is_reference and self.partial
        while not progress.done and (upto is None or progress.samples < upto):
            batch = next(progress.batches, None)
            if batch is None:
                progress.done, progress.batches = True, None
                break
            feed, labels = batch
            with compute_step():  # another worker's measurement has the machine to itself
                outputs = progress.session.run(None, feed)
            progress.tally.add(outputs, self._truth(progress.read, feed, labels,
                                                    outputs if is_reference else None))
            progress.read += 1
            progress.samples += len(outputs[0]) if outputs else 0
            if record and progress.read > len(self.reference_values):
                self.reference_values.append(progress.tally.value())
        return self._checked(Score(progress.tally.value(), progress.tally.per_output(),
                                   progress.samples))

    def reference_at(self, batches: int) -> float | None:
        """The original's score on the first `batches` batches (once it was scored)."""
        if 0 < batches <= len(self.reference_values):
            return self.reference_values[batches - 1]
        return None

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


def model_batch(model: onnx.ModelProto) -> int | None:
    """The batch size a model with a fixed batch dimension takes (None: dynamic)."""
    from onnxamc.data import fixed_batch
    from onnxamc.graph.model import model_inputs

    return fixed_batch(model_inputs(model))


def nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    return 64
