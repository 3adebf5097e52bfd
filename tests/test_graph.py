"""Analysis: loading (with clear errors), the layer table and its features."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxamc.errors import ModelError
from onnxamc.graph import analyze, load_model, save_model


def test_tiny_cnn_layer_table(tiny_cnn):
    info = analyze(load_model(tiny_cnn))
    assert [l.op_type for l in info.layers] == ["Conv", "Conv", "Conv", "Gemm"]
    conv3 = info.layers[2]
    assert (conv3.c_in, conv3.c_out, conv3.kernel, conv3.stride) == (16, 32, (3, 3), (2, 2))
    assert conv3.in_size == (8, 8) and conv3.out_size == (4, 4)
    assert conv3.macs == 4 * 4 * 32 * 16 * 9
    assert conv3.params == 32 * 16 * 9 + 32  # weight + bias
    fc = info.layers[3]
    assert (fc.c_in, fc.c_out, fc.macs) == (32, 10, 320)
    assert info.macs == sum(l.macs for l in info.layers)
    assert info.inputs[0].shape == (None, 1, 8, 8)


def test_resnet20_totals(resnet20):
    info = analyze(load_model(resnet20))
    assert len(info.layers) == 22  # 19 3x3 convs, 2 shortcut 1x1 convs, 1 linear
    assert info.macs == 31_021_952
    assert 260_000 < info.params < 280_000
    names = info.layer_names
    assert names[0] == "stem.0" and names[-1] == "fc" and "layers.3.shortcut.0" in names


def test_depthwise_layers_are_marked(mobilenetv2):
    info = analyze(load_model(mobilenetv2))
    depthwise = [l for l in info.layers if l.depthwise]
    assert depthwise and all(l.groups == l.c_in == l.c_out for l in depthwise)
    assert all(l.macs == np.prod(l.out_size) * l.c_out * 9 for l in depthwise)


def test_matmul_with_constant_weight_is_a_layer_but_activation_matmul_is_not():
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj"),
         helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1]),
         helper.make_node("MatMul", ["y", "yt"], ["z"], name="scores")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 5, 5])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    info = analyze(load_model(model))
    assert [l.name for l in info.layers] == ["proj"]
    assert info.layers[0].macs == 5 * 8 * 4  # tokens x c_in x c_out


def test_external_data_model_loads(tiny_cnn, tmp_path):
    model = onnx.load(tiny_cnn)
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)
    assert (tmp_path / "ext.onnx.data").exists()
    assert analyze(load_model(path)).macs == analyze(load_model(tiny_cnn)).macs


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"this is not protobuf", "not a readable ONNX model"),
    (b"", "not an ONNX model"),
])
def test_bad_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message) as err:
        load_model(path)
    assert "\n" not in str(err.value)


def test_invalid_graph_is_reported(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["missing"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ModelError, match="invalid ONNX model"):
        load_model(model)


def test_save_round_trip(tiny_cnn, tmp_path):
    model = load_model(tiny_cnn)
    out = save_model(model, tmp_path / "sub" / "copy.onnx")
    assert analyze(load_model(out)).fingerprint == analyze(model).fingerprint


def test_info_json_is_serializable(tiny_cnn):
    data = json.loads(json.dumps(analyze(load_model(tiny_cnn)).to_dict()))
    assert set(data) >= {"macs", "params", "layers"}
    assert data["layers"][0]["op_type"] == "Conv"
