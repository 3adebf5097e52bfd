"""Policy JSON: round trip, and a one-line error for each kind of invalid policy."""

import json

import pytest

from onnxamc.errors import PolicyError
from onnxamc.graph import analyze, load_model
from onnxamc.policy import SCHEMA, LayerAction, Policy, parse_uniform

OPS = {"conv1": "Conv", "deconv": "ConvTranspose", "fc": "Gemm"}


def test_round_trip(tmp_path):
    policy = Policy({"conv1": LayerAction(sparsity=0.5, bits=8), "fc": LayerAction(bits=8),
                     "deconv": LayerAction()}, fingerprint="abc", model_name="m.onnx",
                    meta={"note": "x"})
    path = policy.save(tmp_path / "p.json")
    loaded = Policy.load(path)
    assert loaded.layers["conv1"] == policy.layers["conv1"]
    assert loaded.action("deconv").is_identity  # identity actions are left out of the file
    assert "deconv" not in json.loads(path.read_text())["layers"]
    assert (loaded.fingerprint, loaded.model_name, loaded.meta) == ("abc", "m.onnx", {"note": "x"})
    loaded.validate(OPS, "abc")


def _policy(layers, **top):
    return json.dumps({"schema": SCHEMA, "layers": layers, **top})


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[]", "must be a JSON object"),
    (json.dumps({"schema": "other/9", "layers": {}}), "unsupported policy schema"),
    (_policy({}, extra=1), "unknown top-level policy fields: extra"),
    (_policy([]), "'layers' must be an object"),
    (_policy({"conv1": 3}), "layer 'conv1': action must be an object"),
    (_policy({"conv1": {"keep_ratio": 0.5}}), "layer 'conv1': unknown field 'keep_ratio'"),
    (_policy({"conv1": {"sparsity": 1.5}}), "layer 'conv1': sparsity must be a number in"),
    (_policy({"conv1": {"bits": 8.5}}), "layer 'conv1': bits must be one of"),
    (_policy({"conv1": {"bitz": 8}}), "unknown field 'bitz'; did you mean 'bits'"),
    (_policy({"conv1": {"sparsity": "half"}}), "layer 'conv1': sparsity must be a number"),
    (_policy({"conv1": {"bits": 7}}), "layer 'conv1': bits must be one of"),
    (_policy({"conv1": {"bits": True}}), "layer 'conv1': bits must be one of"),
])
def test_malformed_policies(text, message):
    with pytest.raises(PolicyError, match=message) as err:
        Policy.from_json(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("layers, fingerprint, message", [
    ({"conv9": {"sparsity": 0.1}}, None, "layer 'conv9' is not a compressible layer"),
    ({"deconv": {"bits": 8}}, None, "layer 'deconv': bits=8 is not supported for ConvTranspose"),
    ({"conv1": {"bits": 8}}, "zzz", "policy was made for another model"),
])
def test_policies_that_do_not_fit_the_model(layers, fingerprint, message):
    policy = Policy.from_json(_policy(layers, model={"fingerprint": "abc"}))
    with pytest.raises(PolicyError, match=message):
        policy.validate(OPS, fingerprint or "abc")


def test_missing_policy_file(tmp_path):
    with pytest.raises(PolicyError, match="does not exist"):
        Policy.load(tmp_path / "none.json")


def test_error_from_file_names_the_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(_policy({"conv1": {"bits": 5}}))
    with pytest.raises(PolicyError, match=r"p\.json: layer 'conv1': bits"):
        Policy.load(path)


def test_uniform_spec():
    assert parse_uniform("sparsity=0.5,bits=8") == {"sparsity": 0.5, "bits": 8}
    for bad in ("", "sparsity", "speed=2", "bits=eight"):
        with pytest.raises(PolicyError):
            parse_uniform(bad)


def test_numbers_are_normalized_to_the_field_type():
    policy = Policy.from_json(_policy({"conv1": {"bits": 8.0, "keep": 1, "sparsity": 0}}))
    action = policy.action("conv1")
    assert action.bits == 8 and isinstance(action.bits, int)
    assert isinstance(action.keep, float) and action.to_dict() == {"bits": 8}


def test_uniform_policy_gives_each_field_only_where_its_action_fits(tiny_cnn):
    """fc's output channels are the model's output: it takes bits but not keep."""
    from onnxamc.policy import uniform_policy
    from onnxamc.workflows.run import load_context

    context = load_context(tiny_cnn)
    policy = uniform_policy(context, {"keep": 0.5, "bits": 8, "sparsity": 0.25})
    assert policy.action("fc").to_dict() == {"bits": 8, "sparsity": 0.25}
    assert policy.action("conv1").to_dict() == {"keep": 0.5, "bits": 8, "sparsity": 0.25}
    assert policy.fingerprint == context.fingerprint
    policy.validate(context.layer_ops, context.fingerprint)
    with pytest.raises(PolicyError, match="^uniform policy: bits must be one of"):
        uniform_policy(context, {"bits": 9})


def test_fingerprint_ignores_weight_values(tiny_cnn):
    import onnx
    from onnx import numpy_helper

    model = load_model(tiny_cnn)
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    init = changed.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 2, init.name))
    assert analyze(changed).fingerprint == analyze(model).fingerprint
