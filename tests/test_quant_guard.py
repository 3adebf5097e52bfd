"""The latency guard: candidates timed beside the float model in real onnxruntime
sessions; the fastest not slower than float wins, else the model stays float and the
reason is one line. Differences are made large (1 vs 4 vs 12 convolutions) so that a
loaded machine cannot flip them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto as T, helper, numpy_helper

from onnxamc.graph import analyze, load_model
from onnxamc.policy import LayerAction, Policy
from onnxamc.quant_guard import guard, guarded_int8, interleaved_ratios, pays

FEED = {"x": np.random.default_rng(0).standard_normal((1, 32, 32, 32)).astype(np.float32)}


def convs(count: int) -> onnx.ModelProto:
    """`count` 3x3 convolutions of 32 channels on 32x32 (same input and output)."""
    rng = np.random.default_rng(count)
    nodes, inits, x = [], [], "x"
    for i in range(count):
        y = "y" if i == count - 1 else f"t{i}"
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [y], name=f"conv{i}", pads=[1, 1, 1, 1]))
        inits.append(numpy_helper.from_array(rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
                                             * 0.05, f"w{i}"))
        x = y
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 32, 32, 32])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 32, 32, 32])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_the_fastest_candidate_not_slower_than_float_wins():
    measure = interleaved_ratios(FEED, runs=20, warmup=3)
    result = guard(convs(4), {"light": lambda: convs(1), "heavy": lambda: convs(12)}, measure)
    assert result.label == "light" and result.ratio.median < 0.6
    assert result.tried["heavy"].median > 1.5
    assert result.message.startswith("int8 (light): latency x0.")


def test_no_candidate_pays_the_model_stays_float_with_one_line():
    reference = convs(1)
    result = guard(reference, {"heavy": lambda: convs(4)}, interleaved_ratios(FEED, runs=20, warmup=3))
    assert result.model is reference and result.label == "float" and result.ratio is None
    assert result.message.startswith("int8 does not pay on this target for this model (best x")
    assert "\n" not in result.message


def test_guarded_int8_never_returns_a_slower_model(tiny_cnn):
    model = load_model(tiny_cnn)
    x = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)
    policy = Policy({layer.name: LayerAction(bits=8) for layer in analyze(model).layers})
    result = guarded_int8(model, policy, lambda: [{"input": x}],
                          interleaved_ratios({"input": x[:1]}, runs=30, warmup=5))
    onnx.checker.check_model(result.model)
    assert set(result.tried) >= {"every fusable region", "regions that pay"}
    if result.label == "float":
        assert result.model is model and not any(pays(r) for r in result.tried.values())
    else:
        assert result.ratio.median <= 0.97 and result.ratio is result.tried[result.label]


def test_cli_apply_uniform_int8_says_what_it_wrote(tiny_cnn, tmp_path):
    out = tmp_path / "q.onnx"
    run = subprocess.run([sys.executable, "-m", "onnxamc.cli", "apply", str(tiny_cnn), "--uniform",
                          "bits=8", "--calibration", "random:16", "-o", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    verdict, wrote = run.stdout.strip().splitlines()[-2:]
    assert verdict.startswith(("int8 (", "int8 does not pay")), run.stdout
    assert wrote == f"wrote {out}" and out.exists()
