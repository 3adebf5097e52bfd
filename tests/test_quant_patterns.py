"""The fusion table against onnxruntime itself: for every op of quant_patterns.ORT_CPU a
tiny graph (layer -> op -> layer) is quantized by the placement, and onnxruntime's
optimized graph must show the op fused, run on int8 or absorbed, and no quantized op
left float. Ops outside the table stay float and bound the regions; wrapping one in
Q/DQ anyway (the old neighbourhood rule) shows as an unfused op."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper, numpy_helper

from onnxamc.passes.quant_patterns import (ABSORBED, COMPUTE, FUSED, INT8, ORT_CPU, forms_for,
                                           preferred_int8, role)
from onnxamc.passes.quant_placement import place
from onnxamc.passes.quantize import WeightSpec, _Feeds, quantize_static_layers, static_placement
from onnxamc.quant_guard import fusion_report, optimized_graph

C = 8  # channels
RNG = np.random.default_rng(0)


def _init(name, *shape):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32) * 0.3, name)


def _ints(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _model(nodes, inits, x_shape, y_shape) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", T.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def conv(name, x, y, c_in=C, c_out=C):
    return helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [y], name=name), \
        [_init(f"{name}.w", c_out, c_in, 1, 1), _init(f"{name}.b", c_out)]


def around(op_nodes, op_inits=(), c_mid=C):
    """conv1 -> the op's nodes (reading 'a', writing 'b') -> conv2."""
    n1, i1 = conv("conv1", "x", "a")
    n2, i2 = conv("conv2", "b", "y", c_mid)
    return _model([n1, *op_nodes, n2], [*i1, *op_inits, *i2], (1, C, 8, 8), None)


def binary(op):
    n0, i0 = conv("conv0", "x", "a2")
    n1, i1 = conv("conv1", "x", "a")
    c_mid = 2 * C if op == "Concat" else C
    node = helper.make_node(op, ["a", "a2"], ["b"], name="op", **({"axis": 1} if op == "Concat" else {}))
    n2, i2 = conv("conv2", "b", "y", c_mid)
    return _model([n0, n1, node, n2], [*i0, *i1, *i2], (1, C, 8, 8), None)


def gemm_after(x, name="fc", k=C, n=4):
    return helper.make_node("Gemm", [x, f"{name}.w", f"{name}.b"], ["y"], name=name, transB=1), \
        [_init(f"{name}.w", n, k), _init(f"{name}.b", n)]


def unary(op, **attrs):
    return around([helper.make_node(op, ["a"], ["b"], name="op", **attrs)])


def graph_for(op: str) -> onnx.ModelProto:
    """A small model with `op` (named 'op') between two layers."""
    if op in ("Add", "Mul", "Concat"):
        return binary(op)
    if op == "Conv":
        return unary("Relu")
    if op in ("Gemm", "MatMul"):
        w = [_init("fc1.w", 16, 16)]
        first = helper.make_node("MatMul", ["x", "fc1.w"], ["a"], name="fc1") if op == "MatMul" \
            else helper.make_node("Gemm", ["x", "fc1.w"], ["a"], name="fc1", transB=1)
        nodes = [first, helper.make_node("Relu", ["a"], ["b"], name="op"),
                 helper.make_node(op, ["b", "fc2.w"], ["y"], name="fc2",
                                  **({"transB": 1} if op == "Gemm" else {}))]
        return _model(nodes, [*w, _init("fc2.w", 16, 16)], (4, 16), None)
    if op in ("GlobalAveragePool", "Squeeze", "Flatten"):
        first, first_inits = conv("conv1", "x", "a")
        fc, fc_inits = gemm_after("b")
        pool = helper.make_node("GlobalAveragePool", ["a"], ["p"],
                                name="op" if op == "GlobalAveragePool" else "gap")
        last = helper.make_node("Squeeze", ["p", "axes"], ["b"], name="op" if op == "Squeeze" else "sq")
        if op == "Flatten":
            last = helper.make_node("Flatten", ["p"], ["b"], name="op")
        return _model([first, pool, last, fc], [*first_inits, _ints("axes", [2, 3]), *fc_inits],
                      (1, C, 8, 8), None)
    if op == "Unsqueeze":
        nodes = [helper.make_node("Gemm", ["x", "fc.w", "fc.b"], ["a"], name="fc", transB=1),
                 helper.make_node("Unsqueeze", ["a", "axes"], ["b"], name="op"),
                 conv("conv2", "b", "y")[0]]
        return _model(nodes, [_init("fc.w", C, 16), _init("fc.b", C), _ints("axes", [2, 3]),
                              *conv("conv2", "b", "y")[1]], (1, 16), None)
    if op == "Reshape":
        return around([helper.make_node("Reshape", ["a", "shape"], ["b"], name="op")],
                      [_ints("shape", [1, C * 4, 4, 4])], c_mid=C * 4)
    if op == "Transpose":
        return unary("Transpose", perm=[0, 1, 3, 2])
    if op == "Resize":
        scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
        return around([helper.make_node("Resize", ["a", "", "scales"], ["b"], name="op",
                                        mode="nearest")], [scales])
    if op in ("MaxPool", "AveragePool"):
        return unary(op, kernel_shape=[2, 2], strides=[2, 2])
    if op == "LeakyRelu":
        return unary(op, alpha=0.1)
    if op == "Clip":
        lo, hi = (numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((0, "lo"), (6, "hi")))
        return around([helper.make_node("Clip", ["a", "lo", "hi"], ["b"], name="op")], [lo, hi])
    return unary(op)


