"""Per-layer latency table: cached per target, prediction error reported by bench."""

from __future__ import annotations

import json

import onnx

from onnxamc import api
from onnxamc.runtime.layer_table import LayerTable, layer_key, layer_models
from onnxamc.runtime.target import load_target


def test_table_measures_each_layer_once_and_is_reused(tiny_cnn, tmp_path):
    path = tmp_path / "table.json"
    model = onnx.load(tiny_cnn)
    first = LayerTable(load_target("cpu-ort"), path, runs=5, warmup=1).predict(model)
    assert len(first.layers) == 4 and first.measured_now == 5  # 4 layers + call overhead
    assert first.total_ms > 0 and json.loads(path.read_text())["target"] == "cpu-ort"
    again = LayerTable(load_target("cpu-ort"), path).predict(model)  # a new process's view
    assert again.measured_now == 0 and again.total_ms == first.total_ms


def test_quantized_layers_are_cut_with_their_qdq_neighbours(tiny_cnn):
    quantized = api.apply(tiny_cnn, api.uniform_policy(tiny_cnn, "bits=8"),
                          calibration="digits", calibration_samples=32)
    quantized = onnx.shape_inference.infer_shapes(quantized)
    subs = dict(layer_models(quantized))
    ops = [n.op_type for n in next(iter(subs.values())).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    plain = dict(layer_models(onnx.shape_inference.infer_shapes(onnx.load(tiny_cnn))))
    assert {layer_key(s) for s in subs.values()}.isdisjoint(
        {layer_key(s) for s in plain.values()})


def test_bench_predicts_from_a_stored_layer_table(tiny_cnn, tmp_path):
    """Each distinct layer is timed once and kept: a second bench measures nothing new and
    predicts the same; a model with half the channels has layers of its own (which is
    faster is a benchmark's question: microsecond layers under load are noise)."""
    pruned = api.apply(tiny_cnn, api.uniform_policy(tiny_cnn, "keep=0.5"), reconstruct=False)
    first = api.bench([tiny_cnn, pruned], None, runs=10, layer_table=tmp_path / "t.json")
    table = [m.extra["layer_table"] for m in first]
    assert table[0]["measured_now"] > 0 and table[0]["layers"]
    assert table[1]["measured_now"] > 0 and table[1]["predicted_ms"] > 0
    again = api.bench([tiny_cnn], None, runs=10, layer_table=tmp_path / "t.json")[0]
    assert again.extra["layer_table"]["measured_now"] == 0
    assert again.extra["layer_table"]["predicted_ms"] == table[0]["predicted_ms"]
