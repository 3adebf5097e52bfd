"""Your own data: `package.module:function`, iterables, torch DataLoaders, read batch by
batch and checked on the way; held-out splits; bad data as one-line DataErrors."""

import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

from conftest import export
from onnxamc import api
from onnxamc.cli import main
from onnxamc.data import Dataset, load_data
from onnxamc.data_sources import StreamData, part_mask
from onnxamc.errors import DataError
from onnxamc.graph import InputSpec

IMG = [InputSpec("input", (None, 1, 8, 8), np.dtype("float32"))]
WIDE = 1024  # features per sample of the memory test's model
SAMPLES, BATCH = 10_000, 100


@pytest.fixture(scope="module")
def wide_mlp(tmp_path_factory):
    """A one-layer model on 1024 features: the data dominates the memory it needs."""
    from torch import nn

    return export(nn.Sequential(nn.Linear(WIDE, 32), nn.ReLU(), nn.Linear(32, 10)), (2, WIDE),
                  tmp_path_factory.mktemp("wide") / "wide.onnx")


def write_module(folder, name: str, source: str) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return name


@pytest.fixture
def generator_module(tmp_path, monkeypatch):
    """A module in a temporary directory whose `batches()` yields 10,000 samples of 1024
    features, 100 at a time, drawn afresh (the same each call), never held."""
    monkeypatch.chdir(tmp_path)
    name = write_module(tmp_path, f"gen_{tmp_path.name[-12:].replace('-', '_')}", f"""
        import numpy as np
        PULLED = []

        def batches():
            rng = np.random.default_rng(0)
            for start in range(0, {SAMPLES}, {BATCH}):
                PULLED.append({BATCH})
                yield {{"input": rng.random(({BATCH}, {WIDE}), dtype=np.float32)}}
    """)
    yield name
    sys.modules.pop(name, None)


def test_generator_streams_10000_samples_in_bounded_memory(wide_mlp, generator_module, tmp_path):
    """Peak Python-side memory of scoring a 10,000-sample generator against the same data
    loaded as one array from an .npz file (tracemalloc counts numpy's buffers)."""
    def peak(data):
        tracemalloc.start()
        metrics = api.evaluate(wide_mlp, data, runs=2)
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return metrics, peak_bytes

    streamed, stream_peak = peak(f"{generator_module}:batches")
    module = sys.modules[generator_module]
    np.savez(tmp_path / "all.npz", input=np.concatenate([b["input"] for b in module.batches()]))
    held, array_peak = peak(tmp_path / "all.npz")
    assert streamed.quality == held.quality == 1.0 and streamed.metric == "agreement"
    assert array_peak > SAMPLES * WIDE * 4  # the array itself: 41 MB
    assert stream_peak < array_peak / 5, (stream_peak, array_peak)
    print(f"peak traced memory: generator {stream_peak / 2**20:.1f} MiB, "
          f"one array {array_peak / 2**20:.1f} MiB")


def test_calibration_reads_only_what_it_uses(wide_mlp, generator_module, tmp_path):
    api.apply(wide_mlp, api.uniform_policy(wide_mlp, "bits=8"), tmp_path / "q.onnx",
              calibration=f"{generator_module}:batches", calibration_samples=150)
    pulled = sum(sys.modules[generator_module].PULLED)
    assert pulled == 200  # two batches of 100 of the 10,000


def digits_arrays():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32)[:300, None], bunch.target[:300]


def test_dataloader_iterables_and_single_samples_agree_with_arrays(tiny_cnn):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = digits_arrays()
    reference = api.evaluate(tiny_cnn, {"input": x, "labels": y}, runs=2).quality
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=37)
    samples = [{"input": x[i], "labels": y[i]} for i in range(len(x))]  # no batch axis
    one_shot = ((x[i:i + 50], y[i:i + 50]) for i in range(0, len(x), 50))
    for data in (loader, samples, lambda: iter(samples), one_shot):
        metrics = api.evaluate(tiny_cnn, data, runs=2)
        assert metrics.metric == "top1" and metrics.quality == pytest.approx(reference)


