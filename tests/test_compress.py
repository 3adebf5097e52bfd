"""Convert and compress in one command, and the report it writes."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from onnxamc import api
from onnxamc.errors import ModelError
from onnxamc.search import open_storage

from conftest import run_model

torch = pytest.importorskip("torch")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("entry, layer", [("onnxamc.models.resnet:resnet20", "layers.0.conv1"),
                                          ("onnxamc.models.mobilenet:mobilenetv2", "features.0.0")])
def test_export_of_reference_models_equals_torch(tmp_path, entry, layer):
    from onnxamc.export import load_factory

    torch.manual_seed(1)
    module = load_factory(entry).eval()
    weights = tmp_path / "w.pt"
    torch.save(module.state_dict(), weights)
    path = tmp_path / "m.onnx"
    api.export(entry, (1, 1, 28, 28), path, weights)
    exported = onnx.load(path)
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_model(exported, {"input": x})[0], want, rtol=1e-4, atol=1e-4)
    assert layer in {n.name for n in exported.graph.node}  # layers named after torch modules
    assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


@pytest.mark.parametrize("entry, message", [
    ("no_colon", "not of the form"),
    ("onnxamc.nothing_here:f", "cannot import"),
    ("onnxamc.models.resnet:nope", "has no attribute"),
    ("onnxamc.models.resnet:ResNet.__doc__", "has no attribute"),
])
def test_export_errors(entry, message, tmp_path):
    with pytest.raises(ModelError, match=message):
        api.export(entry, "1,1,28,28", tmp_path / "x.onnx")


def test_compress_tiny_model_writes_model_policy_and_report(tiny_cnn, tmp_path):
    out = tmp_path / "c.onnx"
    result = api.compress(tiny_cnn, "digits", train_data="digits", trials=3, epochs=1,
                          eval_samples=300, calibration_samples=64, runs=10,
                          verify_runs=20, output=out, progress=False)
    assert out.exists() and result.policy_path.exists()
    onnx.checker.check_model(onnx.load(out))
    assert set(result.before_after) >= {"original", "compressed"} and len(result.before_after) == 3
    assert result.recovered.train_report.steps > 0
    files = result.report
    assert files.html.exists() and files.markdown.exists()
    for plot in files.plots:
        assert plot.read_bytes()[:8] == PNG_MAGIC
    assert "pareto.png" in files.html.read_text() and "| original |" in files.markdown.read_text()


def test_compress_from_torch_entry_point_end_to_end(tmp_path):
    """convert-and-compress in one command, through the CLI."""
    pkg = tmp_path / "mynets.py"
    pkg.write_text(
        "import torch\n"
        "def small():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),\n"
        "        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))\n")
    result = subprocess.run(
        [sys.executable, "-m", "onnxamc.cli", "compress", "mynets:small", "--input-shape",
         "1,1,8,8", "--data", "digits", "--trials", "2", "--runs", "10", "--eval-samples", "200",
         "--calibration-samples", "32", "-o", "out/small.onnx", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "small-original.onnx").exists()
    assert (tmp_path / "out" / "small.onnx").exists()
    assert (tmp_path / "out" / "small-report" / "pareto.png").read_bytes()[:8] == PNG_MAGIC
    policy = json.loads((tmp_path / "out" / "small.policy.json").read_text())
    assert policy["schema"] == "onnxamc.policy/1"


def test_report_command_from_storage(tiny_cnn, tmp_path):
    api.search(tiny_cnn, "digits", trials=10, eval_samples=200, calibration_samples=32,
               runs=5, verify_runs=5, output=tmp_path / "s.onnx", progress=False,
               actions=["quant", "sparsity=0:0.6:0.2"], objective="weighted:0.3",
               pruner="none")  # no stop on latency or by the pruner: all 10 complete
    files = api.report(tmp_path / "s.journal", tmp_path / "rep", model=tiny_cnn)
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in files.plots)
    names = {p.name for p in files.plots}
    # Optuna's own fANOVA importance plots, once the study has enough trials
    assert names == {"pareto.png", "history.png", "policy.png", "importance-top1.png",
                     "importance-latency.png"}
    assert "importance-top1.png" in files.html.read_text()
    import matplotlib  # Optuna's plots set the ggplot style globally: not beyond the report

    assert matplotlib.rcParams["axes.facecolor"] == "white"
    import optuna  # the uniform starting points are marked as baselines for the plot

    study = optuna.load_study(study_name=None, storage=open_storage(tmp_path / "s.journal"))
    assert [t.user_attrs.get("baseline") for t in study.trials[:4]] == [
        "original", "uniform sparsity=0.3", "uniform quant=8", "uniform sparsity=0.3 + quant=8"]


def test_compress_with_a_given_policy_skips_the_search(tiny_cnn, tmp_path, capsys):
    from onnxamc.cli import main

    policy = api.uniform_policy(tiny_cnn, "keep=0.5,bits=8")
    policy.save(tmp_path / "given.json")
    common = ["--data", "digits", "--calibration", "digits", "--eval-samples", "200",
              "--calibration-samples", "32", "--runs", "5", "--no-progress"]
    assert main(["compress", str(tiny_cnn), "--policy", str(tmp_path / "given.json"),
                 "-o", str(tmp_path / "g.onnx"), *common]) == 0
    out = capsys.readouterr().out
    assert "applied the given policy" in out and "compressed" in out
    assert not (tmp_path / "g.journal").exists()  # no study: nothing was searched
    written = json.loads((tmp_path / "g.policy.json").read_text())
    assert written["layers"] == json.loads((tmp_path / "given.json").read_text())["layers"]
    model = onnx.load(tmp_path / "g.onnx")
    assert api.analyze(model).params < api.analyze(tiny_cnn).params  # really pruned
    report = tmp_path / "g-report"
    assert {p.name for p in report.glob("*.png")} == {"pareto.png", "policy.png"}
    assert "Policy given by the user" in (report / "report.md").read_text()
    assert "Before/after measured on digits, the data" in (report / "report.md").read_text()
    # a policy made for another model is refused in one line
    other = api.uniform_policy(api.load(), "bits=8")
    other.save(tmp_path / "other.json")
    assert main(["compress", str(tiny_cnn), "--policy", str(tmp_path / "other.json"),
                 "-o", str(tmp_path / "h.onnx"), *common]) == 2
    assert "another model" in capsys.readouterr().err


def test_compress_verifies_on_data_that_chose_nothing(tiny_cnn, tmp_path, capsys):
    """--verify-data: the before/after table is measured again, every row side by side, on
    other data than the search and the recovery chose by."""
    from onnxamc.cli import main

    digits = api.data_for(api.load(tiny_cnn), "digits")
    held_out = tmp_path / "held_out.npz"
    name = next(iter(digits.inputs))
    np.savez(held_out, **{name: digits.inputs[name][-400:]}, labels=digits.labels[-400:])
    assert main(["compress", str(tiny_cnn), "--data", "digits", "--eval-samples", "600",
                 "--calibration", "digits", "--calibration-samples", "32", "--runs", "5",
                 "--trials", "2", "--train-data", "digits", "--lr", "0.01", "--verify-data",
                 str(held_out), "-o", str(tmp_path / "v.onnx"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "verified on" in out and "held_out.npz" in out
    table = out[out.index("verified on"):]
    assert all(label in table for label in ("original", "compressed", "+ KD"))
    report = (tmp_path / "v-report" / "report.md").read_text()
    assert "data the search and the recovery did not choose by" in report


def test_compress_chooses_lr_and_per_layer_distillation_rates(tiny_cnn, tmp_path):
    from onnxamc.errors import OnnxAmcError
    from onnxamc.recover.recovery_search import LR_CHOICES

    policy = api.uniform_policy(tiny_cnn, "bits=8")
    options = dict(policy=policy, train_data="digits", eval_samples=200, calibration_samples=32,
                   verify_runs=10, output=tmp_path / "d.onnx", progress=False, report=False,
                   distill_trials=2, trial_steps=4)
    result = api.compress(tiny_cnn, "digits", **options)
    searched = result.recovered.recovery_search
    trials = searched.study.trials
    assert len(trials) == len(LR_CHOICES) + 2 and all(t.value is not None for t in trials)
    grid = trials[:len(LR_CHOICES)]  # first every learning rate with logits only
    assert sorted(t.params["lr"] for t in grid) == list(LR_CHOICES)
    assert all(not any(v for k, v in t.params.items() if k != "lr") for t in grid)
    assert searched.by_lr == {t.params["lr"]: t.value for t in grid}
    # the largest rate among the trials within one standard error of the best
    top = max(t.value for t in trials)
    n_val = 1797 // 10  # the held-out tenth of the 1,797 digits
    close = [t for t in trials if t.value >= top - (top * (1 - top) / n_val) ** 0.5]
    assert searched.lr == max(t.params["lr"] for t in close)
    assert searched.best_val_accuracy in [t.value for t in close]
    assert searched.study.user_attrs["kind"] == "recovery"  # `report` does not offer it
    written = json.loads(result.policy_path.read_text())
    assert written["meta"]["recovery_search"]["lr"] == searched.lr
    for layer, rate in searched.rates.items():  # the rates are the policy's distill action
        assert written["layers"].get(layer, {}).get("distill", 0.0) == rate
    again = api.compress(tiny_cnn, "digits", **options)  # the study is stored: no new trials
    assert len(again.recovered.recovery_search.study.trials) == len(trials)
    fixed = api.compress(tiny_cnn, "digits", **{**options, "distill_trials": 0, "lr": 0.003})
    assert fixed.recovered.recovery_search is None  # nothing left to choose
    with pytest.raises(OnnxAmcError, match="needs train-data"):
        api.compress(tiny_cnn, "digits", distill_trials=2, output=tmp_path / "e.onnx")
    with pytest.raises(OnnxAmcError, match="learning rate"):
        api.compress(tiny_cnn, "digits", lr="fast", output=tmp_path / "e.onnx")


def test_compress_with_feature_distillation(tiny_cnn, tmp_path):
    from onnxamc.workflows.recovering import feature_weights
    from onnxamc.graph import load_model
    from onnxamc.recover.recovery_search import feature_tensors
    from onnxamc.policy import LayerAction, Policy

    model = load_model(tiny_cnn)
    names = [l.name for l in api.analyze(tiny_cnn).layers]
    policy = Policy({names[0]: LayerAction(distill=2.0), names[1]: LayerAction()})
    weights = feature_weights(model, model, policy, uniform=0.5)
    tensors = feature_tensors(model, model)  # every layer but the output one
    assert len(tensors) == len(names) - 1 and set(weights) == set(tensors.values())
    assert weights[tensors[names[0]]] == 2.0  # the policy's own rate wins over the uniform one
    assert sorted(weights.values()) == [0.5] * (len(tensors) - 1) + [2.0]
    result = api.compress(tiny_cnn, "digits", train_data="digits", trials=2, epochs=1,
                          feature_distill=0.5, eval_samples=200, calibration_samples=32,
                          runs=5, verify_runs=10, output=tmp_path / "f.onnx",
                          progress=False, report=False)
    assert result.recovered.train_report.steps > 0 and (tmp_path / "f.onnx").exists()


def test_qat_fake_quantizes_only_what_it_mirrors(tiny_cnn):
    """Symmetric per-channel int8 and int4 are trained with fake quantization; per-tensor,
    weight sharing and float layers are quantized after training only."""
    from onnxamc.policy import LayerAction, Policy
    from onnxamc.workflows.recovering import qat_bits
    from onnxamc.workflows.run import load_context

    context = load_context(tiny_cnn)
    info = context.info
    a, b, c = info.layer_names[:3]
    policy = Policy({a: LayerAction(bits=8), b: LayerAction(bits=4),
                     c: LayerAction(bits=8, granularity="per-tensor")})
    assert qat_bits(policy, context) == {info.layer(a).weight: 8, info.layer(b).weight: 4}
    shared = Policy({a: LayerAction(bits=8, share_bits=4), b: LayerAction(keep=0.5)})
    assert qat_bits(shared, context) == {}


def test_report_charts_the_chosen_policy_never_an_infeasible_one(tiny_cnn, tmp_path):
    """The fastest trial breaks --max-drop: the report made again from the storage alone
    charts the policy the search chose (feasible), as the search wrote it."""
    from onnxamc.metrics import Metrics
    from onnxamc.policy import LayerAction, Policy
    from onnxamc.search import AccuracyBound, SearchSpace, open_study, run_search
    from onnxamc.search.results import best_trial, record_choice
    from onnxamc.workflows.run import load_context
    from onnxamc.workflows.searching import search_slots

    context = load_context(tiny_cnn)
    space = SearchSpace(search_slots(context), ["quant"])
    names = context.info.layer_names
    everything = Policy({n: LayerAction(bits=8) for n in names})  # fastest, loses 5 points
    one = Policy({names[1]: LayerAction(bits=8)})  # a little faster, loses nothing

    def evaluate(policy):
        int8 = sum(policy.action(n).bits == 8 for n in names)
        return Metrics(quality=0.9 - 0.05 * (int8 == len(names)),
                       quality_drop=0.05 * (int8 == len(names)),
                       latency_ratio=1.0 - 0.1 * int8, size_ratio=1.0)

    goal = AccuracyBound(0.01)
    storage = str(tmp_path / "r.journal")
    study = open_study(storage, "r", goal, context.fingerprint,
                       settings={"objective": None, "latency": None, "max_drop": 0.01,
                                 "pick": None})
    run_search(study, space, goal, evaluate, 3, progress=False,
               seeds=[space.policy_from_params({}), everything, one])
    fastest = min(study.trials, key=lambda t: t.user_attrs["metrics"]["latency_ratio"])
    chosen, feasible = best_trial(study, goal)
    assert feasible and chosen.number != fastest.number
    files = api.report(storage, tmp_path / "rep", model=tiny_cnn)
    text = files.markdown.read_text()
    assert f"trial #{chosen.number}'s" in text and f"trial #{fastest.number}'s" not in text
    charted = [l for l in text.splitlines() if l.startswith(f"| {names[0]} |")][0]
    assert "| 32 |" in charted  # the first layer stays float in the chosen policy
    record_choice(study, fastest, False, evaluate(everything))  # a recorded choice wins
    again = api.report(storage, tmp_path / "rep2", model=tiny_cnn).markdown.read_text()
    assert f"trial #{fastest.number}'s" in again
