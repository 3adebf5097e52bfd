"""A folder of images as data: PNGs written here, labelled by subfolder, preprocessed as
the model input needs or as --preprocess says."""

import numpy as np
import pytest
from PIL import Image

from onnxamc import api
from onnxamc.cli import main
from onnxamc.data_images import Preprocess
from onnxamc.errors import DataError
from onnxamc.graph import InputSpec


def write_png(path, size, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = {"RGB": (3,), "L": ()}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], *channels), dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """Two classes, three images each, of different sizes."""
    root = tmp_path / "images"
    for label, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(3):
            write_png(root / name / f"{i}.png", (10 + 3 * i, 12), seed=10 * label + i)
    return root


def test_folder_labels_by_subfolder_and_resizes_to_the_model(folder, tiny_cnn):
    data = api.data_for(tiny_cnn, folder)
    assert data.size == 6 and "classes cat, dog" in data.notes[0]
    feeds = list(data.labelled_batches(4))
    assert [list(labels) for _, labels in feeds] == [[0, 0, 0, 1], [1, 1]]
    first = feeds[0][0]["input"][0]
    with Image.open(folder / "cat" / "0.png") as image:
        want = np.asarray(image.convert("L").resize((8, 8), Image.Resampling.BILINEAR),
                          np.float32) / 255
    assert first.shape == (1, 8, 8) and np.allclose(first[0], want)
    metrics = api.evaluate(tiny_cnn, folder, runs=2)
    assert metrics.metric == "top1" and 0 <= metrics.quality <= 1


def test_preprocess_spec_resize_crop_mean_std_layout():
    spec = InputSpec("x", (None, 6, 6, 3), np.dtype("float32"))  # NHWC, read off the shape
    prep = Preprocess.parse("resize=8,crop=6,mean=0.5/0.5/0.5,std=0.25/0.25/0.25").for_input(spec)
    assert prep.layout == "nhwc" and prep.color == "rgb" and prep.scale == 255
    image = Image.fromarray(np.full((16, 8, 3), 255, np.uint8))  # 8 wide, 16 high
    sample = prep(image)
    assert sample.shape == (6, 6, 3) and np.allclose(sample, (1.0 - 0.5) / 0.25)
    nchw = Preprocess.parse({"resize": (4, 5), "dtype": "uint8"}).for_input(
        InputSpec("x", (None, 3, None, None), np.dtype("uint8")))
    out = nchw(image)
    assert out.shape == (3, 4, 5) and out.dtype == np.uint8 and out.max() == 255


@pytest.mark.parametrize("spec, message", [
    ("resize=big", "resize='big' is not a number"),
    ("zoom=2", "unknown field 'zoom'"),
    ("layout=chw", "layout must be one of nchw, nhwc"),
    ("crop", "'crop' is not FIELD=VALUE"),
])
def test_bad_preprocess_specs(spec, message):
    with pytest.raises(DataError, match=message):
        Preprocess.parse(spec)


def test_bad_folders_are_one_line(tmp_path, tiny_cnn):
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = tmp_path / "mixed"
    (mixed / "a").mkdir(parents=True)
    write_png(mixed / "a" / "1.png", (8, 8), 0)
    write_png(mixed / "top.png", (8, 8), 1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png")
    for path, message in ((empty, "has no images"), (mixed, "at its top and in subfolders"),
                          (broken, "cannot read it")):
        with pytest.raises(DataError, match=message) as err:
            api.data_for(tiny_cnn, path)
        assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"is \[1, 4, 4\] after preprocessing"):
        api.data_for(tiny_cnn, mixed / "a", preprocess="resize=4x4")


def test_cli_bench_on_an_image_folder(folder, tiny_cnn, capsys):
    assert main(["bench", str(tiny_cnn), "--data", str(folder), "--preprocess",
                 "resize=9,crop=8", "--runs", "2"]) == 0
    assert "quality: top1 on" in capsys.readouterr().out