def layers_of(model):
    return {n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")
            and n.input[1] in {i.name for i in model.graph.initializer}}


def quantized(model):
    layers = layers_of(model)
    feeds = [{"x": RNG.standard_normal(tuple(d.dim_value for d in model.graph.input[0].type
                                             .tensor_type.shape.dim)).astype(np.float32)}
             for _ in range(4)]
    chosen = set(place(model, layers, min_macs_per_border_element=0).nodes_to_quantize)
    q = quantize_static_layers(model, {n: WeightSpec() for n in layers}, feeds,
                               min_macs_per_border_element=0)
    return q, chosen, feeds


@pytest.mark.parametrize("op", sorted(ORT_CPU))
def test_every_table_entry_is_what_onnxruntime_does(op):
    model = graph_for(op)
    q, chosen, _ = quantized(model)
    op_role, fused_as = ORT_CPU[op]
    if op_role != COMPUTE:
        assert "op" in chosen, f"{op} should be inside the int8 region"
    report = fusion_report(q, chosen)
    assert report.unfused == [], report.summary()
    optimized_ops = {n.op_type for n in optimized_graph(q).graph.node}
    if op_role in (COMPUTE, FUSED):
        assert report.integer_ops.get(fused_as), report.summary()
    elif op_role == INT8:
        assert fused_as in optimized_ops  # still there, running on the int8 tensor
    elif op_role == ABSORBED:
        assert op not in optimized_ops, report.summary()
    assert report.activation_conversions <= 2 + (op in ("Add", "Mul", "Concat")), report.summary()


@pytest.mark.parametrize("op", ["HardSwish", "Erf", "Softplus", "Tanh"])
def test_ops_outside_the_table_bound_the_regions(op):
    """The float op splits the layers into two regions, each paying for the op's
    tensors at its border (the old rule made one region of them and priced nothing)."""
    model = unary(op)
    placement = place(model, {"conv1", "conv2"}, min_macs_per_border_element=0)
    assert role(op) is None and [r.layers for r in placement.regions] == [["conv1"], ["conv2"]]
    q, chosen, _ = quantized(model)
    report = fusion_report(q, chosen)
    assert "op" not in chosen and report.unfused == []
    assert report.integer_ops["QLinearConv"] == 2


def layer_norm_model():
    scale, bias = _init("ln.s", 8), _init("ln.b", 8)
    return around([helper.make_node("Transpose", ["a"], ["t"], name="t1", perm=[0, 2, 3, 1]),
                   helper.make_node("LayerNormalization", ["t", "ln.s", "ln.b"], ["n"], name="op",
                                    axis=-1),
                   helper.make_node("Transpose", ["n"], ["b"], name="t2", perm=[0, 3, 1, 2])],
                  [scale, bias])


def test_layer_norm_is_a_region_border_never_quantized():
    q, chosen, _ = quantized(layer_norm_model())
    assert "op" not in chosen and {"t1", "t2"} <= chosen
    report = fusion_report(q, chosen)
    assert report.unfused == [] and report.integer_ops["QLinearConv"] == 2
    assert report.between_regions == ["LayerNormalization op"]


