"""Transfer of a policy from ResNet-20 to ResNet-32 (the same family, deeper)."""

import optuna
import pytest

from onnxamc import api
from onnxamc.metrics import Metrics
from onnxamc.policy import LayerAction, Policy
from onnxamc.search import SearchSpace, Weighted, make_sampler, open_study, run_search
from onnxamc.workflows.run import load_context
from onnxamc.workflows.searching import search_slots
from onnxamc.search.transfer import match_layers


@pytest.fixture(scope="module")
def resnets(tmp_path_factory):
    """Untrained ResNet-20 and ResNet-32, exported with the TorchScript exporter (0.5 s
    each instead of 10 s; only the layer tables matter here). Its layer names are paths
    like /layers/layers.3/conv1/Conv."""
    import warnings

    import torch

    from onnxamc.models.resnet import resnet20, resnet32

    folder = tmp_path_factory.mktemp("resnets")
    paths = []
    for build in (resnet20, resnet32):
        path = folder / f"{build.__name__}.onnx"
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(build().eval(), (torch.rand(1, 1, 28, 28),), str(path),
                              dynamo=False, opset_version=18)
        paths.append(path)
    return paths


def test_transfer_maps_layers_of_a_deeper_variant(resnets):
    r20, r32 = (api.analyze(p) for p in resnets)
    source, target = (search_slots(load_context(p)) for p in resnets)
    mapping = match_layers(source, target)
    assert set(mapping) == set(r32.layer_names)  # every layer has a counterpart
    by_name = {s.name: s for s in source}
    for t in target:  # same stage (channels), same kind (stride-2 and 1x1 shortcuts)
        s = by_name[mapping[t.name]]
        assert (s.op_type, s.c_in, s.c_out, s.features[4:6]) == \
            (t.op_type, t.c_in, t.c_out, t.features[4:6])
    n20, n32 = r20.layer_names, r32.layer_names  # ResNet-20: 22 layers, ResNet-32: 34
    assert mapping[n32[0]] == n20[0] and mapping[n32[-1]] == n20[-1]  # stem, fc
    assert mapping[n32[11]] == n20[7]  # layers.5.conv1 -> layers.3.conv1: stage 2 starts
    assert mapping[n32[24]] == n20[16]  # layers.10.shortcut -> layers.6.shortcut
    stage1_conv1 = [mapping[n32[1 + 2 * i]] for i in range(5)]  # layers.0-4.conv1
    assert stage1_conv1[0] == n20[1] and stage1_conv1[-1] == n20[5]
    assert all(name.endswith("conv1/Conv") for name in stage1_conv1)  # same role
    order = [n20.index(name) for name in stage1_conv1]
    assert order == sorted(order)  # depth order kept

    # a policy: stronger compression deeper in the network, transferred and enqueued
    policy = Policy({n: LayerAction(sparsity=round(0.05 * (i // 3), 2), bits=8 if i > 10 else 32)
                     for i, n in enumerate(r20.layer_names)}, model_name="resnet20.onnx")
    moved = api.transfer(policy, resnets[0], resnets[1])
    assert moved.fingerprint == r32.fingerprint
    assert moved.action(n32[32]) == policy.action(n20[20])  # last block's conv2
    space = SearchSpace(target, ["quant", "sparsity"])
    objective = Weighted(0.3)
    study = open_study(":memory:", "t", objective, r32.fingerprint,
                       sampler=make_sampler("tpe", space, objective, 0, 4))
    run_search(study, space, objective, toy_evaluator_for(space), 3, progress=False,
               seeds=[moved])
    assert study.trials[0].params == space.params_of(moved)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def toy_evaluator_for(space):
    """A synthetic metric for any layer table (accuracy falls with sparsity)."""
    def evaluate(policy):
        loss = sum(policy.action(s.name).sparsity ** 2 for s in space.layers) / len(space.layers)
        return Metrics(quality=0.9 - loss, quality_drop=loss, latency_ratio=1.0,
                       size_ratio=1.0)
    return evaluate
