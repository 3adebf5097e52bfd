"""One test per channel rule, each on a tiny graph built with onnx.helper.

Every test builds the pattern a real export contains, checks which groups the tracer
finds (or why it blocks), prunes, and checks the pruned model computes exactly what the
original computes once the removed channels' readers are zeroed (the rule is right).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_model
from onnxamc.graph import analyze, load_model
from onnxamc.graph.groups import channel_groups
from onnxamc.graph.rules import passthrough, register_rule, rule_table, unregister_rule
from onnxamc.passes.prune_channels import apply_plan, choose_channels, prune_channels

RNG = np.random.default_rng(0)


def weights(*shape, low=-1.0, high=1.0) -> np.ndarray:
    return RNG.uniform(low, high, shape).astype(np.float32)


def graph(nodes, inputs: dict, outputs: dict, inits: dict, opset: int = 18,
          constants: dict | None = None, front_door: bool = True) -> onnx.ModelProto:
    """A shape-inferred model; `constants` become Constant nodes instead of initializers;
    `front_door=False` keeps the graph as built (what the front door would fold)."""
    constant_nodes = [helper.make_node("Constant", [], [name], name=f"const_{name}",
                                       value=numpy_helper.from_array(value, name))
                      for name, value in (constants or {}).items()]
    g = helper.make_graph(
        constant_nodes + nodes, "rule",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return load_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                                        ir_version=10), front_door=front_door)


def feeds(model, batch=2) -> dict:
    """Random inputs: floats, or token ids below 4 for integer inputs."""
    out = {}
    for value in model.graph.input:
        dims = [d.dim_value or batch for d in value.type.tensor_type.shape.dim]
        out[value.name] = RNG.integers(0, 4, dims) \
            if value.type.tensor_type.elem_type == TensorProto.INT64 \
            else RNG.random(dims, dtype=np.float32)
    return out


def prune_exactly(model, keep=0.5):
    """Prune every prunable group to `keep` and check the result equals the original with
    the removed channels' readers zeroed; returns (analysis, pruned model)."""
    analysis = channel_groups(model)
    ratios = {g.index: keep for g in analysis.groups if g.prunable and not g.mixed}
    plan = analysis.plan(choose_channels(model, analysis, ratios, 1, "l1"))
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(model)
    inits = {i.name: i for i in zeroed.graph.initializer}
    for slot in analysis.tracer.params:
        if slot.reads:
            w = numpy_helper.to_array(inits[slot.tensor]).copy()
            index = [slice(None)] * w.ndim
            index[slot.axis] = ~plan.alive[slot.atoms]
            w[tuple(index)] = 0
            inits[slot.tensor].CopyFrom(numpy_helper.from_array(w, slot.tensor))
    pruned = apply_plan(zeroed, plan)
    onnx.checker.check_model(pruned, full_check=True)
    x = feeds(model)
    for a, b in zip(run_model(pruned, x), run_model(zeroed, x)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert plan.predict()[0] == analyze(pruned).macs
    return analysis, pruned


def shapes(model) -> dict[str, list[int]]:
    return {i.name: list(i.dims) for i in model.graph.initializer}


# --- element-wise ---------------------------------------------------------------------
def test_bias_layer_scale_and_normalization_constants_are_sliced_with_the_group():
    """MatMul + bias Add, layer-scale Mul, Sub/Div normalization constants (per channel)."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"], "fc1"),
             helper.make_node("Add", ["m", "b1"], ["a"], "bias"),
             helper.make_node("Mul", ["gamma", "a"], ["s"], "scale"),
             helper.make_node("Sub", ["s", "mean"], ["c"], "center"),
             helper.make_node("Div", ["c", "std"], ["d"], "norm"),
             helper.make_node("Relu", ["d"], ["r"], "relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], "fc2")]
    model = graph(nodes, {"x": ["n", 5, 6]}, {"y": ["n", 5, 4]},
                  {"w1": weights(6, 8), "b1": weights(8), "gamma": weights(8),
                   "mean": weights(1, 8), "std": weights(8, low=0.5, high=1.5),
                   "w2": weights(8, 4)})
    analysis, pruned = prune_exactly(model)
    assert analysis.group_of("fc1").prunable
    s = shapes(pruned)
    assert s["b1"] == [4] and s["gamma"] == [4] and s["mean"] == [1, 4] and s["std"] == [4]
    assert s["w2"] == [4, 4]


def test_broadcast_axes_are_never_sliced():
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], "conv1"),
             helper.make_node("Mul", ["c", "one"], ["m"], "scalar_like"),
             helper.make_node("Add", ["m", "per_channel"], ["a"], "bias"),
             helper.make_node("Conv", ["a", "w2"], ["y"], "conv2")]
    model = graph(nodes, {"x": ["n", 3, 4, 4]}, {"y": ["n", 2, 4, 4]},
                  {"w1": weights(8, 3, 1, 1), "one": weights(1, 1, 1, 1),
                   "per_channel": weights(1, 8, 1, 1), "w2": weights(2, 8, 1, 1)})
    _, pruned = prune_exactly(model)
    s = shapes(pruned)
    assert s["one"] == [1, 1, 1, 1] and s["per_channel"] == [1, 4, 1, 1]


def test_a_shared_initializer_gets_one_sliced_copy_per_use():
    """The exporter collapses identical tensors (all-zero biases) into one initializer
    read by layers of different groups: each use keeps its own channels."""
    nodes = [helper.make_node("Conv", ["x", "w1", "zeros"], ["c1"], "conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
             helper.make_node("Conv", ["r1", "w2", "zeros"], ["c2"], "conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
             helper.make_node("Conv", ["r2", "w3", "zeros"], ["y"], "conv3")]
    model = graph(nodes, {"x": ["n", 3, 4, 4]}, {"y": ["n", 8, 4, 4]},
                  {"w1": weights(8, 3, 1, 1), "w2": weights(8, 8, 1, 1),
                   "w3": weights(8, 8, 1, 1), "zeros": np.zeros(8, np.float32)})
    pruned = prune_channels(model, {"conv1": 0.5, "conv2": 0.25}, multiple=1)
    onnx.checker.check_model(pruned, full_check=True)
    biases = {n.name: shapes(pruned)[n.input[2]] for n in pruned.graph.node if n.op_type == "Conv"}
    assert biases == {"conv1": [4], "conv2": [2], "conv3": [8]}
    assert run_model(pruned, feeds(model))[0].shape == (2, 8, 4, 4)


def test_a_non_constant_parameter_blocks_its_group_instead_of_crashing():
    """A bias reached through Identity (the front door folds these; the rule must not
    slice what it cannot edit: the IndexError of issue 12)."""
    nodes = [helper.make_node("Identity", ["zeros"], ["b"], "shared_bias"),
             helper.make_node("Conv", ["x", "w1", "b"], ["c1"], "conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["y"], "conv3")]
    model = graph(nodes, {"x": ["n", 3, 4, 4]}, {"y": ["n", 2, 4, 4]},
                  {"w1": weights(8, 3, 1, 1), "w2": weights(8, 8, 1, 1),
                   "w3": weights(2, 8, 1, 1), "zeros": np.zeros(8, np.float32)},
                  front_door=False)
    analysis = channel_groups(model)
    assert "'b' is not a constant" in analysis.group_of("conv1").blocked_by
    assert analysis.group_of("conv1").rule_failure is None  # a limit, not a bug
    assert analysis.group_of("conv2").prunable
    pruned = prune_channels(model, {"conv2": 0.5}, multiple=1)
    assert run_model(pruned, feeds(model))[0].shape == (2, 2, 4, 4)


# --- normalization --------------------------------------------------------------------
def test_layer_norm_scale_and_bias_from_constant_nodes_and_shared():
    """LayerNormalization over the channels with scale/bias as Constant nodes, the same
    scale shared by two LayerNorms of different groups."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"], "fc1"),
             helper.make_node("LayerNormalization", ["m1", "ones", "bias"], ["n1"], "ln1"),
             helper.make_node("MatMul", ["n1", "w2"], ["m2"], "fc2"),
             helper.make_node("LayerNormalization", ["m2", "ones", "bias"], ["n2"], "ln2"),
             helper.make_node("MatMul", ["n2", "w3"], ["y"], "fc3")]
    model = graph(nodes, {"x": ["n", 6]}, {"y": ["n", 3]},
                  {"w1": weights(6, 8), "w2": weights(8, 8), "w3": weights(8, 3)},
                  constants={"ones": weights(8, low=0.5, high=1.5), "bias": weights(8)})
    analysis = channel_groups(model)
    g1, g2 = analysis.group_of("fc1"), analysis.group_of("fc2")
    assert g1.prunable and g2.prunable and g1.mixed and g1.index != g2.index
    pruned = prune_channels(model, {"fc1": 0.5, "fc2": 0.25}, multiple=1)
    onnx.checker.check_model(pruned, full_check=True)
    s = shapes(pruned)
    ln = {n.name: (s[n.input[1]], s[n.input[2]]) for n in pruned.graph.node
          if n.op_type == "LayerNormalization"}
    assert ln == {"ln1": ([4], [4]), "ln2": ([2], [2])}
    assert run_model(pruned, feeds(model))[0].shape == (2, 3)