def test_held_out_split_is_the_same_for_arrays_and_streams():
    x = np.arange(20, dtype=np.float32).reshape(20, 1, 1, 1) * np.ones((1, 1, 8, 8), np.float32)
    held = part_mask(0, 20, "held-out", 0.25)
    assert held.sum() == 5 and list(np.flatnonzero(held)) == [3, 7, 11, 15, 19]
    in_memory = Dataset({"input": x}, np.arange(20), "x").split(0.25)
    stream = StreamData(lambda: [(x[i:i + 3], np.arange(i, min(i + 3, 20)))
                                 for i in range(0, 20, 3)], IMG, "s").split(0.25)
    for a, b in zip(in_memory, stream):
        got = np.concatenate([lab for _, lab in b.labelled_batches(4)])
        assert list(got) == list(a.labels)
    assert len(stream[0]) == 15 and len(stream[1]) == 5


def batches_of(*arrays):
    return lambda: [{"input": a} for a in arrays]


GOOD = np.zeros((4, 1, 8, 8), np.float32)
NAN = GOOD.copy()
NAN[2, 0, 3, 3] = np.nan


@pytest.mark.parametrize("data, message", [
    (batches_of(GOOD, GOOD, NAN), r"batch 2: input 'input' has NaN or Inf values in 1 samples "
                                  r"\(first: NaN in sample 10\)"),
    (batches_of(GOOD, np.zeros((4, 1, 9, 8), np.float32)),
     r"batch 1: input 'input': data shape \[4, 1, 9, 8\] does not fit model shape"),
    (lambda: [{"image": GOOD}], r"data has arrays \['image'\] that are not model inputs"),
    (lambda: [{"input": GOOD.astype(str)}], "data type <U32 does not fit model type float32"),
    (lambda: [], "yielded no samples"),
    (lambda: [(GOOD, np.zeros(4)), (GOOD, None)], "some batches have labels and some do not"),
    (lambda: [(GOOD, GOOD, GOOD)], r"a tuple of 3 items; give \(inputs, labels\)"),
    ({"input": np.zeros((0, 1, 8, 8), np.float32)}, "holds no samples"),
    ({"input": GOOD, "labels": np.array([0, 1, np.inf, 2])},
     r"labels has NaN or Inf values in 1 samples \(first: Inf in sample 2\)"),
])
def test_bad_data_is_one_line_naming_the_input(tiny_cnn, data, message):
    with pytest.raises(DataError, match=message) as err:
        metrics = api.evaluate(tiny_cnn, data, runs=1)
        pytest.fail(f"accepted: {metrics}")
    assert "\n" not in str(err.value)


def test_a_stream_is_checked_on_its_first_batch_when_loaded():
    with pytest.raises(DataError, match="batch 0: data has no array for model input 'input'"):
        load_data(lambda: [{"labels": np.zeros(3)}], IMG)


@pytest.mark.parametrize("args, message", [
    (["bench", "--eval-samples", "0"], "eval-samples must be an integer >= 1, got 0"),
    (["apply", "--uniform", "bits=8", "--calibration-samples", "0", "-o", "x.onnx"],
     "calibration-samples must be an integer >= 1"),
    (["apply", "--uniform", "bits=8", "--calibration", "NAN.npz", "-o", "x.onnx"],
     "calibration data NAN.npz: input 'input' has NaN or Inf values"),
    (["bench", "--data", "NAN.npz"], "data NAN.npz: input 'input' has NaN or Inf"),
    (["bench", "--data", "EMPTY.npz"], "input 'input' holds no samples"),
    (["bench", "--data", "BIGLABEL.npz"], "sample 1 has label 10, but output 'logits' has 10"),
    (["bench", "--data", "NEGLABEL.npz"], "sample 0 has the negative label -3"),
    (["bench", "--data", "NANLABEL.npz"], "labels has NaN or Inf values"),
])
def test_bad_data_through_the_cli_exits_2_with_one_line(tiny_cnn, tmp_path, monkeypatch, capsys,
                                                        args, message):
    monkeypatch.chdir(tmp_path)
    x = np.zeros((3, 1, 8, 8), np.float32)
    bad = x.copy()
    bad[1, 0, 0, 0] = np.inf
    np.savez("NAN.npz", input=bad)
    np.savez("EMPTY.npz", input=x[:0])
    np.savez("BIGLABEL.npz", input=x, labels=np.array([0, 10, 2]))
    np.savez("NEGLABEL.npz", input=x, labels=np.array([-3, 1, 2]))
    np.savez("NANLABEL.npz", input=x, labels=np.array([0.0, np.nan, 2.0]))
    command = args[:1] + [str(tiny_cnn)] + args[1:]
    if command[0] == "bench" and "--data" not in command:
        command += ["--data", "digits"]
    assert main(command + (["--runs", "1"] if command[0] == "bench" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.onnx").exists()
