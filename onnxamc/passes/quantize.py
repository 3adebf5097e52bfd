"""Per-layer int8 static quantization (QDQ), built on onnxruntime.quantization.

Weights int8 per output channel, activations uint8 per tensor, calibrated on data: the
combination that onnxruntime's CPU provider fuses into QLinearConv / QGemm. Layers
whose action keeps float are excluded and stay float.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx

from onnxamc.graph import node_names

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class _Feeds:
    """onnxruntime's CalibrationDataReader protocol over an iterable of feed dicts."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]):
        self._feeds = list(feeds)
        self._it: Iterator | None = None

    def get_next(self):
        if self._it is None:
            self._it = iter(self._feeds)
        return next(self._it, None)

    def rewind(self):
        self._it = None


def quantize_int8(model: onnx.ModelProto, int8_layers: list[str],
                  calibration: Iterable[dict[str, np.ndarray]],
                  method: str = "minmax") -> onnx.ModelProto:
    """Quantize the named layers to int8 QDQ; every other compressible layer stays float."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if not int8_layers:
        return model
    named = _with_unique_names(model)
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    float_layers = _float_layers(named, set(int8_layers))
    with tempfile.TemporaryDirectory(prefix="onnxamc-q-") as tmp, _quiet_root_logger():
        out = Path(tmp) / "q.onnx"
        quantize_static(
            named, str(out), _Feeds(calibration), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=float_layers, calibrate_method=methods[method],
            extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True},
        )
        return onnx.load(str(out))


def _float_layers(model: onnx.ModelProto, int8: set[str]) -> list[str]:
    from onnxamc.graph import find_layers

    return [layer.name for layer in find_layers(model) if layer.name not in int8]


def _with_unique_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose nodes all carry the names the layer table uses (quantize_static
    selects nodes by name)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name, node in zip(node_names(out), out.graph.node):
        node.name = name
    return out


@contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization warns on the root logger; keep the user's console clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