def test_instance_normalization_scale_and_bias_follow_the_channels():
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], "conv1"),
             helper.make_node("InstanceNormalization", ["c", "scale", "bias"], ["i"], "inorm"),
             helper.make_node("Conv", ["i", "w2"], ["y"], "conv2")]
    model = graph(nodes, {"x": ["n", 3, 4, 4]}, {"y": ["n", 2, 4, 4]},
                  {"w1": weights(8, 3, 1, 1), "scale": weights(8), "bias": weights(8),
                   "w2": weights(2, 8, 1, 1)})
    _, pruned = prune_exactly(model)
    assert shapes(pruned)["scale"] == [4] and shapes(pruned)["bias"] == [4]


# --- shape ops ------------------------------------------------------------------------
@pytest.mark.parametrize("with_axes", [False, True])
def test_pad_with_constant_pads_keeps_the_group_prunable(with_axes):
    """Explicit Pad before a convolution (TF 'SAME' padding), also with an `axes` input."""
    pads, extra = (([0, 0, 1, 1, 0, 0, 1, 1], []) if not with_axes
                   else ([1, 1, 1, 1], ["", "axes"]))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], "conv1"),
             helper.make_node("Pad", ["c", "pads"] + extra, ["p"], "pad"),
             helper.make_node("Conv", ["p", "w2"], ["y"], "conv2")]
    inits = {"w1": weights(8, 3, 1, 1), "pads": np.array(pads, np.int64),
             "w2": weights(2, 8, 3, 3)}
    if with_axes:
        inits["axes"] = np.array([2, 3], np.int64)
    model = graph(nodes, {"x": ["n", 3, 4, 4]}, {"y": ["n", 2, 4, 4]}, inits)
    analysis, pruned = prune_exactly(model)
    assert analysis.group_of("conv1").prunable


