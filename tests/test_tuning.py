"""MetaSchedule tuning with a persistent per-target database (slow: minutes on 2 cores)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")

from onnxamc.runtime import tuning  # noqa: E402
from onnxamc.runtime.target import load_target  # noqa: E402
from onnxamc.runtime.tvm_build import LocalVM, build  # noqa: E402


def matmul_model(seed: int):
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    w = numpy_helper.from_array(rng.random((16, 8), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["y"])], "g",
                              [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                             ir_version=10), numpy_helper.to_array(w)


@pytest.mark.slow
def test_tuning_database_is_reused_across_builds(tmp_path):
    """The first build tunes (2 trials); a second model with the same shapes (another
    trial of a search) finds the records and tunes nothing."""
    target = replace(load_target("cpu-tvm"), tuning_trials=2,
                     tuning_database=tmp_path / "db")
    first, _ = matmul_model(0)
    build(first, target)
    assert tuning.LAST_REPORT[0].tuned_now == 1
    assert (tmp_path / "db" / "database_tuning_record.json").stat().st_size > 0

    second, weight = matmul_model(1)  # same shapes, other weights
    start = time.perf_counter()
    executable = build(second, target)
    assert tuning.LAST_REPORT[0].tuned_now == 0
    assert time.perf_counter() - start < 30
    feed = {"input": np.random.default_rng(2).random((1, 16), dtype=np.float32)}
    got = LocalVM(executable, target).outputs(feed)[0]
    np.testing.assert_allclose(got, feed["input"] @ weight, rtol=1e-5)
