"""`--input-shape` and batches that follow the model's batch dimension."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import zoo
from onnxamc import api, cli
from onnxamc.data import Dataset, fixed_batch, load_data
from onnxamc.errors import DataError
from onnxamc.graph import InputSpec, load_model, model_inputs
from zoo import handmade


def _spec(*shape) -> list[InputSpec]:
    return [InputSpec("x", tuple(shape), np.dtype(np.float32))]


def test_random_data_follows_the_given_input_shape():
    model = handmade.tf_same_padding()  # x: [1, 3, height, width]
    with pytest.raises(DataError, match="--input-shape x:1"):
        load_data("random:4", model_inputs(load_model(model)))
    fixed = load_model(model, {"x": (1, 3, 40, 24)})
    data = load_data("random:4", model_inputs(fixed))
    assert data.inputs["x"].shape == (4, 3, 40, 24)


def test_batches_follow_a_fixed_batch_of_one():
    data = load_data(Dataset({"x": np.zeros((5, 3), np.float32)}), _spec(1, 3))
    assert data.batch == 1 and [len(b["x"]) for b in data.batches(32)] == [1] * 5
    assert len(data.one()["x"]) == 1
    dynamic = load_data(Dataset({"x": np.zeros((5, 3), np.float32)}), _spec(None, 3))
    assert dynamic.batch is None and [len(b["x"]) for b in dynamic.batches(2)] == [2, 2, 1]


def test_a_fixed_batch_larger_than_one_trims_to_whole_batches():
    data = load_data(Dataset({"x": np.zeros((10, 3), np.float32)}, np.arange(10)), _spec(4, 3))
    assert [len(b["x"]) for b in data.batches(32)] == [4, 4] and len(data.labels) == 8
    assert "8 of 10 samples" in data.notes[-1]
    with pytest.raises(DataError, match="batches of exactly 4"):
        load_data(Dataset({"x": np.zeros((3, 3), np.float32)}), _spec(4, 3))


def test_state_and_scalar_inputs_leave_the_batch_free():
    inputs = [InputSpec("x", (1, 512), np.dtype(np.float32)),
              InputSpec("state", (2, 1, 128), np.dtype(np.float32)),
              InputSpec("sr", (), np.dtype(np.int64))]
    assert fixed_batch(inputs) is None


def test_int8_with_random_calibration_on_a_batch_one_export(tmp_path, capsys):
    """Issue 12: `apply --uniform bits=8 --calibration random:8` on a model exported with
    a fixed batch of 1 fed batches of 8 and ended in an onnxruntime traceback."""
    path = tmp_path / "batch1.onnx"
    onnx.save(handmade.depthwise_on_input(), path)  # x: [1, 3, 32, 32]
    out = tmp_path / "int8.onnx"
    # the latency guard would keep fp32 where int8 is slower on this tiny graph: the
    # test is about calibration batches, so the guard is off
    code = cli.main(["apply", str(path), "--uniform", "bits=8", "--calibration", "random:8",
                     "--no-latency-guard", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QuantizeLinear" in ops or "QLinearConv" in ops


IMAGE_MODELS = [p for p in zoo.params(sources=("pypi",)) if len(zoo.entry(p.values[0]).inputs) == 1]


@pytest.mark.parametrize("zoo_model", IMAGE_MODELS, indirect=True)
def test_dynamic_models_take_their_shape_and_random_data(zoo_model):
    """The PyPI image models have dynamic batch and spatial dimensions: with
    --input-shape they take random data, in batches of the batch given."""
    (name, shape), = zoo_model.entry.input_shapes.items()
    model = api.load(zoo_model.path, {name: shape})
    (spec,) = model_inputs(model)
    assert spec.shape == shape
    data = load_data("random:3", [spec])
    assert data.inputs[name].shape == (3, *shape[1:]) and data.batch == 1


def test_every_command_takes_the_input_shape(tmp_path, capsys):
    """Issue 12: a model with dynamic height and width could not be benchmarked or
    searched on random data; --input-shape fixes the dimensions in every command."""
    path = tmp_path / "dynamic.onnx"
    onnx.save(handmade.tf_same_padding(), path)  # x: [1, 3, height, width]
    assert cli.main(["bench", str(path), "--data", "random:4", "--runs", "3"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    shape = ["--input-shape", "x:1,3,32,32"]
    assert cli.main(["bench", str(path), "--data", "random:4", "--runs", "3", *shape]) == 0
    out = tmp_path / "pruned.onnx"
    assert cli.main(["apply", str(path), "--uniform", "keep=0.5", "--calibration", "random:4",
                     "-o", str(out), *shape]) == 0, capsys.readouterr().err
    (spec,) = model_inputs(onnx.load(str(out)))
    assert spec.shape == (1, 3, 32, 32)
    code = cli.main(["search", str(path), "--data", "random:8", "--trials", "2", "--runs", "3",
                     "--verify-runs", "3", "--latency", "0.9", "--no-progress",
                     "-o", str(tmp_path / "searched.onnx"), *shape])
    assert code == 0, capsys.readouterr().err
    (spec,) = model_inputs(onnx.load(str(tmp_path / "searched.onnx")))
    assert spec.shape == (1, 3, 32, 32)