def test_the_report_sees_a_quantized_op_onnxruntime_left_float():
    """onnxruntime's own quantizer wraps LayerNormalization in Q/DQ (QDQNormalization);
    its CPU provider has no integer LayerNorm, so the op stays float between them."""
    import tempfile

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = layer_norm_model()
    feeds = [{"x": RNG.standard_normal((1, C, 8, 8)).astype(np.float32)} for _ in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, f"{tmp}/in.onnx")
        quantize_static(f"{tmp}/in.onnx", f"{tmp}/q.onnx", _Feeds(feeds),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8)
        wrapped = onnx.load(f"{tmp}/q.onnx")
    assert fusion_report(wrapped, {"op"}).unfused == ["LayerNormalization op"]


def test_regions_that_do_not_pay_for_their_conversions_stay_float():
    """A depthwise 3x3 alone between float ops does 9 MACs per output element, 4.5 per
    converted element (input and output): its conversions cost more than int8 saves; a
    64 -> 64 1x1 does 32 per converted element."""
    dw = helper.make_node("Conv", ["x", "dw.w"], ["a"], name="dw", group=64, pads=[1, 1, 1, 1])
    act = helper.make_node("HardSwish", ["a"], ["b"], name="act")
    pw = helper.make_node("Conv", ["b", "pw.w"], ["y"], name="pw")
    model = _model([dw, act, pw], [_init("dw.w", 64, 1, 3, 3), _init("pw.w", 64, 64, 1, 1)],
                   (1, 64, 16, 16), None)
    placement = place(model, {"dw", "pw"})
    assert placement.int8_layers == ["pw"] and placement.float_layers == ["dw"]
    reasons = {r.layers[0]: r.reason for r in placement.regions}
    assert reasons["dw"].startswith("4.5 MACs per converted element")
    assert reasons["pw"].startswith("32.0 MACs per converted element")


def test_forms_per_op():
    assert [f.name for f in forms_for("Conv")] == ["int8-static"]
    assert forms_for("MatMul")[0].name == "int8-dynamic"
    assert {f.name for f in forms_for("Gather")} == {"embedding-int8", "embedding-int4"}
    assert forms_for("LayerNormalization") == []
    assert preferred_int8("MatMul") == {"bits": 8, "dynamic": True}
    assert preferred_int8("Conv") == {"bits": 8}
    with pytest.raises(ValueError, match="no quantization pattern table"):
        forms_for("Conv", "tensorrt")


def test_tvm_runs_qdq_in_float_so_its_table_is_empty():
    """TVM's Relax frontend dequantizes and convolves in float32: no region pays there."""
    tvm_onnx = pytest.importorskip("tvm.relax.frontend.onnx")
    q, _, _ = quantized(unary("Relu"))
    text = tvm_onnx.from_onnx(q, keep_params_in_input=False).script()
    convs = [line for line in text.splitlines() if "R.nn.conv2d(" in line]
    assert "R.dequantize(" in text and convs and all('dtype="float32"' in c for c in convs)
    assert all(not r.pays for r in place(unary("Relu"), {"conv1", "conv2"}, "tvm").regions)
    assert forms_for("Conv", "tvm") == []


ZOO_CONVNETS = ["tv_mobilenet_v3_small_ts", "timm_convnext_atto_ts", "tv_shufflenet_v2_x0_5_dynamo",
                "timm_efficientnet_b0_ts", "timm_resnet18_ts"]


@pytest.mark.parametrize("zoo_model", ZOO_CONVNETS, indirect=True)
def test_uniform_int8_on_real_exports_leaves_no_quantized_op_float(zoo_model):
    """Hard-swish, squeeze-excite, LayerNorm, GELU, channel shuffle, SiLU, weights shared
    through Identity: every op the placement quantizes becomes an integer kernel or runs
    on int8, and every layer of the model is int8 (threshold 0: all regions)."""
    from onnxamc.graph import analyze, load_model

    model = load_model(zoo_model.path)
    layers = {layer.name for layer in analyze(model).layers}
    rng = np.random.default_rng(0)
    feeds = [{i.name: i.draw(rng) for i in zoo_model.entry.inputs} for _ in range(2)]
    specs = {n: WeightSpec() for n in layers}
    q = quantize_static_layers(model, specs, feeds, min_macs_per_border_element=0)
    chosen = set(static_placement(model, specs, min_macs_per_border_element=0).nodes_to_quantize)
    report = fusion_report(q, chosen)
    assert report.unfused == [], report.summary()
    fused = report.integer_ops.get("QLinearConv", 0) + report.integer_ops.get("QGemm", 0) \
        + report.integer_ops.get("QLinearMatMul", 0)
    assert fused == len(layers), report.summary()
