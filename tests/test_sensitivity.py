"""Sensitivity analysis: one layer alone takes each action; the table is data the
search can load."""

from __future__ import annotations

import json

import pytest

from onnxamc import api
from onnxamc.cli import main
from onnxamc.errors import PolicyError
from onnxamc.search.sensitivity import SensitivityTable

ACTIONS = {"int8": {"bits": 8}, "int4": {"bits": 4},
           "nbits4": {"bits": 4, "weight_only": True, "block_size": 16}, "shared3": {"share_bits": 3}}


@pytest.fixture(scope="module")
def table(tiny_cnn) -> SensitivityTable:
    return api.sensitivity(tiny_cnn, "digits", ACTIONS, calibration="digits", eval_samples=300,
                           calibration_samples=64)


def test_table_has_every_layer_and_action_and_skips_what_does_not_fit(table, tiny_cnn):
    layers = api.analyze(tiny_cnn).layer_names
    assert list(table.drops) == layers and 0.5 < table.reference_accuracy <= 1
    for layer in layers:
        assert set(table.drops[layer]) == set(ACTIONS)
        assert (table.drops[layer]["nbits4"] is None) == (layer != "fc")  # MatMul/Gemm only
        assert all(-1 <= d <= 1 for d in table.drops[layer].values() if d is not None)
        assert 4 <= table.bits[layer]["int4"] < table.bits[layer]["int8"] < 32


def test_table_round_trips_as_json_prints_and_gives_a_warm_start(table, tiny_cnn, tmp_path):
    loaded = SensitivityTable.load(table.save(tmp_path / "s.json"))
    assert loaded.to_dict() == json.loads(json.dumps(table.to_dict()))
    text = table.format()
    assert "conv2" in text and "int4" in text and "top1 drop in points" in text
    start = loaded.warm_start(max_drop_per_layer=1.0)  # every action fits: fewest bits
    assert start.action("conv2").share_bits == 3
    info = api.analyze(tiny_cnn)
    start.validate({l.name: l.op_type for l in info.layers}, info.fingerprint)
    assert loaded.warm_start(max_drop_per_layer=-1.0).is_identity


def test_bad_table_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(PolicyError, match="not a sensitivity table"):
        SensitivityTable.load(path)


def test_cli_sensitivity_writes_the_table(tiny_cnn, tmp_path, capsys):
    out = tmp_path / "sens.json"
    code = main(["sensitivity", str(tiny_cnn), "--data", "digits", "--calibration", "digits",
                 "--calibration-samples", "32", "--eval-samples", "100", "--layers", "fc",
                 "--actions", "int8", "--action", "bits=4,granularity=per-tensor", "-o", str(out)])
    assert code == 0
    table = SensitivityTable.load(out)
    assert list(table.drops) == ["fc"]
    assert set(table.drops["fc"]) == {"int8", "bits=4,granularity=per-tensor"}
    assert "fc" in capsys.readouterr().out
    assert main(["sensitivity", str(tiny_cnn), "--actions", "int3"]) == 2


def test_search_loads_the_table_the_sensitivity_command_writes(tmp_path):
    """`onnxamc sensitivity -o t.json` then `onnxamc search --sensitivity t.json`."""
    from onnxamc.search.priors import load_sensitivity

    path = tmp_path / "t.json"
    path.write_text(json.dumps({
        "schema": "onnxamc.sensitivity/1", "fingerprint": "x", "reference_accuracy": 0.9,
        "accuracy_kind": "top1",
        "actions": {"int8": {"bits": 8}, "int4-per-block32": {"bits": 4, "granularity": "per-block",
                                                                 "block_size": 32}},
        "drops": {"conv1": {"int8": 0.001, "int4-per-block32": 0.02}, "fc": {"int8": None}},
        "bits": {}, "meta": {}}))
    assert load_sensitivity(path) == {"conv1": {"bits=8": 0.001}, "fc": {}}