def test_pad_on_the_channel_axis_blocks_with_its_reason():
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], "conv1"),
             helper.make_node("Pad", ["c", "pads", "", "axes"], ["p"], "pad"),
             helper.make_node("Conv", ["p", "w2"], ["y"], "conv2")]
    model = graph(nodes, {"x": ["n", 3, 4, 4]}, {"y": ["n", 2, 4, 4]},
                  {"w1": weights(8, 3, 1, 1), "pads": np.array([1, 1], np.int64),
                   "axes": np.array([1], np.int64), "w2": weights(2, 10, 1, 1)})
    assert "pads the channel axis" in channel_groups(model).group_of("conv1").blocked_by


def test_gather_of_the_class_token_and_of_channel_indices():
    """Gather with a scalar index on the token axis (ViT head) passes the channels; a
    Gather of constant channel indices (as_strided) renumbers them after pruning."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"], "fc1"),
             helper.make_node("Gather", ["m", "zero"], ["cls"], "select", axis=1),
             helper.make_node("Gather", ["cls", "order"], ["g"], "as_strided", axis=1),
             helper.make_node("Reshape", ["g", "flat"], ["f"], "flatten"),
             helper.make_node("MatMul", ["f", "w2"], ["y"], "fc2")]
    order = np.arange(8, dtype=np.int64)[::-1].reshape(1, 8, 1).copy()
    model = graph(nodes, {"x": [2, 5, 6]}, {"y": [2, 3]},
                  {"w1": weights(6, 8), "zero": np.array(0, np.int64), "order": order,
                   "flat": np.array([2, 8], np.int64), "w2": weights(8, 3)})
    analysis, pruned = prune_exactly(model)
    assert analysis.group_of("fc1").prunable
    indices = numpy_helper.to_array(next(i for i in pruned.graph.initializer
                                         if i.name.startswith("order")))
    assert indices.shape == (1, 4, 1) and sorted(indices.ravel()) == [0, 1, 2, 3]


# --- convolutions ---------------------------------------------------------------------
def test_depthwise_over_the_model_input():
    """The input's channels are fixed: a depthwise conv over them has fixed output
    channels (multiplier 1), or only its multiplier can shrink (every group the same)."""
    def model_with(multiplier):
        nodes = [helper.make_node("Conv", ["x", "dw"], ["d"], "dw", group=3, pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["d"], ["r"], "relu"),
                 helper.make_node("Conv", ["r", "pw"], ["c"], "pw"),
                 helper.make_node("Relu", ["c"], ["r2"], "relu2"),
                 helper.make_node("Conv", ["r2", "w3"], ["y"], "out")]
        return graph(nodes, {"x": ["n", 3, 4, 4]}, {"y": ["n", 2, 4, 4]},
                     {"dw": weights(3 * multiplier, 1, 3, 3), "pw": weights(8, 3 * multiplier, 1, 1),
                      "w3": weights(2, 8, 1, 1)})

    fixed = channel_groups(model_with(1))
    assert "depthwise over fixed input channels" in fixed.group_of("dw").blocked_by
    assert fixed.group_of("pw").prunable  # the next layer is a source of its own
    analysis, pruned = prune_exactly(model_with(4))
    group = analysis.group_of("dw")
    assert group.prunable and group.channels == 4  # filter j of every input channel
    dw = next(n for n in pruned.graph.node if n.name == "dw")
    assert shapes(pruned)["dw"] == [6, 1, 3, 3]
    assert helper.get_attribute_value(dw.attribute[0]) == 3  # group count stays


@pytest.mark.parametrize("gate", ["HardSigmoid", "Sigmoid", "clip"])
def test_squeeze_excite_and_hard_swish_gates_tie_the_gated_channels(gate):
    """x * gate(x) (hard-swish) and x * sigmoid(fc(mean(x))) (squeeze-excite)."""
    if gate == "clip":  # hard-swish as TorchScript writes it: x * clip(x + 3, 0, 6) / 6
        act = [helper.make_node("Add", ["c", "three"], ["t"], "plus3"),
               helper.make_node("Clip", ["t", "lo", "hi"], ["cl"], "clip"),
               helper.make_node("Div", ["cl", "six"], ["h"], "div6")]
    else:
        act = [helper.make_node(gate, ["c"], ["h"], "gate")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], "conv1"), *act,
             helper.make_node("Mul", ["c", "h"], ["hs"], "hswish"),
             helper.make_node("ReduceMean", ["hs", "hw"], ["s"], "squeeze"),
             helper.make_node("Conv", ["s", "se1", "se1_b"], ["e1"], "se_reduce"),
             helper.make_node("Relu", ["e1"], ["e2"], "se_relu"),
             helper.make_node("Conv", ["e2", "se2", "se2_b"], ["e3"], "se_expand"),
             helper.make_node("HardSigmoid", ["e3"], ["g"], "se_gate"),
             helper.make_node("Mul", ["hs", "g"], ["o"], "excite"),
             helper.make_node("Conv", ["o", "w2"], ["y"], "conv2")]
    model = graph(nodes, {"x": ["n", 3, 4, 4]}, {"y": ["n", 2, 4, 4]},
                  {"w1": weights(8, 3, 1, 1), "three": np.array(3, np.float32),
                   "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
                   "six": np.array(6, np.float32), "hw": np.array([2, 3], np.int64),
                   "se1": weights(4, 8, 1, 1), "se1_b": weights(4), "se2": weights(8, 4, 1, 1),
                   "se2_b": weights(8), "w2": weights(2, 8, 1, 1)})
    analysis, _ = prune_exactly(model)
    assert analysis.group_of("conv1") is analysis.group_of("se_expand")
    assert analysis.group_of("conv1").prunable and analysis.group_of("se_reduce").prunable


# --- attention ------------------------------------------------------------------------
def _transformer_block(tokens=5, dim=8, heads=2) -> onnx.ModelProto:
    """Embedding, a stacked q/k/v projection split into heads (Reshape, Transpose, Split,
    Squeeze), scaled dot-product attention, output projection, residual, LayerNorm, MLP,
    residual, classifier: the graph timm's ViT exports."""
    hd = dim // heads
    n = helper.make_node
    nodes = [n("MatMul", ["x", "embed"], ["e0"], "embed"),
             n("Add", ["e0", "pos"], ["e"], "pos_embed"),
             n("MatMul", ["e", "qkv"], ["q0"], "qkv"),
             n("Add", ["q0", "qkv_b"], ["q1"], "qkv_bias"),
             n("Reshape", ["q1", "heads_shape"], ["q2"], "split_heads"),
             n("Transpose", ["q2"], ["q3"], "permute", perm=[2, 0, 3, 1, 4]),
             n("Split", ["q3", "ones3"], ["sq", "sk", "sv"], "unbind", axis=0),
             n("Squeeze", ["sq", "zero"], ["q"], "q"),
             n("Squeeze", ["sk", "zero"], ["k"], "k"),
             n("Squeeze", ["sv", "zero"], ["v"], "v"),
             n("Transpose", ["k"], ["kt"], "k_t", perm=[0, 1, 3, 2]),
             n("MatMul", ["q", "kt"], ["s0"], "scores"),
             n("Mul", ["s0", "scale"], ["s1"], "scale"),
             n("Softmax", ["s1"], ["p"], "softmax", axis=-1),
             n("MatMul", ["p", "v"], ["ctx0"], "context"),
             n("Transpose", ["ctx0"], ["ctx1"], "merge_t", perm=[0, 2, 1, 3]),
             n("Reshape", ["ctx1", "merge_shape"], ["ctx"], "merge_heads"),
             n("MatMul", ["ctx", "proj"], ["o0"], "proj"),
             n("Add", ["o0", "proj_b"], ["o"], "proj_bias"),
             n("Add", ["e", "o"], ["r1"], "residual1"),
             n("LayerNormalization", ["r1", "ln_w", "ln_b"], ["l"], "ln", axis=-1),
             n("MatMul", ["l", "fc1"], ["h0"], "fc1"),
             n("Add", ["h0", "fc1_b"], ["h1"], "fc1_bias"),
             n("Relu", ["h1"], ["h"], "act"),
             n("MatMul", ["h", "fc2"], ["m0"], "fc2"),
             n("Add", ["m0", "fc2_b"], ["m"], "fc2_bias"),
             n("Add", ["r1", "m"], ["r2"], "residual2"),
             n("ReduceMean", ["r2", "one"], ["pool"], "pool", keepdims=0),
             n("MatMul", ["pool", "head"], ["y"], "head")]
    inits = {"embed": weights(6, dim), "pos": weights(1, tokens, dim), "qkv": weights(dim, 3 * dim),
             "qkv_b": weights(3 * dim), "heads_shape": np.array([1, tokens, 3, heads, hd]),
             "ones3": np.array([1, 1, 1]), "zero": np.array([0]),
             "scale": np.array(hd ** -0.5, np.float32),
             "merge_shape": np.array([1, tokens, dim]), "proj": weights(dim, dim),
             "proj_b": weights(dim), "ln_w": weights(dim), "ln_b": weights(dim),
             "fc1": weights(dim, 4 * dim), "fc1_b": weights(4 * dim), "fc2": weights(4 * dim, dim),
             "fc2_b": weights(dim), "one": np.array([1]), "head": weights(dim, 3)}
    return graph(nodes, {"x": [1, tokens, 6]}, {"y": [1, 3]}, inits)


