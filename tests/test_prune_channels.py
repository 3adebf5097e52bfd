"""Channel groups and structured pruning on a zoo of architectures exported from torch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from conftest import export, run_model
from onnxamc.errors import PolicyError
from onnxamc.graph import analyze, load_model
from onnxamc.graph.groups import channel_groups, kept_count
from onnxamc.actions import apply_policy
from onnxamc.passes.prune_channels import apply_plan, choose_channels, prune_channels
from onnxamc.policy import LayerAction, Policy
from prune_zoo import ZOO, LazyZoo, build, pruning_row, zoo_paths  # noqa: F401 (fixture)

@pytest.fixture(scope="session")
def zoo(zoo_paths):
    """{name: (shape-inferred model, input shape)}, loaded on first use."""
    return LazyZoo(lambda name: (load_model(zoo_paths[name]), ZOO[name][1]))


def feed(shape, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"input": rng.random((batch,) + tuple(shape[1:]), dtype=np.float32)}


def prunable_layers(analysis) -> list[str]:
    return [layer for g in analysis.groups if g.prunable for layer in g.layers]


@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_model_has_prunable_groups(zoo, name):
    analysis = channel_groups(zoo[name][0])
    assert prunable_layers(analysis), [g.to_dict() for g in analysis.groups]
    out_group = analysis.group_of(analyze(zoo[name][0]).layers[-1].name)
    assert out_group.blocked_by == "model output 'logits'"


@pytest.mark.parametrize("name", list(ZOO))
def test_uniform_half_is_valid_with_the_predicted_macs(zoo, name):
    row = pruning_row(zoo[name][0])
    assert row["failures"] == 0 and row["prunable"] >= 1
    assert row["predicted"] == row["measured"] < row["macs"]


@pytest.mark.parametrize("name", list(ZOO))
def test_identity_policy_gives_identical_outputs(zoo, name):
    model, shape = zoo[name]
    layers = analyze(model).layer_names
    policy = Policy({n: LayerAction(keep=1.0) for n in layers})
    out = apply_policy(model, policy)
    x = feed(shape)
    assert np.array_equal(run_model(out, x)[0], run_model(model, x)[0])
    analysis = channel_groups(model)
    everything = analysis.plan(choose_channels(model, analysis, {}, 8, "l1"))
    info = analyze(model)
    assert everything.predict() == (info.macs, info.params)


@pytest.mark.parametrize("name", list(ZOO))
def test_removing_dead_channels_changes_nothing(zoo, name):
    """Zero every weight that reads a channel, then prune exactly those channels: the
    pruned model must compute what the zeroed model computes (the rules are right)."""
    model, shape = zoo[name]
    analysis = channel_groups(model)
    rng = np.random.default_rng(1)
    ratios = {g.index: float(rng.uniform(0.2, 0.9)) for g in analysis.groups if g.prunable
              and not g.mixed}  # statistics over channels change when channels go
    plan = analysis.plan(choose_channels(model, analysis, ratios, 1, "l1"))
    zeroed = _zero_consumers(model, analysis, plan)
    pruned = apply_plan(zeroed, plan)
    x = feed(shape)
    np.testing.assert_allclose(run_model(pruned, x)[0], run_model(zeroed, x)[0],
                               rtol=1e-4, atol=1e-5)
    assert analyze(pruned).macs < analyze(model).macs


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(list(ZOO)), data=st.data(),
       multiple=st.sampled_from([1, 4, 8]))
def test_random_keep_ratios_give_valid_models_with_predicted_cost(zoo, name, data, multiple):
    model, shape = zoo[name]
    analysis = channel_groups(model)
    keep = {layer: data.draw(st.floats(0.05, 1.0), label=layer)
            for layer in prunable_layers(analysis)}
    from onnxamc.passes.prune_channels import group_ratios

    plan = analysis.plan(choose_channels(model, analysis, group_ratios(analysis, keep),
                                         multiple, "l2"))
    pruned = prune_channels(model, keep, multiple, "l2", analysis=analysis)
    onnx.checker.check_model(pruned, full_check=True)
    y = run_model(pruned, feed(shape))[0]
    assert y.shape == run_model(model, feed(shape))[0].shape
    info = analyze(pruned)
    assert (info.macs, info.params) == plan.predict()
    assert [i.name for i in pruned.graph.input] == [i.name for i in model.graph.input]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "squeeze_excite", "densenet"])
def test_torchscript_export_with_batchnorm_nodes_prunes_exactly(name):
    """The TorchScript exporter keeps BatchNormalization nodes (training=PRESERVE) and
    writes Linear as Transpose + MatMul: other patterns, same guarantees."""
    import io

    import torch

    shape = ZOO[name][1]
    buffer = io.BytesIO()
    torch.onnx.export(build(name), (torch.rand(*shape),), buffer, dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    model = load_model(onnx.load_from_string(buffer.getvalue()))
    assert "BatchNormalization" in {n.op_type for n in model.graph.node}
    analysis = channel_groups(model)
    ratios = {g.index: 0.5 for g in analysis.groups if g.prunable}
    plan = analysis.plan(choose_channels(model, analysis, ratios, 1, "l1"))
    zeroed = _zero_consumers(model, analysis, plan)
    pruned = apply_plan(zeroed, plan)
    x = feed(shape)
    np.testing.assert_allclose(run_model(pruned, x)[0], run_model(zeroed, x)[0], rtol=1e-4,
                               atol=1e-5)
    info = analyze(pruned)
    assert (info.macs, info.params) == plan.predict() and info.macs < analyze(model).macs / 2


def test_kept_count_rounds_to_the_multiple_and_keeps_one():
    assert kept_count(64, 0.5) == 32
    assert kept_count(64, 0.3) == 16  # 19.2 -> 16
    assert kept_count(64, 0.01) == 8
    assert kept_count(6, 0.01) == 1
    assert kept_count(6, 0.5, multiple=8) == 3
    assert kept_count(30, 0.5, multiple=1) == 15
    assert kept_count(30, 1.0) == 30


def test_keep_on_output_layer_is_one_line_error_naming_the_blocker(zoo):
    model, _ = zoo["plain"]
    with pytest.raises(PolicyError) as err:
        prune_channels(model, {"fc": 0.5})
    message = str(err.value)
    assert "\n" not in message and "'fc'" in message and "model output 'logits'" in message


def test_op_without_rule_blocks_its_group_and_names_it(tmp_path):
    import torch
    from torch import nn

    class Shuffle(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 3, padding=1)
            self.b = nn.Conv2d(4, 8, 3, padding=1)
            self.c = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            y = nn.functional.pixel_shuffle(torch.relu(self.a(x)), 2)
            return self.fc(self.c(torch.relu(self.b(y))).mean((2, 3)))

    model = load_model(export(Shuffle(), (2, 3, 4, 4), tmp_path / "ps.onnx"))
    analysis = channel_groups(model)
    assert "DepthToSpace" in analysis.group_of("a").blocked_by
    assert analysis.group_of("b").prunable
    with pytest.raises(PolicyError, match=r"layer 'a'.*DepthToSpace"):
        apply_policy(model, Policy({"a": LayerAction(keep=0.5)}))
    out = apply_policy(model, Policy({"b": LayerAction(keep=0.5)}))
    assert run_model(out, feed((1, 3, 4, 4)))[0].shape == (3, 10)


def test_unfolded_batchnorm_is_pruned_with_its_conv():
    model = _conv_bn_model()
    analysis = channel_groups(model)
    assert analysis.group_of("conv1").prunable
    plan = analysis.plan(choose_channels(model, analysis, {analysis.group_of("conv1").index: 0.5},
                                         1, "l1"))
    zeroed = _zero_consumers(model, analysis, plan)
    pruned = apply_plan(zeroed, plan)
    bn_mean = numpy_helper.to_array(next(i for i in pruned.graph.initializer
                                         if i.name == "bn.mean"))
    assert bn_mean.shape == (4,)
    x = {"x": np.random.default_rng(0).random((2, 3, 6, 6), dtype=np.float32)}
    np.testing.assert_allclose(run_model(pruned, x)[0], run_model(zeroed, x)[0], rtol=1e-5,
                               atol=1e-6)


def test_attention_heads_move_whole(zoo):
    model, _ = zoo["transformer"]
    analysis = channel_groups(model)
    heads = next(g for g in analysis.groups if len(g.layers) == 3 and g.channels == 4)
    assert heads.prunable  # q, k, v projections tied per head; 4 heads
    pruned = prune_channels(model, {heads.layers[0]: 0.5}, multiple=1)
    shapes = {i.name: list(i.dims) for i in pruned.graph.initializer}
    reshape_consts = [v for v in shapes.values() if v == [4]]
    assert reshape_consts
    assert analyze(pruned).macs < analyze(model).macs


def test_reconstruction_lowers_error_on_held_out_data(zoo):
    model, shape = zoo["resnet"]
    layers = prunable_layers(channel_groups(model))
    keep = {layer: 0.5 for layer in layers}
    calibration = [feed(shape, 64, seed) for seed in (1, 2)]
    held_out = feed(shape, 64, seed=3)
    reference = run_model(model, held_out)[0]
    plain = prune_channels(model, keep, multiple=1)
    rebuilt = prune_channels(model, keep, multiple=1, calibration=lambda: calibration)
    error = lambda m: float(np.mean((run_model(m, held_out)[0] - reference) ** 2))
    assert error(rebuilt) < 0.5 * error(plain)
    assert analyze(rebuilt).macs == analyze(plain).macs


def test_apply_policy_prunes_then_quantizes_by_layer_name(zoo):
    model, shape = zoo["plain"]
    policy = Policy({"c1.0": LayerAction(keep=0.5, bits=8), "c2.0": LayerAction(keep=0.5)})
    calibration = [feed(shape, 8)]
    out = apply_policy(model, policy, lambda: calibration)
    ops = [n.op_type for n in out.graph.node]
    assert "QuantizeLinear" in ops
    assert run_model(out, feed(shape))[0].shape == (3, 10)


@pytest.mark.parametrize("field,value", [("keep", 0.0), ("keep", 1.5), ("rank", 0),
                                         ("remove", 1), ("keep", True)])
def test_structural_policy_fields_are_range_checked(field, value):
    with pytest.raises(PolicyError, match=field):
        LayerAction.from_dict({field: value}, "conv")


def test_structural_policy_fields_round_trip_json():
    policy = Policy({"a": LayerAction(keep=0.5), "b": LayerAction(rank=0.25, remove=True)})
    again = Policy.from_json(policy.to_json())
    assert again.action("a").to_dict() == {"keep": 0.5}
    assert again.action("b").to_dict() == {"remove": True, "rank": 0.25}


# --- helpers ------------------------------------------------------------------------
def _zero_consumers(model, analysis, plan):
    """A copy where every layer weight slice reading a removed channel is zero."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    for slot in analysis.tracer.params:
        if slot.reads:
            init = inits[slot.tensor]
            w = numpy_helper.to_array(init).copy()
            index = [slice(None)] * w.ndim
            index[slot.axis] = ~plan.alive[slot.atoms]
            w[tuple(index)] = 0
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    return out


