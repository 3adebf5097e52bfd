"""Per-layer static and dynamic QDQ quantization, built on onnxruntime.quantization.

Static: weights int8 or int4, per output channel or per tensor (chosen per layer through
`TensorQuantOverrides`), activations uint8 per tensor calibrated on data (MinMax,
Entropy or Percentile). u8 activations with s8 per-channel weights is what
onnxruntime's CPU provider fuses into QLinearConv / QGemm. Q/DQ goes around whole
regions the target fuses, never around a float op (quant_placement, quant_patterns);
layers not named, and int8 layers whose region does not pay, stay as they are.

Dynamic: `quantize_dynamic` (ConvInteger / MatMulInteger, activations quantized at run
time), for the layers named only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx

from onnxamc.graph import initializer_map
from onnxamc.graph.model import copy_model
from onnxamc.passes.graph_edit import (fix_ir_version, gemm_to_matmul, nodes_by_name,
                                       output_axis, restore_names, unique)
from onnxamc.passes.quant_placement import Placement, place

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
ENTROPY_BINS = 2048


@dataclass(frozen=True)
class WeightSpec:
    """How one layer's weight is quantized."""

    bits: int = 8  # 8 or 4
    per_channel: bool = True


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
                  method: str = "minmax", runtime: str = "onnxruntime") -> onnx.ModelProto:
    """Quantize the named layers to int8 per-channel QDQ where that pays on `runtime`;
    the other layers stay float."""
    return quantize_static_layers(model, {n: WeightSpec() for n in int8_layers}, calibration,
                                  method, runtime)


def static_placement(model: onnx.ModelProto, specs: dict[str, WeightSpec],
                     runtime: str = "onnxruntime",
                     min_macs_per_border_element: float | None = None) -> Placement:
    """The int8 regions the static pass would quantize (int4 layers are not placed:
    no runtime fuses them; they are quantized alone, for size)."""
    int8 = {n for n, s in specs.items() if s.bits == 8}
    return place(direct_constants(copy_model(model)), int8, runtime, min_macs_per_border_element)


def quantize_static_layers(model: onnx.ModelProto, specs: dict[str, WeightSpec],
                           calibration: Iterable[dict[str, np.ndarray]],
                           method: str = "minmax", runtime: str = "onnxruntime",
                           min_macs_per_border_element: float | None = None,
                           ranges_dir: str | None = None) -> onnx.ModelProto:
    """Static QDQ for the layers in `specs` (each with its own bits and granularity).

    int8 layers are quantized with whole fusable regions around them, and only where
    the region pays for its conversions (quant_placement); int4 layers alone.
    `ranges_dir` keeps the activation ranges of each float model and calibration set
    (quantize_static's calibration cache), so candidates of a search that share their
    float part skip the calibration run."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not specs:
        return model
    named = direct_constants(copy_model(model))
    placement = place(named, {n for n, s in specs.items() if s.bits == 8}, runtime,
                      min_macs_per_border_element)
    to_quantize = placement.nodes_to_quantize + [n for n, s in specs.items() if s.bits != 8]
    specs = {n: s for n, s in specs.items() if n in set(to_quantize)}
    if not specs:
        return model
    overrides = weight_overrides(named, specs)
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    feeds = list(calibration)
    with tempfile.TemporaryDirectory(prefix="onnxamc-q-") as tmp, _quiet_root_logger(), \
            contextlib.redirect_stdout(io.StringIO()):  # calibrators print their progress
        out = Path(tmp) / "q.onnx"
        if method == "entropy":  # ranges from a finer histogram than quantize_static's
            op_types = sorted({n.op_type for n in named.graph.node if n.name in to_quantize})
            for tensor, (low, high) in entropy_ranges(named, feeds, Path(tmp), op_types).items():
                overrides.setdefault(tensor, [{"rmin": low, "rmax": high}])
        quantize_static(
            named, str(out), _Feeds(feeds), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_quantize=to_quantize,
            # entropy ranges are overrides by now; quantize_static's own 128-bin entropy
            # would equal MinMax at a higher cost
            calibrate_method=methods["minmax" if method == "entropy" else method],
            extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True,
                           "TensorQuantOverrides": overrides},
            **calibration_cache(ranges_dir, named, feeds, method),
        )
        return fix_ir_version(onnx.load(str(out)))


def calibration_cache(ranges_dir: str | None, model: onnx.ModelProto,
                      feeds: list[dict[str, np.ndarray]], method: str) -> dict:
    """quantize_static's `calibration_cache_path` for this float model and these feeds
    (a file named by their hash), where the installed onnxruntime has it."""
    import hashlib
    import inspect

    from onnxruntime.quantization import quantize_static

    if ranges_dir is None or method == "entropy" or \
            "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        return {}
    digest = hashlib.sha1(model.SerializeToString())
    for feed in feeds:
        for name in sorted(feed):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(feed[name]).tobytes())
    return {"calibration_cache_path": str(Path(ranges_dir) / f"{digest.hexdigest()}-{method}.json")}


def weight_overrides(model: onnx.ModelProto, specs: dict[str, WeightSpec]) -> dict[str, list]:
    """onnxruntime's TensorQuantOverrides for the layers' weights, edited in place so
    that they never conflict: a weight that is not an initializer gets none (the
    quantizer would calibrate it as an activation and refuse a per-channel override),
    and an initializer shared by layers asking different things is copied per layer."""
    from onnxruntime.quantization import QuantType

    types = {8: QuantType.QInt8, 4: QuantType.QInt4}
    inits = initializer_map(model)
    nodes = nodes_by_name(model)
    asked: dict[str, tuple] = {}
    overrides: dict[str, list] = {}
    for name, spec in specs.items():
        node = nodes[name]
        weight = node.input[1]
        if weight not in inits:
            continue
        override = {"quant_type": types[spec.bits], "symmetric": True}
        if spec.per_channel:
            override["axis"] = output_axis(node)
        key = tuple(sorted(override.items(), key=lambda kv: kv[0]))
        if asked.setdefault(weight, key) != key or _read_by_other_ops(model, weight, specs):
            weight = private_copy(model, node, 1)
        overrides[weight] = [override]
    return overrides


def direct_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Consumers of `Identity(initializer)` read the initializer itself (in place).

    The TorchScript exporter shares identical tensors (all-zero biases, equal weights)
    through Identity nodes; behind one, a weight or bias looks like an activation to the
    quantizer, which then leaves the layer unfused or refuses its overrides."""
    inits = initializer_map(model)
    alias = {n.output[0]: n.input[0] for n in model.graph.node
             if n.op_type == "Identity" and n.input[0] in inits}
    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in alias and name not in outputs:
                node.input[i] = alias[name]
    dead = [n for n in model.graph.node if n.op_type == "Identity" and n.output[0] in alias
            and n.output[0] not in outputs]
    for node in dead:
        model.graph.node.remove(node)
    return model


