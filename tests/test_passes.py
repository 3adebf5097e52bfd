"""Passes, checked numerically on real models in real onnxruntime sessions."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxamc import api
from onnxamc.data import load_data
from onnxamc.graph import analyze, initializer_map, load_model
from onnxamc.actions import apply_policy
from onnxamc.passes.sparsity import prune_by_magnitude
from onnxamc.errors import PolicyError
from onnxamc.policy import LayerAction, Policy

from conftest import run_model


def _digits_feed(n=64):
    from sklearn.datasets import load_digits

    return {"input": (load_digits().images[:n] / 16.0).astype(np.float32)[:, None]}


def test_identity_policy_gives_the_same_outputs(tiny_cnn):
    model = load_model(tiny_cnn)
    out = apply_policy(model, Policy())
    feed = _digits_feed()
    np.testing.assert_array_equal(run_model(out, feed)[0], run_model(model, feed)[0])


@pytest.mark.parametrize("sparsity", [0.1, 0.37, 0.5, 0.9])
def test_sparsity_zeroes_exactly_the_asked_fraction(tiny_cnn, sparsity):
    model = load_model(tiny_cnn)
    info = analyze(model)
    target = info.layers[1]
    out = apply_policy(model, Policy({target.name: LayerAction(sparsity=sparsity)}))
    before = numpy_helper.to_array(initializer_map(model)[target.weight])
    after = numpy_helper.to_array(initializer_map(out)[target.weight])
    assert np.count_nonzero(before) == before.size
    assert after.size - np.count_nonzero(after) == round(sparsity * after.size)
    kept = after != 0
    assert np.abs(before[~kept]).max() <= np.abs(before[kept]).min()  # by magnitude
    np.testing.assert_array_equal(after[kept], before[kept])
    for other in info.layers:  # other layers untouched
        if other.name != target.name:
            np.testing.assert_array_equal(
                numpy_helper.to_array(initializer_map(out)[other.weight]),
                numpy_helper.to_array(initializer_map(model)[other.weight]))
    onnx.checker.check_model(out)
    run_model(out, _digits_feed(4))


def test_prune_by_magnitude_edge_cases():
    w = np.arange(1, 11, dtype=np.float32)
    assert np.count_nonzero(prune_by_magnitude(w, 0.0)) == 10
    assert np.count_nonzero(prune_by_magnitude(w, 0.04)) == 10  # rounds to 0 weights
    np.testing.assert_array_equal(prune_by_magnitude(-w, 0.3)[:3], 0)


def _quantized_weights(model):
    """Names of weights stored as int8 in the model."""
    return {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}


def test_int8_only_on_chosen_layers(tiny_cnn):
    model = load_model(tiny_cnn)
    info = analyze(model)
    chosen = [info.layers[0].name, info.layers[2].name]
    policy = Policy({name: LayerAction(bits=8) for name in chosen})
    calib = load_data("digits", info.inputs, limit=64)
    out = apply_policy(model, policy, lambda: calib.batches(16))
    onnx.checker.check_model(out)
    int8 = _quantized_weights(out)
    assert {info.layers[0].weight, info.layers[2].weight} <= {n.rsplit("_quantized", 1)[0] for n in int8}
    floats = {i.name for i in out.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert info.layers[1].weight in floats and info.layers[3].weight in floats
    feed = _digits_feed()
    ref, got = run_model(model, feed)[0], run_model(out, feed)[0]
    assert np.mean(ref.argmax(1) == got.argmax(1)) > 0.9


def test_int8_resnet20_within_one_point(resnet20, tmp_path):
    """The foundation's acceptance test: int8 per-channel ResNet-20 on the eval subset."""
    fp32, int8 = api.bench([resnet20, api.apply(resnet20, api.uniform_policy(resnet20, "bits=8"))],
                           "fashion-mnist", runs=5)
    assert fp32.quality > 0.9 and fp32.metric == "top1"
    assert int8.quality_drop <= 0.01
    assert int8.size_bytes < 0.35 * fp32.size_bytes


def test_int8_needs_calibration(tiny_cnn):
    model = load_model(tiny_cnn)
    with pytest.raises(PolicyError, match="calibration"):
        apply_policy(model, Policy({analyze(model).layers[0].name: LayerAction(bits=8)}))