def test_attention_heads_mlp_width_and_residual_stream():
    model = _transformer_block()
    analysis = channel_groups(model)
    heads, mlp = analysis.group_of("qkv"), analysis.group_of("fc1")
    residual = analysis.group_of("embed")
    assert heads.prunable and heads.channels == 2 and heads.layers == ["qkv"]
    assert "proj" in heads.consumers  # the output projection loses the head's rows
    assert mlp.prunable and mlp.channels == 32 and mlp.layers == ["fc1"]
    assert residual.layers == ["embed", "proj", "fc2"] and residual.mixed
    _, pruned = prune_exactly(model)
    s = shapes(pruned)
    assert s["qkv"] == [8, 12] and s["proj"] == [4, 8] and s["fc1"] == [8, 16]
    assert numpy_helper.to_array(next(i for i in pruned.graph.initializer
                                      if i.name.startswith("heads_shape"))).tolist() == [1, 5, 3, 1, 4]


def _packed_attention(tokens=3, dim=16, heads=4, batch=1, merge_batch=False, mask=False):
    """torch's nn.MultiheadAttention as exported: one packed in-projection split into
    (q/k/v, embed), q/k/v picked by Gather, heads split by Reshape/Transpose, and with
    `merge_batch` the heads merged with a fixed batch (MobileViT's patches) for the
    batched MatMuls and split again; with `mask`, a padding mask expanded to every head
    is added to the scores."""
    hd = dim // heads
    n = helper.make_node
    nodes = [n("MatMul", ["x", "in_w"], ["p0"], "in_proj"),
             n("Add", ["p0", "in_b"], ["p1"], "in_bias"),
             n("Reshape", ["p1", "qkv_shape"], ["p2"], "unflatten")]
    for name, index in (("q", "i0"), ("k", "i1"), ("v", "i2")):
        nodes += [n("Gather", ["p2", index], [f"{name}0"], f"pick_{name}", axis=2),
                  n("Reshape", [f"{name}0", "head_shape"], [f"{name}1"], f"heads_{name}"),
                  n("Transpose", [f"{name}1"], [f"{name}2"], f"t_{name}", perm=[0, 2, 1, 3])]
        if merge_batch:
            nodes.append(n("Reshape", [f"{name}2", "merged_shape"], [f"{name}"], f"m_{name}"))
        else:
            nodes.append(n("Identity", [f"{name}2"], [name], f"id_{name}"))
    nodes += [n("Transpose", ["k"], ["kt"], "k_t", perm=[0, 2, 1] if merge_batch else [0, 1, 3, 2]),
              n("MatMul", ["q", "kt"], ["s"], "scores")]
    if mask:
        nodes += [n("Expand", ["mask", "mask_shape"], ["m"], "mask_per_head"),
                  n("Add", ["s", "m"], ["s0"], "masked")]
    else:
        nodes.append(n("Identity", ["s"], ["s0"], "unmasked"))
    nodes += [n("Softmax", ["s0"], ["a"], "softmax", axis=-1),
              n("MatMul", ["a", "v"], ["c0"], "context")]
    if merge_batch:
        nodes.append(n("Reshape", ["c0", "split_shape"], ["c1"], "unmerge"))
    else:
        nodes.append(n("Identity", ["c0"], ["c1"], "id_c"))
    nodes += [n("Transpose", ["c1"], ["c2"], "t_c", perm=[0, 2, 1, 3]),
              n("Reshape", ["c2", "out_shape"], ["c"], "merge_heads"),
              n("MatMul", ["c", "out_w"], ["y"], "out_proj")]
    inits = {"in_w": weights(dim, 3 * dim), "in_b": weights(3 * dim),
             "qkv_shape": np.array([batch, tokens, 3, dim]), "i0": np.array(0),
             "i1": np.array(1), "i2": np.array(2),
             "head_shape": np.array([batch, tokens, heads, hd]),
             "merged_shape": np.array([batch * heads, tokens, hd]),
             "split_shape": np.array([batch, heads, tokens, hd]),
             "out_shape": np.array([batch, tokens, dim]), "out_w": weights(dim, 5),
             "mask_shape": np.array([batch, heads, 1, tokens])}
    inputs = {"x": [batch, tokens, dim], **({"mask": [batch, 1, 1, tokens]} if mask else {})}
    return graph(nodes, inputs, {"y": [batch, tokens, 5]}, inits)


