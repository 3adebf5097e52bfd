"""The front door (graph/normalize.py): on the zoo and on graphs built for each case."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import zoo
from conftest import run_model
from onnxamc import api, cli
from onnxamc.errors import ModelError
from onnxamc.graph import analyze, find_layers, load_model, load_with_report, model_inputs, save_model
from onnxamc.graph.normalize import MIN_OPSET, is_normalized, normalize, parse_input_shapes
from zoo import handmade
from zoo.macs import measured_macs

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _close(expected: list[np.ndarray], got: list[np.ndarray]) -> bool:
    return len(expected) == len(got) and all(
        a.shape == b.shape and float(np.abs(a.astype(np.float64) - b).max(initial=0.0))
        <= 1e-4 * max(1.0, float(np.abs(a).max(initial=0.0))) for a, b in zip(expected, got))


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("zoo_model", zoo.params(), indirect=True)
def test_front_door_on_the_zoo(zoo_model):
    """Outputs equal; weights are initializers; no Identity chains; opset >= 13; every
    layer's shapes known; the layer table's MACs equal onnxruntime's shapes' count."""
    original = onnx.load(str(zoo_model.path))
    model, report = normalize(original, zoo_model.entry.input_shapes)
    feed = zoo_model.entry.feed(seed=3)
    assert _close(run_model(original, feed), run_model(model, feed))
    assert is_normalized(model) and _opset(model) >= MIN_OPSET
    inits = {i.name for i in model.graph.initializer}
    assert not [n.name for n in model.graph.node if n.op_type in ("Constant", "Identity")
                and (n.op_type == "Constant" or n.input[0] in inits)]
    layers = find_layers(model)
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "ConvTranspose")]
    assert len(layers) >= len(weighted) > 0 or zoo_model.entry.family == "audio-stateful"
    assert all(l.out_size for l in layers if l.op_type.startswith("Conv")), \
        [l.name for l in layers if not l.out_size]
    assert analyze(model).macs == measured_macs(model, feed)
    assert any(line.startswith("front door: nodes") for line in report.lines())


def test_constant_node_weights_become_layers():
    original = handmade.paddle_constant_weights()
    assert find_layers(original) == [] or len(find_layers(original)) < 4
    model, report = normalize(original, {"x": (1, 3, 32, 32)})
    layers = find_layers(model)
    assert [l.op_type for l in layers] == ["Conv", "Conv", "Conv", "MatMul"]
    assert all(l.weight in {i.name for i in model.graph.initializer} for l in layers)
    assert report.opset == (11, MIN_OPSET) and report.removed["Constant"] == 11
    assert "front door: opset upgraded 11 -> 13" in report.lines()


def test_computed_same_pads_are_resolved_with_the_input_shape():
    """TF 'SAME' pads computed through Shape arithmetic: unknown before the input shape
    is given (the 1x1 feature maps of issue 12), exact after."""
    original = handmade.tf_same_padding()
    dynamic, report = normalize(original)
    assert report.dynamic_inputs == ["x"]
    assert any("--input-shape x:" in line for line in report.lines())
    model, report = normalize(original, {"x": (1, 3, 64, 64)})
    assert report.shapes_known[1] == 1.0 and not report.dynamic_inputs
    assert [l.out_size for l in find_layers(model)][:2] == [(32, 32), (16, 16)]
    feed = {"x": np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)}
    assert analyze(model).macs == measured_macs(model, feed)
    assert _close(run_model(original, feed), run_model(model, feed))


def test_weight_only_dequantize_is_folded_and_qdq_models_are_kept():
    original = handmade.dequantized_weights()
    model, report = normalize(original)
    assert "DequantizeLinear" not in {n.op_type for n in model.graph.node}
    assert report.dequantized_weights == 3
    assert all(l.weight_dtype == "float32" for l in find_layers(model))
    feed = {"x": np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)}
    assert _close(run_model(original, feed), run_model(model, feed))
    # A model that quantizes activations too is a quantized model: its Q/DQ stay.
    from onnxruntime.quantization import QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([feed])

        def get_next(self):
            return next(self.feeds, None)

    src = handmade.depthwise_on_input()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(src, Path(tmp) / "f.onnx")
        feed = {"x": np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)}
        quantize_static(str(Path(tmp) / "f.onnx"), str(Path(tmp) / "q.onnx"), Reader(),
                        weight_type=QuantType.QInt8)
        qdq = onnx.load(str(Path(tmp) / "q.onnx"))
    model, report = normalize(qdq)
    kept = [n.op_type for n in model.graph.node].count("DequantizeLinear")
    assert kept == [n.op_type for n in qdq.graph.node].count("DequantizeLinear") > 0
    assert report.dequantized_weights == 0


def test_shared_initializers_behind_identity_are_read_directly():
    model, report = normalize(handmade.shared_identity())
    assert "Identity" not in {n.op_type for n in model.graph.node}
    assert report.removed["Identity"] == 5
    layers = find_layers(model)
    inits = {i.name for i in model.graph.initializer}
    assert len(layers) == 4 and all(l.weight in inits for l in layers)
    # each conv now reads tensors of its own (equal values): pruning one leaves the other
    value = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert len({l.weight for l in layers[1:3]}) == 2 and len({l.bias for l in layers[:3]}) == 3
    assert np.array_equal(value[layers[1].weight], value[layers[2].weight])
    assert all(l.bias in inits and not value[l.bias].any() for l in layers[:3])


def test_old_opsets_are_upgraded_or_refused_in_one_line():
    model, report = normalize(handmade.opset9_classic())
    assert report.opset == (9, MIN_OPSET) and _opset(model) == MIN_OPSET
    pad = helper.make_node("Pad", ["x"], ["y"], paddings=[0, 0, 1, 1, 0, 0, 1, 1])
    graph = helper.make_graph([pad], "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 6, 6])])
    old = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 1)])
    old.ir_version = 3
    with pytest.raises(ModelError, match="opset 1 cannot be upgraded to 13") as info:
        normalize(old)
    assert "\n" not in str(info.value) and "Pad" in str(info.value)


def _custom_op_model() -> onnx.ModelProto:
    node = helper.make_node("FusedGelu", ["x"], ["y"], domain="com.example", name="gelu0")
    graph = helper.make_graph([node], "custom",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.example", 1)])


def test_custom_domain_ops_are_refused_naming_op_and_domain(tmp_path, capsys):
    path = tmp_path / "custom.onnx"
    onnx.save(_custom_op_model(), path)
    with pytest.raises(ModelError, match="op com.example:FusedGelu"):
        load_model(path)
    assert cli.main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FusedGelu" in err and "com.example" in err


def test_models_failing_the_checker_are_one_line_errors(tmp_path):
    bad = handmade.depthwise_on_input()
    bad.graph.node[0].input[1] = "missing_weight"
    with pytest.raises(ModelError, match="invalid ONNX model") as info:
        load_model(bad)
    assert "\n" not in str(info.value)


def test_parse_input_shapes():
    assert parse_input_shapes(["images:1,3,640,640", "input:0:1,8"]) == {
        "images": (1, 3, 640, 640), "input:0": (1, 8)}
    assert parse_input_shapes(["1,3,224,224"]) == {"": (1, 3, 224, 224)}
    assert parse_input_shapes(None) == {}
    for bad in (["x:1,a"], ["x:"], ["x:1,-3"], ["x:1", "x:2"]):
        with pytest.raises(ModelError):
            parse_input_shapes(bad)


def test_input_shapes_are_checked_against_the_model():
    model = handmade.tf_same_padding()  # x: [1, 3, height, width]
    for shapes, message in (({"y": (1, 3, 8, 8)}, "not a model input"),
                            ({"x": (1, 3, 8)}, "gives 3 dimensions"),
                            ({"x": (2, 3, 8, 8)}, "dimension 0 is fixed at 1")):
        with pytest.raises(ModelError, match=message):
            normalize(model, shapes)
    fixed, report = normalize(model, {"": (1, 3, 32, 32)})
    assert report.shapes_fixed == {"x": ("[1, 3, height, width]", "[1, 3, 32, 32]")}
    assert model_inputs(fixed)[0].shape == (1, 3, 32, 32)


def test_a_written_model_is_not_normalized_again(tmp_path):
    model = load_model(handmade.paddle_constant_weights(), {"x": (1, 3, 32, 32)})
    save_model(model, tmp_path / "m.onnx")
    again, report = load_with_report(tmp_path / "m.onnx")
    assert report.already_normalized and report.lines() == ["front door: already normalized by onnxamc"]
    assert len(again.graph.node) == len(model.graph.node)


def test_inspect_says_what_the_front_door_changed(tmp_path, capsys):
    path = tmp_path / "paddle.onnx"
    onnx.save(handmade.paddle_constant_weights(), path)
    assert cli.main(["inspect", str(path), "--input-shape", "x:1,3,32,32"]) == 0
    out = capsys.readouterr().out
    assert "front door: opset upgraded 11 -> 13" in out
    assert "front door: input x: shape [?, 3, ?, ?] -> [1, 3, 32, 32]" in out
    assert "11 Constant" in out and "4 layers," in out


def test_written_model_is_the_normalized_one_with_equal_outputs(tmp_path):
    """`apply` writes the front door's model; an empty policy leaves it computing what
    the original computed."""
    from onnxamc.policy import Policy

    original = handmade.paddle_constant_weights()
    path = tmp_path / "paddle.onnx"
    onnx.save(original, path)
    api.apply(api.load(path, {"x": (1, 3, 32, 32)}), Policy(), output=tmp_path / "out.onnx")
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert is_normalized(written) and "Constant" not in {n.op_type for n in written.graph.node}
    feed = {"x": np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)}
    assert _close(run_model(original, feed), run_model(written, feed))


def test_initializer_built_weights_count_in_params():
    model, _ = normalize(handmade.paddle_constant_weights())
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer]
    assert analyze(model).params == sum(w.size for w in weights)



def test_control_flow_left_in_the_graph_stays_valid(tmp_path):
    """silero-vad's If branches forward values by Identity; onnx-ir's Identity
    elimination made a branch output dangle ("Graph output ... is not an output of any
    node"): `inspect` without input shapes failed. The normal form passes the checker."""
    try:
        path = zoo.get("silero_vad_op15")
    except zoo.ZooUnavailable as exc:
        pytest.skip(str(exc))
    out, _ = normalize(onnx.load(str(path)))
    onnx.checker.check_model(out)
    assert any(n.op_type == "If" for n in out.graph.node)  # control flow kept, valid
    assert cli.main(["inspect", str(path)]) == 0
