"""Targets: TOML files, `onnxamc targets`, --target on bench, onnxruntime CPU and CUDA."""

from __future__ import annotations

import math

import onnx
import pytest

from onnxamc import api
from onnxamc.cli import main
from onnxamc.errors import TargetError
from onnxamc.runtime.target import load_target, shipped_targets

SHIPPED = {"cpu-ort", "cpu-tvm", "cuda-ort", "cuda-tvm", "arm64-ort", "arm64-tvm"}


def has_cuda_ort() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def test_shipped_targets_are_valid():
    assert SHIPPED <= set(shipped_targets())
    for name in SHIPPED:
        t = load_target(name)
        assert t.name == name and t.runtime in ("onnxruntime", "tvm")
        if t.runtime == "tvm":
            assert isinstance(t.tvm_target, dict) and "kind" in t.tvm_target
    arm = load_target("arm64-tvm")
    assert arm.is_remote and arm.tvm_target["mtriple"] == "aarch64-linux-gnu"
    assert arm.cross_compiler == "aarch64-linux-gnu-gcc"


@pytest.mark.parametrize("text, message", [
    ('runtime = "tensorrt"', "runtime must be one of"),
    ('runtime = "tvm"\n[tvm]\ntarget = "llvm"', "rejects target strings"),
    ('runtime = "onnxruntime"\nthreds = 2', "unknown key threds"),
    ('runtime = "onnxruntime"\ndevice = "remote"', "needs remote.key"),
    ('runtime = "onnxruntime"\ndevice = "remote"\n[remote]\nkey = "x"\ntracker = "nohost"',
     "HOST:PORT"),
    ('runtime = "tvm"\ndevice = "cpu"\n[tvm]\ntarget = { kind = "cuda" }', "does not match"),
])
def test_malformed_target_is_a_one_line_error(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TargetError, match=message) as info:
        load_target(path)
    assert "\n" not in str(info.value)


def test_unknown_target_name():
    with pytest.raises(TargetError, match="no target 'nope'"):
        load_target("nope")


def test_targets_command_lists_and_validates(tmp_path, capsys):
    bad = tmp_path / "broken.toml"
    bad.write_text('runtime = "onnxruntime"\nthreads = 0')
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert name in out
    assert main(["targets", str(bad)]) == 1
    assert "INVALID" in capsys.readouterr().out


def test_bench_on_cpu_ort_target(tiny_cnn):
    """onnxruntime CPU latency through the target, the threads shortcut still valid."""
    by_target = api.bench([tiny_cnn], "digits", runs=20, eval_samples=64, target="cpu-ort")[0]
    by_threads = api.bench([tiny_cnn], "digits", threads=1, runs=20, eval_samples=64)[0]
    for m in (by_target, by_threads):
        assert m.latency.median_ms > 0 and m.latency.runs == 20
        assert m.target == "cpu-ort"
        assert m.energy["kind"] in ("measured", "estimated")
    assert by_target.quality == by_threads.quality


def test_bench_cli_takes_target_path(tiny_cnn, tmp_path, capsys):
    path = tmp_path / "two-threads.toml"
    path.write_text('runtime = "onnxruntime"\ndevice = "cpu"\nthreads = 2\n')
    assert main(["bench", str(tiny_cnn), "--no-data", "--runs", "5", "--target", str(path),
                 "--json"]) == 0
    assert '"target": "two-threads"' in capsys.readouterr().out


@pytest.mark.skipif(has_cuda_ort(), reason="a CUDA execution provider exists here")
def test_cuda_target_without_gpu_is_one_line_error(tiny_cnn, capsys):
    assert main(["bench", str(tiny_cnn), "--no-data", "--target", "cuda-ort"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs CUDA" in err and "\n" not in err


@pytest.mark.skipif(not has_cuda_ort(), reason="no GPU here: onnxruntime has no CUDA "
                                                 "execution provider on this machine")
def test_cuda_ort_io_binding_latency(tiny_cnn):
    m = api.bench([tiny_cnn], None, runs=20, target="cuda-ort")[0]
    assert m.latency.median_ms > 0


def test_unsupported_model_is_infeasible_not_a_crash(tiny_cnn):
    """A model TVM cannot import gets no latency and an infinite ratio."""
    pytest.importorskip("tvm")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("Gelu", ["input"], ["y"], domain="com.microsoft")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18),
                                             helper.make_opsetid("com.microsoft", 1)],
                              ir_version=10)
    ref = onnx.load(tiny_cnn)
    metrics = api.bench([ref, model], None, runs=3, target="cpu-tvm")
    assert metrics[0].latency is not None
    assert metrics[1].latency is None and math.isinf(metrics[1].latency_ratio)
    assert "not supported on this runtime" in metrics[1].latency_error
    assert metrics[1].supported is False


def test_search_objectives_score_unsupported_as_infeasible():
    from onnxamc.search.objective import make_objective

    from dataclasses import replace

    from onnxamc.metrics import Metrics

    metrics = Metrics(quality=0.9, quality_drop=0.0, latency_ratio=math.inf, supported=False)
    for objective in (make_objective(latency=0.8), make_objective(max_drop=0.01)):
        assert math.isinf(objective.constraint(metrics))
    assert make_objective(max_drop=0.01).constraint(replace(metrics, supported=True)) < 0


def test_search_measures_on_the_given_target(tiny_cnn, tmp_path):
    """A short search on cpu-tvm: every trial's latency comes from TVM builds; the study
    name says the target so that stores of two targets never mix."""
    pytest.importorskip("tvm")
    outcome = api.search(tiny_cnn, "digits", calibration="digits", trials=3, runs=5,
                         verify_runs=5, output=tmp_path / "tiny-compressed.onnx",
                         progress=False, target="cpu-tvm", calibration_samples=32)
    assert outcome.study_name.endswith("-cpu-tvm")
    trials = [t for t in outcome.result.study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 3
    assert all(t.user_attrs["metrics"]["target"] == "cpu-tvm" for t in trials)
    assert outcome.compressed.target == "cpu-tvm"


def test_ort_cpu_latency_on_the_reference_model(resnet20):
    """The bundled ResNet-20 timed through the cpu-ort target, with accuracy on the
    bundled Fashion-MNIST subset."""
    if not resnet20.exists():
        pytest.skip("bundled resnet20.onnx is not in this checkout")
    m = api.bench([resnet20], "fashion-mnist", runs=20, eval_samples=200, target="cpu-ort")[0]
    assert m.latency.runs == 20 and 0 < m.latency.median_ms < 1000
    assert m.quality > 0.5 and m.target == "cpu-ort"