def test_a_packed_in_projection_prunes_whole_heads_of_q_k_and_v():
    model = _packed_attention()
    heads = channel_groups(model).group_of("in_proj")
    assert heads.prunable and heads.channels == 4 and "out_proj" in heads.consumers
    _, pruned = prune_exactly(model)
    s = shapes(pruned)
    assert s["in_w"] == [16, 24] and s["out_w"] == [8, 5]  # 2 heads of 4 in q, k and v


def test_heads_merged_with_a_fixed_batch_stay_prunable():
    model = _packed_attention(batch=4, merge_batch=True)
    heads = channel_groups(model).group_of("in_proj")
    assert heads.prunable and heads.channels == 4
    _, pruned = prune_exactly(model)
    merged = next(numpy_helper.to_array(i) for i in pruned.graph.initializer
                  if i.name.startswith("merged_shape"))
    assert merged.tolist() == [8, 3, 4]  # batch 4 x the 2 heads kept


def test_a_mask_expanded_to_every_head_leaves_the_heads_prunable():
    """The front door drops the Expand (the Add broadcasts anyway): the mask has no
    head axis of its own to block the heads."""
    model = _packed_attention(mask=True)
    assert "Expand" not in {n.op_type for n in model.graph.node}
    heads = channel_groups(model).group_of("in_proj")
    assert heads.prunable and heads.channels == 4
    prune_exactly(model)


