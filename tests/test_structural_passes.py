"""Low-rank factorization, residual-block removal, and the CLI / API around pruning."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import run_model
from onnxamc import api
from onnxamc.cli import main
from onnxamc.errors import PolicyError
from onnxamc.graph import analyze, load_model, node_names
from onnxamc.graph.blocks import residual_blocks
from onnxamc.actions import apply_policy
from onnxamc.passes.low_rank import low_rank
from onnxamc.passes.remove_blocks import remove_blocks
from onnxamc.policy import LayerAction, Policy
from prune_zoo import ZOO, zoo_paths  # noqa: F401 (fixture)


@pytest.fixture(scope="session")
def models(zoo_paths):
    return zoo_paths


def feed(name, batch=3):
    shape = ZOO[name][1]
    return {"input": np.random.default_rng(0).random((batch,) + shape[1:], dtype=np.float32)}


@pytest.mark.parametrize("name", ["plain", "transformer"])
def test_full_rank_factorization_keeps_outputs(models, name):
    model = load_model(models[name])
    layers = [layer.name for layer in analyze(model).layers]
    out = low_rank(model, {layer: 0.999 for layer in layers})
    onnx.checker.check_model(out, full_check=True)
    np.testing.assert_allclose(run_model(out, feed(name))[0], run_model(model, feed(name))[0],
                               rtol=1e-3, atol=1e-4)
    assert set(layers) <= set(node_names(out))  # names still resolve for later passes


def test_low_rank_lowers_macs_and_keeps_layer_names(models):
    model = load_model(models["plain"])
    policy = Policy({"c2.0": LayerAction(rank=0.25), "fc": LayerAction(rank=0.25, bits=8)})
    out = apply_policy(model, policy, lambda: [feed("plain", 8)])
    assert analyze(out).macs < analyze(model).macs
    assert {"c2.0", "c2.0.low_rank", "fc", "fc.low_rank"} <= set(node_names(out))
    assert run_model(out, feed("plain"))[0].shape == (3, 10)


def test_low_rank_of_grouped_conv_is_a_policy_error(models):
    model = load_model(models["resnext"])
    with pytest.raises(PolicyError, match="block.b.0.*grouped"):
        low_rank(model, {"block.b.0": 0.5})


def test_removable_blocks_are_identity_residuals_only(models):
    model = load_model(models["resnet"])
    names = [b.name for b in residual_blocks(model)]
    assert names == ["blocks.0.a.0", "blocks.2.a.0"]  # blocks.1 has a projection shortcut


def test_removing_a_block_equals_a_zero_branch(models):
    model = load_model(models["resnet"])
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(model)
    for init in zeroed.graph.initializer:
        if init.name.startswith("blocks.0.b.0"):
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)),
                                                  init.name))
    out = remove_blocks(model, ["blocks.0.b.0"])
    onnx.checker.check_model(out, full_check=True)
    assert not {"blocks.0.a.0", "blocks.0.b.0"} & set(node_names(out))
    np.testing.assert_allclose(run_model(out, feed("resnet"))[0],
                               run_model(zeroed, feed("resnet"))[0], rtol=1e-5, atol=1e-5)


def test_remove_outside_a_block_is_a_policy_error(models):
    model = load_model(models["resnet"])
    with pytest.raises(PolicyError, match="'blocks.1.a.0'.*residual block"):
        apply_policy(model, Policy({"blocks.1.a.0": LayerAction(remove=True)}))


def test_remove_then_prune_skips_removed_layers(models):
    model = load_model(models["transformer"])
    blocks = residual_blocks(model)
    policy = Policy({blocks[1].layers[0]: LayerAction(remove=True, keep=0.5),
                     blocks[0].layers[0]: LayerAction(keep=0.5)})
    out = apply_policy(model, policy)
    assert run_model(out, feed("transformer"))[0].shape == (3, 10)


def test_uniform_keep_skips_layers_that_cannot_prune(models):
    policy = api.uniform_policy(models["resnet"], "keep=0.5")
    assert policy.action("fc").keep == 1.0
    assert policy.action("stem.0").keep == 0.5
    policy = api.uniform_policy(models["resnext"], "rank=0.5")
    assert policy.action("block.b.0").rank == 1.0 and policy.action("block.a.0").rank == 0.5


def test_cli_inspect_shows_groups_blockers_and_blocks(models, capsys):
    assert main(["inspect", str(models["resnet"])]) == 0
    text = capsys.readouterr().out
    assert "channel groups" in text and "blocked by model output 'logits'" in text
    assert "removable residual blocks" in text and "blocks.2.a.0" in text
    assert main(["inspect", str(models["resnet"]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["groups"][0]["layers"] == ["stem.0", "blocks.0.b.0"]


@pytest.mark.parametrize("spec", ["keep=0.5", "rank=0.5", "remove=true"])
def test_cli_apply_uniform_structural_policies(models, tmp_path, spec, capsys):
    out = tmp_path / "out.onnx"
    assert main(["apply", str(models["resnet"]), "--uniform", spec, "-o", str(out)]) == 0
    pruned, original = load_model(out), load_model(models["resnet"])
    assert analyze(pruned).macs < analyze(original).macs
    assert run_model(pruned, feed("resnet"))[0].shape == (3, 10)


def test_cli_keep_on_blocked_layer_is_one_line_error(models, tmp_path, capsys):
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"schema": "onnxamc.policy/1", "layers": {"fc": {"keep": 0.5}}}))
    code = main(["apply", str(models["resnet"]), "--policy", str(policy), "-o",
                 str(tmp_path / "o.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "'fc'" in err and "model output" in err


def test_cli_apply_with_reconstruction(models, tmp_path, capsys):
    out = tmp_path / "rebuilt.onnx"
    assert main(["apply", str(models["mobilenetv2"]), "--uniform", "keep=0.5",
                 "--calibration", "random:32", "--channel-multiple", "4", "--importance", "l2",
                 "-o", str(out)]) == 0
    pruned, original = load_model(out), load_model(models["mobilenetv2"])
    assert analyze(pruned).macs < 0.5 * analyze(original).macs