def private_copy(model: onnx.ModelProto, node: onnx.NodeProto, index: int) -> str:
    """Give `node` its own copy of the initializer at input `index`; returns its name."""
    source = initializer_map(model)[node.input[index]]
    copy = onnx.TensorProto()
    copy.CopyFrom(source)
    copy.name = unique(model, f"{node.name}.{'weight' if index == 1 else 'bias'}")
    model.graph.initializer.append(copy)
    node.input[index] = copy.name
    return copy.name


def _read_by_other_ops(model: onnx.ModelProto, weight: str, specs: dict) -> bool:
    """True if a node that is not one of the quantized layers also reads `weight`."""
    return any(weight in n.input and n.name not in specs for n in model.graph.node)


def entropy_ranges(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], tmp: Path,
                   op_types: list[str] | None = None, bins: int | None = None
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Activation ranges by KL-divergence (entropy) calibration over `bins` histogram
    bins. quantize_static's own entropy calibrator uses 128 bins for 128 quantized
    levels, where the search has a single candidate and the result equals MinMax."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    path = tmp / "entropy-input.onnx"
    onnx.save(model, str(path))
    calibrator = create_calibrator(path, op_types, augmented_model_path=str(tmp / "entropy-aug.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": bins or ENTROPY_BINS,
                                                  "num_quantized_bins": 128})
    calibrator.collect_data(_Feeds(feeds))
    data = calibrator.compute_data()
    weights = {i.name for i in model.graph.initializer}
    ranges = {}
    for name, tensor in data.data.items():
        low, high = tensor.range_value
        if name not in weights:
            ranges[name] = (np.asarray(low, np.float32), np.asarray(high, np.float32))
    return ranges


def quantize_dynamic_layers(model: onnx.ModelProto, per_channel: dict[str, bool]) -> onnx.ModelProto:
    """Dynamic int8 (weights int8, activations quantized at run time) for the named layers."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_model = copy_model(model)
    nodes = nodes_by_name(out_model)
    for name in per_channel:  # onnxruntime would rename it: keep the layer's name
        if nodes[name].op_type == "Gemm":
            gemm_to_matmul(out_model, nodes[name])
    for channelwise in (True, False):
        names = [n for n, pc in per_channel.items() if pc == channelwise]
        if not names:
            continue
        with tempfile.TemporaryDirectory(prefix="onnxamc-qd-") as tmp, _quiet_root_logger():
            source, out = Path(tmp) / "in.onnx", Path(tmp) / "q.onnx"
            # From a file: a ModelProto input trips the quantizer's external-data reload.
            # Without value_info: it turns Gemm into MatMul with a transposed weight and
            # then fails on the old shape the exporter recorded for that weight.
            plain = onnx.ModelProto()
            plain.CopyFrom(out_model)
            plain.graph.ClearField("value_info")
            onnx.save(plain, str(source))
            quantize_dynamic(source, str(out), per_channel=channelwise,
                             weight_type=QuantType.QInt8, nodes_to_quantize=names,
                             # beside contrib ops (MatMulNBits of other layers) shape
                             # inference leaves tensors untyped: they are float
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            out_model = restore_names(fix_ir_version(onnx.load(str(out))), names, "_quant")
    return out_model


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