def test_an_embedding_table_starts_the_residual_stream():
    """Token ids looked up in a constant table, plus positions, a residual block and a
    classifier: the table's columns are channels of the stream the block writes to."""
    n = helper.make_node
    nodes = [n("Gather", ["table", "ids"], ["e0"], "lookup", axis=0),
             n("Add", ["e0", "pos"], ["e"], "positions"),
             n("MatMul", ["e", "w1"], ["h"], "fc1"), n("Relu", ["h"], ["r"], "act"),
             n("MatMul", ["r", "w2"], ["o"], "fc2"), n("Add", ["e", "o"], ["s"], "residual"),
             n("ReduceMean", ["s", "one"], ["p"], "pool", keepdims=0),
             n("MatMul", ["p", "head"], ["y"], "head")]
    inits = {"table": weights(10, 8), "pos": weights(5, 8), "w1": weights(8, 16),
             "w2": weights(16, 8), "one": np.array([1]), "head": weights(8, 3)}
    g = helper.make_graph(
        nodes, "embedding", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = load_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)],
                                         ir_version=10))
    stream = channel_groups(model).group_of("fc2")
    assert stream.prunable and stream.channels == 8 and "head" in stream.consumers
    _, pruned = prune_exactly(model)
    s = shapes(pruned)
    assert s["table"] == [10, 4] and s["pos"] == [5, 4] and s["w2"] == [8, 4]


