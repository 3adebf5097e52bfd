"""Compression passes: ONNX in, ONNX out, one file per action.

`apply_policy` runs them in a fixed order: weight edits first (sparsity), then
quantization, which must see the final float weights it calibrates and rounds.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import onnx

from onnxamc.graph import analyze
from onnxamc.passes.quantize import CALIBRATION_METHODS, quantize_int8
from onnxamc.passes.sparsity import magnitude_sparsity, prune_by_magnitude
from onnxamc.policy import Policy

CalibrationFeeds = Callable[[], Iterable[dict[str, np.ndarray]]]

__all__ = ["CALIBRATION_METHODS", "apply_policy", "magnitude_sparsity", "prune_by_magnitude",
           "quantize_int8"]


def apply_policy(model: onnx.ModelProto, policy: Policy,
                 calibration: CalibrationFeeds | None = None,
                 calibration_method: str = "minmax") -> onnx.ModelProto:
    """The compressed model for `policy` (validated against `model` first).

    `calibration` returns feed dicts of calibration data; it is only called when the
    policy quantizes something.
    """
    info = analyze(model)
    policy.validate({layer.name: layer.op_type for layer in info.layers}, info.fingerprint)
    out = magnitude_sparsity(model, info.layers, policy.sparsities())
    int8 = policy.layers_with_bits(8)
    if int8:
        if calibration is None:
            raise ValueError("int8 quantization needs calibration data")
        out = quantize_int8(out, int8, calibration(), calibration_method)
    return out
