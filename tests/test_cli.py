"""The CLI through a real subprocess, as a user would run it."""

import json
import subprocess
import sys

import onnx
import pytest

from onnxamc.policy import Policy


def cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "onnxamc.cli", *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("command", ["", "inspect", "apply", "bench", "search"])
def test_help(command):
    out = cli(*([command] if command else []), "--help").stdout
    assert "usage: onnxamc" in out


def test_inspect_table_and_json(tiny_cnn):
    table = cli("inspect", tiny_cnn).stdout
    assert "Conv" in table and "Gemm" in table and "MACs per sample" in table
    data = json.loads(cli("inspect", tiny_cnn, "--json").stdout)
    assert data["macs"] == sum(l["macs"] for l in data["layers"]) and data["params"] > 0


def test_inspect_defaults_to_the_bundled_model():
    assert "layers.3.shortcut.0" in cli("inspect").stdout


def test_apply_uniform_and_policy_file_then_bench(tiny_cnn, tmp_path):
    out, policy = tmp_path / "q.onnx", tmp_path / "p.json"
    cli("apply", tiny_cnn, "--uniform", "sparsity=0.5,bits=8", "--calibration", "digits",
        "-o", out, "--save-policy", policy, "--no-latency-guard")  # int8 for size, timed or not
    onnx.checker.check_model(onnx.load(out))
    assert Policy.load(policy).action("conv1").sparsity == 0.5
    again = tmp_path / "again.onnx"
    cli("apply", tiny_cnn, "--policy", policy, "--calibration", "digits", "-o", again)
    bench = cli("bench", tiny_cnn, out, again, "--data", "digits", "--runs", "20").stdout
    assert "x latency" in bench and "q.onnx" in bench and "again.onnx" in bench
    rows = json.loads(cli("bench", tiny_cnn, out, "--data", "digits", "--runs", "10",
                          "--json").stdout)
    assert rows[0]["latency_ratio"] == 1.0 and rows[1]["size_bytes"] < rows[0]["size_bytes"]


def test_search_command(tiny_cnn, tmp_path):
    out = cli("search", tiny_cnn, "--data", "digits", "--calibration", "digits",
              "--calibration-samples", "64", "--trials", "5", "--runs", "10",
              "-o", tmp_path / "s.onnx", "--no-progress").stdout
    assert "best trial" in out and "latency x" in out
    assert (tmp_path / "s.onnx").exists() and (tmp_path / "s.policy.json").exists()
    assert (tmp_path / "s.journal").exists()


@pytest.mark.parametrize("args, message", [
    (["inspect", "missing.onnx"], "model file 'missing.onnx' does not exist"),
    (["apply", "{model}", "--uniform", "bits=9", "-o", "x.onnx"], "bits must be one of"),
    (["apply", "{model}", "--policy", "{bad}", "-o", "x.onnx"], "policy is not valid JSON"),
    (["bench", "{model}", "--data", "fashion-mnist"], "data shape [2000, 1, 28, 28] does not fit model shape [N, 1, 8, 8]"),
    (["search", "{model}", "--latency", "0", "--data", "digits"], "latency budget must be"),
])
def test_errors_are_one_line(tiny_cnn, tmp_path, args, message):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    args = [a.format(model=tiny_cnn, bad=bad) for a in args]
    result = cli(*args, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
