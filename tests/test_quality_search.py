"""Models that are not classifiers through the commands: a text encoder (two int64
inputs) searched with cosine on data from a module function, a UNet with snr and a
held-out split, a two-input two-output model through every command, a user's metric
from a module in a temporary directory."""

import json
import sys
import textwrap

import numpy as np
import pytest

import quality_models as qm
from onnxamc import api
from onnxamc.cli import main
from onnxamc.quality import metric

FAST = ["--runs", "5", "--no-progress"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {"text": qm.text_encoder(folder / "encoder.onnx"), "unet": qm.unet(folder / "unet.onnx"),
            "two": qm.two_headed(folder / "two.onnx")}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temporary working directory holding the data and metric modules."""
    monkeypatch.chdir(tmp_path)
    names = []

    def module(name: str, source: str) -> str:
        unique = f"{name}_{abs(hash(str(tmp_path))) % 10**8}"
        (tmp_path / f"{unique}.py").write_text(textwrap.dedent(source))
        names.append(unique)
        return unique

    yield module
    for name in names:
        sys.modules.pop(name, None)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_text_encoder_searched_with_cosine_on_a_data_function(models, workdir, capsys, tmp_path):
    texts = workdir("texts", f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(qm.__file__.rsplit('/', 1)[0])!r})
        import quality_models as qm

        def feeds():
            rng = np.random.default_rng(0)
            for _ in range(4):
                yield qm.token_batch(rng, 48)
    """)
    code, out, err = run_cli(capsys, "search", models["text"], "--data", f"{texts}:feeds",
                             "--actions", "quant", "--trials", "4", "-o", tmp_path / "enc.onnx",
                             *FAST)
    assert code == 0, err
    assert "fidelity: cosine on 'sentence_embedding' (higher is better); bound: cosine >= 0.99" in out
    meta = json.loads((tmp_path / "enc.policy.json").read_text())["meta"]
    assert meta["metric"].startswith("cosine on 'sentence_embedding' (against the original's")
    confirmed = meta["confirmed"]
    assert confirmed["metric"] == "cosine" and confirmed["quality"] >= 0.99
    assert confirmed["latency_ratio"] > 0 and meta["feasible"]


def test_unet_searched_with_snr_chosen_on_one_part_reported_on_the_other(models, capsys, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", image=rng.random((96, 3, 32, 32), dtype=np.float32))
    code, out, err = run_cli(capsys, "search", models["unet"], "--data", tmp_path / "images.npz",
                             "--validation-split", "0.5", "--min-quality", "25", "--trials", "4",
                             "-o", tmp_path / "unet.onnx", *FAST)
    assert code == 0, err
    assert "fidelity: snr on 'depth' (higher is better); bound: snr >= 25.00 dB" in out
    assert "(original 100.00 dB on images.npz (select part, 48 samples))" in out
    assert "held out (images.npz (held-out part, 48 samples), chose nothing): snr" in out
    meta = json.loads((tmp_path / "unet.policy.json").read_text())["meta"]
    assert meta["data"] == "images.npz (select part, 48 samples)"
    assert meta["held_out"]["data"] == "images.npz (held-out part, 48 samples)"
    assert meta["held_out"]["original"] == 100.0 and meta["held_out"]["compressed"] > 10


def two_data(path, count=64):
    rng = np.random.default_rng(1)
    np.savez(path, image=rng.random((count, 1, 8, 8), dtype=np.float32),
             side=rng.random((count, 4), dtype=np.float32))
    return path


def test_two_inputs_two_outputs_through_every_command(models, capsys, tmp_path):
    model, data = models["two"], two_data(tmp_path / "two.npz")
    code, out, err = run_cli(capsys, "inspect", model)
    assert code == 0 and "Conv" in out and "Gemm" in out, err
    code, out, err = run_cli(capsys, "apply", model, "--uniform", "bits=8", "--calibration", data,
                             "-o", tmp_path / "q.onnx")
    assert code == 0, err
    code, out, err = run_cli(capsys, "bench", model, tmp_path / "q.onnx", "--data", data,
                             "--metric", "scores=agreement,heat=snr", "--runs", "3")
    assert code == 0, err
    assert "fidelity: agreement on 'scores' (chooses); also reported: snr on 'heat'" in out
    assert "q.onnx: scores agreement" in out and "heat snr" in out
    layer = api.analyze(model).layer_names[0]
    code, out, err = run_cli(capsys, "sensitivity", model, "--data", data, "--calibration", data,
                             "--actions", "int8", "--layers", layer)
    assert code == 0 and "cosine drop in its units" in out, err
    code, out, err = run_cli(capsys, "search", model, "--data", data, "--trials", "3",
                             "-o", tmp_path / "s.onnx", *FAST)
    assert code == 0, err
    assert "fidelity: cosine on the worst of 'scores', 'heat'" in out and "per output:" in out
    code, out, err = run_cli(capsys, "report", "--storage", tmp_path / "s.journal", "--model",
                             model, "-o", tmp_path / "report")
    assert code == 0, err
    assert "Quality: cosine on the worst of 'scores', 'heat'" in \
        (tmp_path / "report" / "report.md").read_text()
    code, out, err = run_cli(capsys, "compress", model, "--data", data, "--policy",
                             tmp_path / "s.policy.json", "-o", tmp_path / "c.onnx",
                             "--no-report", *FAST)
    assert code == 0, err
    assert (tmp_path / "c.onnx").exists()


def test_user_metric_from_a_module_through_the_cli(tiny_cnn, workdir, capsys, tmp_path):
    mine = workdir("mymetrics", """
        import numpy as np
        from onnxamc.quality import metric

        def accuracy(outputs, labels):
            return float(np.mean(outputs["logits"].argmax(1) == labels))

        @metric(higher_is_better=False, name="errors")
        def errors(outputs, labels):
            return float(np.sum(outputs["logits"].argmax(1) != labels))

        def broken(outputs, labels):
            return outputs["nope"]
    """)
    code, out, err = run_cli(capsys, "bench", tiny_cnn, "--data", "digits", "--metric",
                             f"{mine}:accuracy", "--runs", "2")
    assert code == 0, err
    assert f"quality: {mine}:accuracy (higher is better)" in out
    builtin = api.evaluate(tiny_cnn, "digits", runs=2).quality
    assert f"{builtin:.4g}" in out  # the built-in top1's value, in the metric's own format
    code, out, err = run_cli(capsys, "search", tiny_cnn, "--data", "digits", "--metric",
                             f"{mine}:errors", "--max-drop", "30", "--trials", "3",
                             "-o", tmp_path / "e.onnx", *FAST)
    assert code == 0, err
    assert "quality: errors (lower is better); bound: errors <= " in out
    code, out, err = run_cli(capsys, "bench", tiny_cnn, "--data", "digits", "--metric",
                             f"{mine}:broken", "--runs", "2")
    assert code == 2 and err.strip() == (f"onnxamc: error: metric {mine}:broken raised "
                                         "KeyError: 'nope'")


def test_user_metric_with_a_session_in_the_api(tiny_cnn):
    calls = []

    @metric(name="own-accuracy")
    def own(session, data):
        right = total = 0
        for feed, labels in data:
            right += int((session.run(None, feed)[0].argmax(1) == labels).sum())
            total += len(labels)
        calls.append(total)
        return right / total

    metrics = api.evaluate(tiny_cnn, "digits", runs=2, metric=own)
    assert metrics.metric == "own-accuracy" and calls == [1797]
    assert metrics.quality == pytest.approx(api.evaluate(tiny_cnn, "digits", runs=2).quality)