def test_an_lstm_reads_the_channels_of_the_convolution_before_it():
    """silero-vad's pattern: a 1-D convolution's channels, moved to the feature axis, feed
    an LSTM, whose weight W loses the pruned input columns; its hidden size stays."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1]),
             n("Transpose", ["c"], ["seq"], "to_time_major", perm=[2, 0, 1]),
             n("LSTM", ["seq", "W", "R", "B"], ["h"], "lstm", hidden_size=4)]
    inits = {"w": weights(8, 3, 3), "W": weights(1, 16, 8), "R": weights(1, 16, 4),
             "B": weights(1, 32)}
    model = graph(nodes, {"x": [1, 3, 6]}, {"h": [6, 1, 1, 4]}, inits)
    group = channel_groups(model).group_of("conv")
    assert group.prunable and group.channels == 8 and "lstm" in group.consumers
    _, pruned = prune_exactly(model)
    s = shapes(pruned)
    assert s["w"] == [4, 3, 3] and s["W"] == [1, 16, 4] and s["R"] == [1, 16, 4]


def _shuffled(front_door=True):
    """Two convolutions concatenated, then ShuffleNet's channel shuffle (groups of 2),
    then a convolution reading the shuffled channels."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["a"], "conv_a"), n("Conv", ["x", "w2"], ["b"], "conv_b"),
             n("Concat", ["a", "b"], ["ab"], "concat", axis=1),
             n("Reshape", ["ab", "grouped"], ["g0"], "shuffle_split"),
             n("Transpose", ["g0"], ["g1"], "shuffle_t", perm=[0, 2, 1, 3, 4]),
             n("Reshape", ["g1", "flat"], ["s"], "shuffle_merge"),
             n("Conv", ["s", "w3"], ["y"], "conv_c")]
    inits = {"w1": weights(4, 3, 1, 1), "w2": weights(4, 3, 1, 1), "w3": weights(5, 8, 1, 1),
             "grouped": np.array([1, 2, 4, 4, 4]), "flat": np.array([1, 8, 4, 4])}
    return graph(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 5, 4, 4]}, inits,
                 front_door=front_door)


def test_a_channel_shuffle_becomes_a_gather_whose_channels_prune_one_by_one():
    raw = _shuffled(front_door=False)
    model = load_model(raw)
    assert [n.op_type for n in model.graph.node].count("Gather") == 1
    assert not any(n.op_type in ("Reshape", "Transpose") for n in model.graph.node)
    x = feeds(raw)
    np.testing.assert_array_equal(run_model(model, x)[0], run_model(raw, x)[0])
    analysis = channel_groups(model)
    for conv in ("conv_a", "conv_b"):  # each alone, not tied across the shuffle's groups
        group = analysis.group_of(conv)
        assert group.prunable and group.channels == 4 and group.layers == [conv]
    _, pruned = prune_exactly(model)
    assert shapes(pruned)["w3"] == [5, 4, 1, 1]


# --- the registry and failures --------------------------------------------------------
def _custom_op_model(domain="my.ops"):
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], "conv1"),
             helper.make_node("Swish", ["c"], ["s"], "swish", domain=domain),
             helper.make_node("Conv", ["s", "w2"], ["y"], "conv2")]
    g = helper.make_graph(nodes, "custom",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [numpy_helper.from_array(weights(8, 3, 1, 1), "w1"),
                           numpy_helper.from_array(weights(2, 8, 1, 1), "w2")])
    g.value_info.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 8, 4, 4]))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18),
                                               helper.make_opsetid(domain, 1)])


