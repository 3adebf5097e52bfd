"""What every workflow shares: the model analysed once, its data and calibration, the
target, the evaluator, and applying a policy.

A `Run` is one model with one RunConfig. It loads each thing on first use and keeps it,
so a search that builds hundreds of candidates reads its model and calibration once
(streamed evaluation data is read again on each pass, never held).

Held-out scoring: with `validation_split` (a share of the data) or `select_data` (other
data), every choice is made on `select_data` and `held_out` is the data that chose
nothing, on which results are reported.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import onnx

from onnxamc.actions import apply_policy
from onnxamc.config import DEFAULT_CALIBRATION, RunConfig
from onnxamc.data import Data, Dataset, load_data
from onnxamc.errors import DataError, warn
from onnxamc.evaluate import Evaluator
from onnxamc.graph import load_model
from onnxamc.graph.checks import check_runnable
from onnxamc.graph.context import ModelContext
from onnxamc.models import bundled_model_path
from onnxamc.policy import Policy
from onnxamc.runtime.limits import onnxruntime_limits
from onnxamc.runtime.target import Target, load_target

CALIBRATION_BATCH = 32
ModelLike = str | Path | onnx.ModelProto | None


def load_context(model: ModelLike, input_shapes: dict[str, tuple[int, ...]] | None = None
                 ) -> ModelContext:
    """A checked model through the front door (graph/normalize.py, with the user's
    `input_shapes`), analysed lazily; None is the bundled ResNet-20."""
    if isinstance(model, ModelContext) and not input_shapes:
        return model
    if isinstance(model, ModelContext):
        model = model.model
    source = bundled_model_path() if model is None else model
    name = Path(source).name if isinstance(source, (str, Path)) else "model.onnx"
    return ModelContext(load_model(source, input_shapes), name)


def input_shapes_of(given: Any) -> dict[str, tuple[int, ...]] | None:
    """`input_shapes` as a dict: given so, or as the CLI's "NAME:D1,D2,..." strings."""
    if not given or isinstance(given, dict):
        return given or None
    from onnxamc.graph import parse_input_shapes

    return parse_input_shapes([given] if isinstance(given, str) else list(given))


class Run:
    def __init__(self, model: ModelLike | ModelContext, config: RunConfig | None = None):
        self.config = config or RunConfig()
        self.context = load_context(model, input_shapes_of(self.config.input_shapes))
        # a model this onnxruntime cannot load is one line now, not a traceback later
        check_runnable(self.context.model, onnxruntime_limits())

    @property
    def model(self) -> onnx.ModelProto:
        return self.context.model

    @cached_property
    def target(self) -> Target:
        return load_target(self.config.target, self.config.threads)

    def load(self, data: Any, limit: int | None = None, role: str = "data",
             in_memory: bool = False) -> Data:
        """Data checked against the model's inputs (a one-line DataError if it does not
        fit); streamed data is checked on its first batch now, the rest as it is read
        (`in_memory`: read `limit` samples into memory now)."""
        return load_data(data, self.context.inputs, limit=limit, role=role,
                         preprocess=self.config.preprocess, in_memory=in_memory)

    @cached_property
    def data(self) -> Data:
        """The evaluation data (`eval_samples` of it)."""
        return self.load(self.config.data, self.config.eval_samples)

    @cached_property
    def _parts(self) -> tuple[Data, Data | None]:
        if self.config.select_data is not None:
            return self.load(self.config.select_data, self.config.eval_samples,
                             "selection data"), self.data
        if self.config.validation_split is not None:
            return self.data.split(self.config.validation_split)
        return self.data, None

    @property
    def select_data(self) -> Data:
        """What every choice is made on: the data, or its selection part."""
        return self._parts[0]

    @property
    def held_out(self) -> Data | None:
        """The data that chose nothing (None without a held-out split)."""
        return self._parts[1]

    @cached_property
    def calibration(self) -> Dataset:
        """The calibration data, in memory (only the samples used are read): the user's
        `calibration`; without one, the data choices are made on (the best set we have)
        or, for the bundled Fashion-MNIST, its calibration subset."""
        given = self.config.calibration
        if given is None and not _is_fashion_mnist(self.config.data):
            given = self.select_data
        try:
            return self.load(DEFAULT_CALIBRATION if given is None else given,
                             self.config.calibration_samples, "calibration data", True)
        except DataError as exc:
            if given is not None:
                raise
            raise DataError(f"this needs calibration data that fits the model (--calibration); "
                            f"the default {DEFAULT_CALIBRATION} does not: {exc}") from None

    def calibration_feeds(self, samples: int | None = None):
        """Feed batches of the calibration data (loaded on the first call); with
        `samples`, of its first samples only."""
        return self.calibration.take(samples).batches(CALIBRATION_BATCH)

    def evaluator(self, data: Data | None | str = "default", **options) -> Evaluator:
        """An evaluator against the run's model, on the data choices are made on unless
        `data` is given, with the run's metric."""
        data = self.select_data if isinstance(data, str) and data == "default" else data
        options.setdefault("quality", self.config.metric)
        options.setdefault("runs", self.config.runs)
        options.setdefault("warmup", self.config.warmup)
        return Evaluator(self.context, data, self.target, **options)

    def apply(self, policy: Policy, reconstruct: bool | None = None,
              check: bool = True, calibration_samples: int | None = None) -> onnx.ModelProto:
        """The compressed model; pruned layers are refit on calibration data unless the
        config turns it off (or no calibration data fits: then it says so on stderr).
        With `check`, it passes runtime.check before it is returned (a search's candidates
        skip it: measuring them is the check). `calibration_samples` calibrates on the
        first samples only (a build that is only timed)."""
        from onnxamc.actions import check_policy

        check_policy(self.context, policy)
        reconstruct = self.config.reconstruct if reconstruct is None else reconstruct
        prunes = any(a.keep < 1 for a in policy.layers.values())
        if prunes and reconstruct and not self._has_calibration():
            warn("no calibration data fits the model: pruned layers are not refit "
                 "(accuracy may drop sharply; give --calibration)")
            reconstruct = False
        feeds = self.calibration_feeds if calibration_samples is None else \
            (lambda: self.calibration_feeds(calibration_samples))
        out = apply_policy(self.context, policy, feeds,
                           self.config.calibration_method, reconstruct=prunes and reconstruct,
                           channel_multiple=self.config.channel_multiple,
                           importance=self.config.importance, runtime=self.target.runtime,
                           cache=self.pass_cache if calibration_samples is None else None)
        if check:
            from onnxamc.runtime.check import check_compressed

            check_compressed(self.model, out, policy.is_identity)
        return out

    @cached_property
    def pass_cache(self):
        """What the passes keep between the policies applied to this model (a search's
        candidates): the original's reconstruction rows, activation ranges by float model."""
        import tempfile

        from onnxamc.actions import PassCache

        self._ranges = tempfile.TemporaryDirectory(prefix="onnxamc-ranges-")
        return PassCache(self.model, None, self._ranges.name)

    def _has_calibration(self) -> bool:
        try:
            self.calibration
        except DataError:
            if self.config.calibration is not None:
                raise
            return False
        return True


def _is_fashion_mnist(data: Any) -> bool:
    return isinstance(data, (str, Path)) and str(data).split(":")[0] == "fashion-mnist"
