"""Every random policy gives a valid model or a one-line PolicyError, never anything else
(issue 15: the `dynamic` + fp16 / per-block mix raised KeyError on 17 of 320 random
policies).

Policies are drawn per layer from every field of the action registry, mostly with values
the field takes and some it does not (8.0, "8", NaN, out of range), read from JSON as a
user's file is, and applied to a small residual CNN with calibration data. A valid model
passes onnx's checker and runs in onnxruntime with finite outputs of the right shape.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from onnxamc import api
from onnxamc.actions import FIELDS
from onnxamc.errors import PolicyError
from onnxamc.policy import SCHEMA, Policy

from conftest import run_model

NAN = float("nan")
# Values each field takes (drawn most often) and values a user may write by mistake.
VALUES = {
    "remove": ([False, True], [1, "yes"]),
    "keep": ([1.0, 0.75, 0.5, 0.25], [0, 1.5, NAN, "0.5"]),
    "rank": ([1.0, 0.5, 0.25], [0.0, 2]),
    "sparsity": ([0.0, 0.3, 0.6, 0.9], [1.0, -0.1]),
    "share_bits": ([0, 2, 4, 8], [9, 3.5]),
    "bits": ([32, 16, 8, 4, 8.0], [9, "8", 8.5, True]),
    "granularity": (["per-channel", "per-tensor", "per-block"], ["per-row", 1]),
    "block_size": ([0, 16, 32, 64], [3, 2048]),
    "weight_only": ([False, True], ["true"]),
    "accuracy_level": ([0, 4], [5, -1]),
    "dynamic": ([False, True], [0.0]),
    "mixed_low_bits_ratio": ([0.0, 0.25, 0.5], [1.0, NAN]),
    "distill": ([0.0, 0.1, 1.0], [-1, 101]),
}
LAYERS = ("conv1", "conv2", "conv3", "fc")


def test_every_registry_field_is_drawn():
    assert set(VALUES) == {f.name for f in FIELDS}


def _value(name: str):
    good, bad = VALUES[name]
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good),
                     st.sampled_from(good), st.sampled_from(bad))


def _action():
    return st.dictionaries(st.sampled_from(sorted(VALUES)), st.none(), max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: _value(k) for k in keys}))


POLICIES = st.dictionaries(st.sampled_from(LAYERS), _action(), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def calibration(tiny_cnn):
    return api.data_for(tiny_cnn, "digits", limit=32)


def check_policy_outcome(model_path, calibration, layers: dict) -> str:
    """'model' or 'refused'; fails the test on anything else."""
    text = json.dumps({"schema": SCHEMA, "layers": layers})  # NaN as JSON's NaN
    try:
        compressed = api.apply(model_path, Policy.from_json(text), calibration=calibration,
                               calibration_samples=32)
    except PolicyError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip(), repr(str(exc))
        return "refused"
    onnx.checker.check_model(compressed)
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    (y,) = run_model(compressed, {compressed.graph.input[0].name: x})
    assert y.shape == (3, 10) and np.isfinite(y).all()
    return "model"


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(layers=POLICIES)
def test_random_policy_gives_a_valid_model_or_a_policy_error(tiny_cnn, calibration, layers):
    event(check_policy_outcome(tiny_cnn, calibration, layers))


@pytest.mark.slow
@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(layers=POLICIES)
def test_many_random_policies(tiny_cnn, calibration, layers):
    event(check_policy_outcome(tiny_cnn, calibration, layers))


@pytest.mark.parametrize("layers", [
    {"conv2": {"bits": 8, "dynamic": True}, "fc": {"bits": 16}},
    {"conv2": {"bits": 8, "dynamic": True}, "fc": {"bits": 4, "granularity": "per-block"}},
    {"conv1": {"bits": 8, "dynamic": True}, "conv3": {"bits": 16},
     "fc": {"bits": 8, "granularity": "per-block", "block_size": 16}},
])
def test_dynamic_beside_fp16_and_per_block(tiny_cnn, calibration, layers):
    """The mix that raised KeyError: 'fc' (issue 15) gives a valid model."""
    assert check_policy_outcome(tiny_cnn, calibration, layers) == "model"


def test_integral_floats_are_integers(tiny_cnn, calibration):
    """`"bits": 8.0` quantizes like 8 (it was accepted and did nothing)."""
    policy = Policy.from_json(json.dumps({"schema": SCHEMA,
                                          "layers": {"conv1": {"bits": 8.0}}}))
    assert policy.layers["conv1"].bits == 8 and isinstance(policy.layers["conv1"].bits, int)
    compressed = api.apply(tiny_cnn, policy, calibration=calibration, calibration_samples=32)
    assert any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in compressed.graph.node)
    assert not math.isnan(float(policy.layers["conv1"].bits))