def test_a_registered_rule_makes_a_custom_op_prunable():
    model = load_model(_custom_op_model(), front_door=False)
    assert "no channel rule" in channel_groups(model).group_of("conv1").blocked_by
    register_rule("Swish", passthrough, domain="my.ops")
    try:
        assert ("my.ops", "Swish") in rule_table()
        assert channel_groups(model).group_of("conv1").prunable
    finally:
        unregister_rule("Swish", domain="my.ops")
    assert not channel_groups(model).group_of("conv1").prunable


def test_a_failing_rule_is_logged_and_recorded_apart_from_unsupported(caplog):
    def broken(t, i, node):
        raise ValueError("a bug\nsecond line")

    model = load_model(_custom_op_model(), front_door=False)
    register_rule("Swish", broken, domain="my.ops")
    try:
        with caplog.at_level(logging.WARNING, logger="onnxamc.graph.tracer"):
            analysis = channel_groups(model)
    finally:
        unregister_rule("Swish", domain="my.ops")
    expected = "rule broken failed on Swish node 'swish': ValueError: a bug"
    group = analysis.group_of("conv1")
    assert group.rule_failure == expected and group.blocked_by == expected
    assert not group.prunable and analysis.rule_failures == [expected]
    assert expected in caplog.text
    assert analysis.group_of("conv2").rule_failure is None


def test_inspect_names_a_failed_rule_and_counts_groups(tmp_path, capsys):
    from onnxamc.cli import main

    def broken(t, i, node):
        raise KeyError("x")

    path = tmp_path / "custom.onnx"
    onnx.save(_custom_op_model(), str(path))
    register_rule("Swish", broken, domain="my.ops")
    try:
        assert main(["inspect", str(path)]) == 0
    finally:
        unregister_rule("Swish", domain="my.ops")
    out = capsys.readouterr().out
    assert "RULE FAILED: rule broken failed on Swish node 'swish': KeyError: 'x'" in out
    assert "0 groups prunable of 2, 1 blocked by rule failures" in out


# --- no tracebacks: the pass names what failed, the result is checked ---------------------
def _three_convs(bias: str = "b1"):
    nodes = [helper.make_node("Identity", ["zeros"], ["via_identity"], "id"),
             helper.make_node("Conv", ["x", "w1", bias], ["c1"], "conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], "conv2")]
    return graph(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]},
                 {"w1": weights(8, 3, 1, 1), "b1": weights(8), "zeros": np.zeros(8, np.float32),
                  "w2": weights(2, 8, 1, 1)})


def test_a_failing_edit_is_one_line_naming_node_op_and_rule():
    from onnxamc.errors import PassError

    model = _three_convs()
    analysis = channel_groups(model)
    plan = analysis.plan(choose_channels(model, analysis, {analysis.group_of("conv1").index: 0.5},
                                         1, "l1"))
    other = onnx.ModelProto()  # the plan's model with that bias gone: nothing to edit
    other.CopyFrom(model)
    other.graph.initializer.remove(next(i for i in other.graph.initializer if i.name == "b1"))
    with pytest.raises(PassError) as err:
        apply_plan(other, plan)
    message = str(err.value)
    assert "\n" not in message and "Conv node 'conv1'" in message and "(rule conv)" in message


def test_check_compressed_passes_good_models_and_names_what_is_wrong():
    from onnxamc.actions import apply_policy
    from onnxamc.errors import CheckError
    from onnxamc.policy import LayerAction, Policy
    from onnxamc.runtime.check import check_compressed

    model = _three_convs()
    check_compressed(model, apply_policy(model, Policy({"conv1": LayerAction(keep=0.5)})))
    check_compressed(model, apply_policy(model, Policy({})), unchanged=True)
    wider = onnx.ModelProto()
    wider.CopyFrom(model)
    w2 = next(i for i in wider.graph.initializer if i.name == "w2")
    w2.CopyFrom(numpy_helper.from_array(weights(3, 8, 1, 1), "w2"))
    del wider.graph.output[0].type.tensor_type.shape.dim[:]
    with pytest.raises(CheckError, match=r"output 'y' has shape \(1, 3, 4, 4\) after compression"):
        check_compressed(model, wider)
    with pytest.raises(CheckError, match="changed .* under a policy that changes nothing"):
        check_compressed(model, _three_convs(bias="zeros"), unchanged=True)