def _conv_bn_model() -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu -> Conv -> GlobalAveragePool -> Flatten -> Gemm,
    built by hand so that the BatchNormalization node is not folded."""
    rng = np.random.default_rng(0)

    def init(name, *shape, low=-1.0, high=1.0):
        return numpy_helper.from_array(rng.uniform(low, high, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn.scale", "bn.bias", "bn.mean",
                                                "bn.var"], ["b1"], "bn"),
        helper.make_node("Relu", ["b1"], ["r1"], "relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"], "pool"),
        helper.make_node("Flatten", ["p"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], "fc", transB=1),
    ]
    inits = [init("w1", 8, 3, 3, 3), init("bn.scale", 8, low=0.5, high=1.5),
             init("bn.bias", 8), init("bn.mean", 8), init("bn.var", 8, low=0.5, high=1.5),
             init("w2", 6, 8, 3, 3), init("w3", 5, 6), init("b3", 5)]
    graph = helper.make_graph(nodes, "convbn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             ["batch", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             ["batch", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    return load_model(model)


def test_group_normalization_op_keeps_groups_even():
    """GroupNormalization (opset 21, per-channel scale): each group keeps the same number
    of channels, so num_groups stays valid."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((8, 3, 3, 3)), "gn.scale": rng.uniform(0.5, 1.5, 8),
               "gn.bias": rng.standard_normal(8), "w2": rng.standard_normal((4, 8, 1, 1))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             helper.make_node("GroupNormalization", ["c1", "gn.scale", "gn.bias"], ["g"], "gn",
                              num_groups=2),
             helper.make_node("Relu", ["g"], ["r"], "relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], "conv2")]
    graph = helper.make_graph(
        nodes, "gn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 5, 5])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)],
                                         ir_version=10))
    group = channel_groups(model).group_of("conv1")
    assert group.prunable and group.channels == 4 and group.mixed  # positions tied
    pruned = prune_channels(model, {"conv1": 0.5}, multiple=1)
    shapes = {i.name: list(i.dims) for i in pruned.graph.initializer}
    assert shapes["w1"] == [4, 3, 3, 3] and shapes["gn.scale"] == [4]
    x = {"x": rng.random((2, 3, 5, 5), dtype=np.float32)}
    assert run_model(pruned, x)[0].shape == (2, 4, 5, 5)
