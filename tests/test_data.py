"""Data: .npz files and built-in names, checked against the model's inputs."""

import numpy as np
import pytest

from onnxamc.data import load_data, random_data
from onnxamc.errors import DataError
from onnxamc.graph import InputSpec

IMG = [InputSpec("input", (None, 1, 28, 28), np.dtype("float32"))]


def test_bundled_fashion_mnist_subsets():
    ev = load_data("fashion-mnist", IMG)
    cal = load_data("fashion-mnist:calib", IMG)
    assert (len(ev), len(cal)) == (2000, 512)
    x = ev.inputs["input"]
    assert x.dtype == np.float32 and x.shape[1:] == (1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert set(np.unique(ev.labels)) == set(range(10))


def test_full_fashion_mnist_when_installed():
    from onnxamc.data import FASHION_MNIST_DIR

    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    assert len(load_data("fashion-mnist:test", IMG)) == 10_000


def test_npz_with_labels_and_limit(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, input=np.zeros((10, 1, 28, 28), np.float32), labels=np.arange(10))
    data = load_data(path, IMG, limit=4)
    assert len(data) == 4 and list(data.labels) == [0, 1, 2, 3]


def test_lone_array_feeds_lone_input_and_float64_is_cast(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((3, 1, 28, 28)))
    data = load_data(path, IMG)
    assert data.inputs["input"].dtype == np.float32 and data.labels is None


@pytest.mark.parametrize("arrays, message", [
    ({"input": np.zeros((2, 1, 32, 32), np.float32)},
     r"input 'input': data shape \[2, 1, 32, 32\] does not fit model shape \[N, 1, 28, 28\]"),
    ({"input": np.zeros((2, 28, 28), np.float32)}, "does not fit model shape"),
    ({"input": np.zeros((2, 1, 28, 28), np.int64)}, "data type int64 does not fit model type float32"),
    ({"input": np.zeros((2, 1, 28, 28), np.float32), "other": np.zeros(2)}, "not model inputs"),
    ({"input": np.zeros((2, 1, 28, 28), np.float32), "labels": np.zeros(3)}, "different sample counts"),
])
def test_data_that_does_not_fit(tmp_path, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as err:
        load_data(path, IMG)
    assert "\n" not in str(err.value)


def test_missing_or_unreadable_data(tmp_path):
    with pytest.raises(DataError, match="neither a file nor a built-in name"):
        load_data(tmp_path / "none.npz", IMG)
    bad = tmp_path / "bad.npz"
    bad.write_text("garbage")
    with pytest.raises(DataError, match="cannot read"):
        load_data(bad, IMG)
    with pytest.raises(DataError, match="unknown Fashion-MNIST split"):
        load_data("fashion-mnist:valid", IMG)


def test_digits_reshapes_to_the_model_input():
    flat = load_data("digits", [InputSpec("x", (None, 64), np.dtype("float32"))])
    image = load_data("digits", [InputSpec("x", (None, 1, 8, 8), np.dtype("float32"))])
    assert flat.inputs["x"].shape == (1797, 64) and image.inputs["x"].shape == (1797, 1, 8, 8)
    np.testing.assert_array_equal(flat.inputs["x"], image.inputs["x"].reshape(1797, 64))


def test_random_data_follows_the_inputs():
    specs = IMG + [InputSpec("ids", (None, 7), np.dtype("int64"))]
    data = load_data("random:5", specs)
    assert data.labels is None
    assert data.inputs["input"].shape == (5, 1, 28, 28) and data.inputs["ids"].shape == (5, 7)
    with pytest.raises(DataError, match="dynamic dimensions"):
        random_data([InputSpec("x", (None, None), np.dtype("float32"))])
    with pytest.raises(DataError, match="random:64"):
        load_data("random:many", IMG)


def test_inputs_without_a_shared_batch_axis_are_one_line_errors():
    """A recurrent state [2, 1, 128] beside audio [1, 512] (silero-vad): data cannot be
    batched on the first axis; random data and given data both say so in one line."""
    specs = [InputSpec("input", (1, 512), np.dtype("float32")),
             InputSpec("state", (2, 1, 128), np.dtype("float32")),
             InputSpec("sr", (), np.dtype("int64"))]
    with pytest.raises(DataError, match="different fixed first dimensions .input: 1, state: 2."):
        random_data(specs, 4)
    feeds = [{"input": np.zeros((1, 512), np.float32), "state": np.zeros((2, 1, 128), np.float32),
              "sr": np.array(16000)}]
    with pytest.raises(DataError, match="different fixed first dimensions"):
        load_data(feeds, specs).peek()
    random_data(specs[:1] + specs[2:], 4)  # a scalar beside a batch is fine
