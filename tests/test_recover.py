"""Training recovery through the ONNX ⇄ torch bridge, on real models."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxamc import api
from onnxamc.data import load_data
from onnxamc.graph import analyze, initializer_map, load_model
from onnxamc.actions import apply_policy
from onnxamc.policy import LayerAction, Policy
from onnxamc.recover import TrainConfig, to_torch, train, write_back

from conftest import run_model

torch = pytest.importorskip("torch")


def test_bridge_round_trip(tiny_cnn):
    model = load_model(tiny_cnn)
    bridge = to_torch(model)
    with torch.no_grad():
        for p in bridge.module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    back = write_back(model, bridge.onnx_weights())
    onnx.checker.check_model(back)
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        want = bridge.module(torch.from_numpy(x)).numpy()
    got = run_model(back, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, run_model(model, {"input": x})[0], atol=1e-4)


def test_feature_outputs_follow_the_model_outputs(tiny_cnn):
    model = load_model(tiny_cnn)
    relu = next(n.output[0] for n in model.graph.node if n.op_type == "Relu")
    out = to_torch(model, [relu]).module(torch.rand(2, 1, 8, 8))
    assert out[0].shape == (2, 10) and out[1].shape[:2] == (2, 16)


def _digits(model):
    inputs = analyze(model).inputs
    data = load_data("digits", inputs)
    return data.take(1200), load_data("digits", inputs)  # train on the first 1200


def _eval_accuracy(model, data):
    x = data.inputs["input"][1200:]
    return float(np.mean(run_model(model, {"input": x})[0].argmax(1) == data.labels[1200:]))


def test_fine_tuning_recovers_accuracy_and_keeps_zeros(tiny_cnn):
    model = load_model(tiny_cnn)
    names = analyze(model).layer_names
    damaged = apply_policy(model, Policy({n: LayerAction(sparsity=0.8) for n in names}))
    train_set, full = _digits(model)
    before = _eval_accuracy(damaged, full)
    tuned, report = train(damaged, train_set, TrainConfig(epochs=4, lr=0.02, progress=False))
    after = _eval_accuracy(tuned, full)
    assert after > before + 0.05, (before, after)
    for name in names:  # pruned weights stay pruned
        layer = analyze(model).layer(name)
        w0 = numpy_helper.to_array(initializer_map(damaged)[layer.weight])
        w1 = numpy_helper.to_array(initializer_map(tuned)[layer.weight])
        assert np.all(w1[w0 == 0] == 0)
    assert report.steps == 4 * 19


def test_distillation_and_qat_change_weights_and_give_valid_onnx(tiny_cnn):
    model = load_model(tiny_cnn)
    info = analyze(model)
    damaged = apply_policy(model, Policy({n: LayerAction(sparsity=0.5) for n in info.layer_names}))
    train_set, full = _digits(model)
    relu = next(n.output[0] for n in model.graph.node if n.op_type == "Relu")
    kd, report = train(damaged, train_set, TrainConfig(
        epochs=1, distill_weight=0.7, feature_weights={relu: 1.0}, progress=False),
        val=full.take(300), teacher=model)
    qat, _ = train(damaged, train_set, TrainConfig(
        epochs=1, qat_bits={info.layers[1].weight: 8}, progress=False))
    for out in (kd, qat):
        onnx.checker.check_model(out)
        assert any(not np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
                   for a, b in zip(out.graph.initializer, damaged.graph.initializer))
        run_model(out, {"input": full.inputs["input"][:4]})
    assert report.best_val_accuracy is not None and report.history


def test_unlabelled_data_needs_pure_distillation(tiny_cnn):
    model = load_model(tiny_cnn)
    data = load_data("random:32", analyze(model).inputs)
    with pytest.raises(ValueError, match="no labels"):
        train(model, data, TrainConfig(epochs=1, progress=False))
    out, _ = train(model, data, TrainConfig(epochs=1, distill_weight=1.0, progress=False),
                   teacher=model)
    onnx.checker.check_model(out)


def test_fgsm_robustness_metric(tiny_cnn, tmp_path):
    model = load_model(tiny_cnn)
    damaged = apply_policy(model, Policy({n: LayerAction(sparsity=0.6)
                                          for n in analyze(model).layer_names}))
    path = tmp_path / "d.onnx"
    onnx.save(damaged, str(path))
    base, attacked = api.bench([tiny_cnn, path], "digits", runs=5, eval_samples=400,
                               fgsm_epsilon=0.1)
    assert base.extra["robust_quality"] < base.quality  # the attack hurts the original
    assert 0 <= attacked.extra["robust_quality"] <= 1
    none, = api.bench([tiny_cnn], "digits", runs=5, eval_samples=400, fgsm_epsilon=0.0)
    assert none.extra["robust_quality"] == none.quality  # ε = 0 changes nothing


def test_only_weights_train_clip_bounds_and_shapes_stay(tmp_path):
    """MobileNet's ReLU6 is Clip(x, 0, 6) with the bounds as initializers: training them
    wrecked the model (7% after one epoch at lr 5e-4); only weights may move."""
    import torch.nn.functional as F  # noqa: F401  (torch is imported by importorskip)

    from onnxamc.recover.bridge import trainable_initializers

    module = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU6(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 6 * 6, 3))
    from onnxamc.export import export_torch

    path = tmp_path / "m.onnx"
    export_torch(module, (2, 1, 8, 8), path)
    model = load_model(path)
    clip_inputs = {i for n in model.graph.node if n.op_type == "Clip" for i in n.input[1:]}
    inits = {i.name for i in model.graph.initializer}
    trainable = trainable_initializers(model)
    assert {l.weight for l in analyze(model).layers} <= trainable
    assert not (clip_inputs & inits & trainable)
    bridge = to_torch(model)
    frozen = {bridge.parameters[n] for n, p in bridge.module.named_parameters()
              if not p.requires_grad and n in bridge.parameters}
    assert clip_inputs & inits <= frozen


def test_pruned_resnet20_recovers_by_a_short_fine_tuning(resnet20):
    """The bundled ResNet-20 with 80% of its channels removed and refit by least squares
    loses much accuracy; 150 steps of fine-tuning with distillation on the 512
    calibration images win part of it back, on evaluation images it never trained on."""
    model = load_model(resnet20)
    pruned = api.apply(model, api.uniform_policy(model, "keep=0.2"), reconstruct=True)
    train_set = api.data_for(model, "fashion-mnist:calib")
    evaluation = api.data_for(model, "fashion-mnist", limit=1000)
    x, y = evaluation.inputs["input"], evaluation.labels
    before = float(np.mean(run_model(pruned, {"input": x})[0].argmax(1) == y))
    tuned, report = train(pruned, train_set, TrainConfig(steps=150, lr=0.003, distill_weight=0.5,
                                                         threads=1, progress=False),
                          teacher=model)
    after = float(np.mean(run_model(tuned, {"input": x})[0].argmax(1) == y))
    assert report.steps == 150 and after > before + 0.05, (before, after)
    assert analyze(tuned).params == analyze(pruned).params  # the graph our passes made
