"""What every workflow shares: the model analysed once, its data and calibration, the
target, the evaluator, and applying a policy.

A `Run` is one model with one RunConfig. It loads each thing on first use and keeps it,
so a search that builds hundreds of candidates reads its model, data and calibration
once.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import onnx

from onnxamc.actions import apply_policy
from onnxamc.config import DEFAULT_CALIBRATION, RunConfig
from onnxamc.data import Dataset, load_data
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


def load_context(model: ModelLike) -> ModelContext:
    """A checked, shape-inferred model, analysed lazily; None is the bundled ResNet-20."""
    if isinstance(model, ModelContext):
        return model
    source = bundled_model_path() if model is None else model
    name = Path(source).name if isinstance(source, (str, Path)) else "model.onnx"
    return ModelContext(load_model(source), name)


class Run:
    def __init__(self, model: ModelLike | ModelContext, config: RunConfig | None = None):
        self.context = load_context(model)
        self.config = config or RunConfig()
        # a model this onnxruntime cannot load is one line now, not a traceback later
        check_runnable(self.context.model, onnxruntime_limits())

    @property
    def model(self) -> onnx.ModelProto:
        return self.context.model

    @cached_property
    def target(self) -> Target:
        return load_target(self.config.target, self.config.threads)

    def load(self, data: Any, limit: int | None = None) -> Dataset:
        """Data checked against the model's inputs (a one-line DataError if it does not fit)."""
        return load_data(data, self.context.inputs, limit=limit)

    @cached_property
    def data(self) -> Dataset:
        """The evaluation data (`eval_samples` of it)."""
        return self.load(self.config.data, self.config.eval_samples)

    @cached_property
    def calibration(self) -> Dataset:
        """The calibration data: the user's `calibration`; without one, the user's
        evaluation data (the best set we have) or, for the bundled Fashion-MNIST, its
        calibration subset."""
        given = self.config.calibration
        if given is None and not _is_fashion_mnist(self.config.data):
            given = self.config.data
        try:
            return self.load(given or DEFAULT_CALIBRATION, self.config.calibration_samples)
        except DataError as exc:
            if given is not None:
                raise
            raise DataError(f"this needs calibration data that fits the model (--calibration); "
                            f"the default {DEFAULT_CALIBRATION} does not: {exc}") from None

    def calibration_feeds(self):
        """Feed batches of the calibration data (loaded on the first call)."""
        return self.calibration.batches(CALIBRATION_BATCH)

    def evaluator(self, data: Dataset | None | str = "default", **options) -> Evaluator:
        data = self.data if data == "default" else data
        options.setdefault("runs", self.config.runs)
        options.setdefault("warmup", self.config.warmup)
        return Evaluator(self.context, data, self.target, **options)

    def apply(self, policy: Policy, reconstruct: bool | None = None,
              check: bool = True) -> onnx.ModelProto:
        """The compressed model; pruned layers are refit on calibration data unless the
        config turns it off (or no calibration data fits: then it says so on stderr).
        With `check`, it passes runtime.check before it is returned (a search's candidates
        skip it: measuring them is the check)."""
        from onnxamc.actions import check_policy

        check_policy(self.context, policy)
        reconstruct = self.config.reconstruct if reconstruct is None else reconstruct
        prunes = any(a.keep < 1 for a in policy.layers.values())
        if prunes and reconstruct and not self._has_calibration():
            warn("no calibration data fits the model: pruned layers are not refit "
                 "(accuracy may drop sharply; give --calibration)")
            reconstruct = False
        out = apply_policy(self.context, policy, self.calibration_feeds,
                           self.config.calibration_method, reconstruct=prunes and reconstruct,
                           channel_multiple=self.config.channel_multiple,
                           importance=self.config.importance)
        if check:
            from onnxamc.runtime.check import check_compressed

            check_compressed(self.model, out, policy.is_identity)
        return out

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
