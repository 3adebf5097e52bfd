"""TVM targets: local llvm build equals onnxruntime, aarch64 cross-compilation, what TVM
cannot import, CUDA (skipped without a GPU)."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")

from onnxamc.runtime.measure import TargetMeter  # noqa: E402
from onnxamc.runtime.target import load_target  # noqa: E402
from onnxamc.runtime.tvm_build import build, export, unsupported_reason  # noqa: E402

from conftest import run_model  # noqa: E402

EM_AARCH64 = 183


def feed_for(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input": rng.random((1, 1, 8, 8), dtype=np.float32)}


def test_tvm_llvm_build_equals_onnxruntime(tiny_cnn):
    meter = TargetMeter(load_target("cpu-tvm"))
    feed = feed_for()
    prepared = meter.prepare(onnx.load(tiny_cnn), feed)
    got = prepared.outputs(feed)[0]
    want = run_model(tiny_cnn, feed)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    stats = meter.time([prepared], feed, warmup=2, runs=10)[0]
    assert stats.median_ms > 0 and stats.runs == 10


def test_tvm_time_evaluator(tiny_cnn):
    from onnxamc.runtime.tvm_build import LocalVM

    target = load_target("cpu-tvm")
    vm = LocalVM(build(onnx.load(tiny_cnn), target), target)
    samples = vm.time_evaluator_ms(feed_for(), repeat=5)
    assert len(samples) == 5 and all(s > 0 for s in samples)


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="cross compiler missing: apt-get install gcc-aarch64-linux-gnu")
def test_aarch64_cross_compile_gives_aarch64_elf(tiny_cnn, tmp_path):
    target = load_target("arm64-tvm")
    library = export(build(onnx.load(tiny_cnn), target), tmp_path / "tiny.so",
                     target.cross_compiler)
    header = library.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2  # 64-bit
    assert header[16] == 3  # ET_DYN: a shared object
    assert int.from_bytes(header[18:20], "little") == EM_AARCH64


def _qlinear_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 1, 4, 4])
    inits = [numpy_helper.from_array(np.array(v, dtype=t), n) for n, v, t in [
        ("s", 0.1, np.float32), ("z", 0, np.uint8), ("w", np.ones((1, 1, 1, 1)), np.int8),
        ("ws", 0.1, np.float32), ("wz", 0, np.int8)]]
    node = helper.make_node("QLinearConv", ["x", "s", "z", "w", "ws", "wz", "s", "z"], ["y"])
    return helper.make_model(helper.make_graph([node], "q", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _int4_qdq_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = helper.make_tensor("w", TensorProto.INT4, [4, 4], [1] * 16)
    s = numpy_helper.from_array(np.array(0.1, np.float32), "ws")
    nodes = [helper.make_node("DequantizeLinear", ["w", "ws"], ["wf"]),
             helper.make_node("MatMul", ["x", "wf"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "q4", [x], [y], [w, s]),
                             opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


@pytest.mark.parametrize("make, word", [(_qlinear_model, "QLinearConv"),
                                        (_int4_qdq_model, "INT4")])
def test_what_tvm_cannot_import_is_named(make, word):
    from onnxamc.errors import UnsupportedOnTargetError

    model = make()
    assert word in unsupported_reason(model)
    with pytest.raises(UnsupportedOnTargetError, match="not supported on this runtime"):
        TargetMeter(load_target("cpu-tvm")).prepare(model, {})


def test_int8_qdq_model_builds_on_tvm(tiny_cnn):
    """The int8 QDQ models the quantization pass writes are importable by TVM."""
    from onnxamc import api

    quantized = api.apply(tiny_cnn, api.uniform_policy(tiny_cnn, "bits=8"),
                          calibration="digits", calibration_samples=32)
    meter = TargetMeter(load_target("cpu-tvm"))
    feed = feed_for(1)
    got = meter.prepare(quantized, feed).outputs(feed)[0]
    want = run_model(quantized, feed)[0]
    assert got.shape == want.shape
    assert np.argmax(got) == np.argmax(want)


def _has_cuda() -> bool:
    import tvm

    return tvm.cuda(0).exist


@pytest.mark.skipif(not _has_cuda(), reason="no GPU here: TVM sees no CUDA device")
def test_cuda_tvm_build_equals_onnxruntime(tiny_cnn):
    meter = TargetMeter(load_target("cuda-tvm"))
    feed = feed_for()
    got = meter.prepare(onnx.load(tiny_cnn), feed).outputs(feed)[0]
    np.testing.assert_allclose(got, run_model(tiny_cnn, feed)[0], rtol=1e-3, atol=1e-4)


def test_cuda_tvm_compiles_without_a_gpu(tiny_cnn):
    """Code generation for CUDA needs no GPU (running it does: see the test above)."""
    from dataclasses import replace

    target = replace(load_target("cuda-tvm"), tvm_target={"kind": "cuda", "arch": "sm_80"})
    executable = build(onnx.load(tiny_cnn), target)

    def kinds(module) -> list[str]:
        return [module.kind] + [k for m in module.imports for k in kinds(m)]

    assert "cuda" in kinds(executable.mod.imports[0])  # kernels compiled for the GPU
    cpu = build(onnx.load(tiny_cnn), load_target("cpu-tvm"))
    assert "cuda" not in kinds(cpu.mod.imports[0])
