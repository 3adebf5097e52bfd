"""Quality metrics: the built-ins on known arrays, streaming equals whole arrays, the
default chosen from the outputs, per-output metrics, user metrics, and what --max-drop
and --min-quality mean for each metric."""

import math

import numpy as np
import pytest

from onnxamc.errors import DataError, MetricError, SearchError
from onnxamc.quality import (ORIGINAL, SNR_CAP_DB, OutputSpec, metric, resolve_quality)
from onnxamc.quality.bounds import drop_bound

LOGITS = OutputSpec(0, "logits", (None, 10), "Gemm")
EMBEDDING = OutputSpec(0, "sentence_embedding", (None, 64), "Div")
MAP = OutputSpec(0, "depth", (None, 1, 8, 8), "Conv")
SEG = OutputSpec(0, "classes", (None, 3, 8, 8), "Conv")
SECOND_MAP = OutputSpec(1, "depth", (None, 1, 8, 8), "Conv")


def score(spec, outputs, reference=None, labels=None, specs=(LOGITS,)):
    quality = resolve_quality(spec, list(specs), labels)
    return quality, quality.score_all(outputs, reference, labels)


def test_top1_top5_and_agreement():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)).astype(np.float32)
    labels = logits.argmax(1)
    labels[:10] = (labels[:10] + 1) % 10  # 10 of 50 wrong at top-1
    assert score("top1", [logits], labels=labels)[1] == pytest.approx(0.8)
    second = np.argsort(-logits, axis=1)[:, 1]
    assert score("top5", [logits], labels=second)[1] == 1.0
    noisy = logits.copy()
    noisy[:5] = -noisy[:5]
    quality, value = score("agreement", [noisy], reference=[logits])
    assert quality.against == ORIGINAL and value == pytest.approx(0.9)


def test_cosine_snr_mse_on_known_outputs():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(40, 64)).astype(np.float32)
    specs = (EMBEDDING,)
    assert score("cosine", [ref], [ref], specs=specs)[1] == pytest.approx(1.0)
    assert score("cosine", [-ref], [ref], specs=specs)[1] == pytest.approx(-1.0)
    noise = 0.1 * rng.normal(size=ref.shape).astype(np.float32)
    want = 10 * math.log10(float((ref.astype(np.float64) ** 2).sum() / (noise.astype(np.float64) ** 2).sum()))
    assert score("snr", [ref + noise], [ref], specs=specs)[1] == pytest.approx(want, rel=1e-4)
    assert score("snr", [ref], [ref], specs=specs)[1] == SNR_CAP_DB
    quality, mse = score("mse", [ref + noise], [ref], specs=specs)
    assert not quality.higher_is_better
    assert mse == pytest.approx(float(np.mean(noise.astype(np.float64) ** 2)), rel=1e-4)


def test_iou_of_masks_argmax_and_threshold():
    truth = np.zeros((2, 3, 8, 8), np.float32)
    truth[:, 0] = 1  # background everywhere
    truth[:, 1, :4, :4], truth[:, 2, 4:, 4:] = 5, 5  # two squares of 16 pixels
    pred = truth.copy()
    pred[:, 1, :4, :2] = 0  # class 1 loses half its square to the background
    quality, value = score("iou", [pred], [truth], specs=(SEG,))
    inter = np.array([32, 8, 16]) * 2
    union = np.array([40, 16, 16]) * 2
    assert value == pytest.approx(float(np.mean(inter / union)))
    prob = np.zeros((2, 1, 8, 8), np.float32)
    prob[:, :, :4] = 0.8
    shifted = np.roll(prob, 2, axis=2)  # rows 2-5: 16 pixels shared, 48 in either
    q, v = score("iou:0.5", [shifted], [prob], specs=(MAP,))
    assert q.label() == "iou at 0.5 on 'depth'" and v == pytest.approx(16 / 48)


def test_streaming_equals_whole_arrays():
    """Batch by batch (as the evaluator feeds a metric) gives what whole arrays give."""
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(100, 1, 8, 8)).astype(np.float32)
    out = ref + 0.2 * rng.normal(size=ref.shape).astype(np.float32)
    for name in ("snr", "mse", "cosine", "iou"):
        quality = resolve_quality(name, [MAP], None)
        tally = quality.start()
        for lo in range(0, 100, 32):
            tally.add([out[lo:lo + 32]], quality.truth([ref[lo:lo + 32]], None))
        assert tally.value() == pytest.approx(quality.score_all([out], [ref]), rel=1e-9), name


@pytest.mark.parametrize("spec, labels, want", [
    ([LOGITS], None, "fidelity: agreement on 'logits'"),
    ([LOGITS], np.zeros(1, np.int64), "quality: top1 on 'logits'"),
    ([EMBEDDING], None, "fidelity: cosine on 'sentence_embedding'"),
    ([OutputSpec(0, "output", (None, 384), "ReduceMean")], None, "fidelity: cosine on 'output'"),
    ([OutputSpec(0, "tokens", (None, 7, 384), "Add")], None, "fidelity: cosine on 'tokens'"),
    ([MAP], None, "fidelity: snr on 'depth'"),
    ([MAP], np.zeros((1, 1, 8, 8), np.int64), "quality: iou on 'depth'"),
    ([MAP], np.zeros((1, 1, 8, 8), np.float32), "quality: snr on 'depth'"),
    ([LOGITS, OutputSpec(1, "emb", (None, 64), "Gemm")], None,
     "fidelity: agreement on the worst of 'logits', 'emb'"),
    ([LOGITS, SECOND_MAP], None, "fidelity: cosine on the worst of 'logits', 'depth'"),
])
def test_default_metric_from_labels_and_output_shapes(spec, labels, want):
    assert resolve_quality(None, spec, labels).headline().startswith(want)


def test_several_outputs_one_combined_and_each_reported():
    two = [LOGITS, SECOND_MAP]
    quality = resolve_quality("logits=agreement,depth=snr", two, None)
    assert quality.label().startswith("agreement on 'logits' (chooses); also reported: snr")
    rng = np.random.default_rng(3)
    ref = [rng.normal(size=(20, 10)).astype(np.float32), rng.normal(size=(20, 1, 8, 8))]
    out = [ref[0], ref[1] + 0.1]
    tally = quality.start()
    tally.add(out, quality.truth(ref, None))
    assert tally.value() == 1.0  # the first listed drives
    assert set(tally.per_output()) == {"logits", "depth"}
    assert tally.per_output()["depth"]["quality"] < SNR_CAP_DB
    worst = resolve_quality("snr", two, None)  # one metric on every output: the worst counts
    t = worst.start()
    t.add(out, worst.truth(ref, None))
    assert t.value() == t.per_output()["depth"]["quality"]


@pytest.mark.parametrize("spec, message", [
    ("accuracy", "unknown metric 'accuracy'"),
    ("nope=cosine", "no output 'nope'"),
    ("snr:3", "only iou takes an argument"),
    ("iou:x", "threshold must be a number"),
    ("onnxamc.nothing_here:fn", "cannot import 'onnxamc.nothing_here' for the metric"),
    (3, "a metric is a name"),
])
def test_bad_metric_specs_are_one_line(spec, message):
    with pytest.raises(MetricError, match=message) as err:
        resolve_quality(spec, [LOGITS], None)
    assert "\n" not in str(err.value)


def test_top1_without_labels_says_to_use_agreement():
    with pytest.raises(DataError, match="top1 needs labels.*agreement"):
        resolve_quality("top1", [LOGITS], None)


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 3, 12]), r"sample 2 has label 12, but output 'logits' has 10 classes"),
    (np.array([0, -1, 2]), "sample 1 has the negative label -1"),
    (np.array([0.0, 2.5, 1.0]), "sample 1 is 2.5, not a class index"),
])
def test_labels_that_do_not_fit_the_classes(labels, message):
    quality = resolve_quality(None, [LOGITS], labels)
    with pytest.raises(DataError, match=message):
        quality.score_all([np.zeros((3, 10), np.float32)], None, labels)


def test_user_metric_outputs_labels_reference_and_direction():
    seen = {}

    @metric(higher_is_better=False, name="abs-error")
    def abs_error(outputs, labels, reference):
        seen.update(outputs=outputs, labels=labels)
        return float(np.abs(outputs["logits"] - reference["logits"]).mean())

    quality = resolve_quality(abs_error, [LOGITS], np.zeros(1))
    assert quality.name == "abs-error" and not quality.higher_is_better
    ref = np.ones((6, 10), np.float32)
    tally = quality.start()
    for lo in (0, 3):  # two batches: the function sees the whole set once
        tally.add([ref[lo:lo + 3] + 0.5], quality.truth([ref[lo:lo + 3]], np.arange(lo, lo + 3)))
    assert tally.value() == pytest.approx(0.5)
    assert seen["outputs"]["logits"].shape == (6, 10) and list(seen["labels"]) == list(range(6))


def test_user_metric_failures_name_the_function():
    def broken(outputs):
        raise ZeroDivisionError("division by zero")

    def words(outputs):
        return "good"

    for fn, message in ((broken, "metric .*broken raised ZeroDivisionError: division by zero"),
                        (words, "metric .*words returned str, not one number"),
                        (lambda: 1, "takes no parameters")):
        with pytest.raises(MetricError, match=message) as err:
            resolve_quality(fn, [LOGITS], None).score_all([np.zeros((2, 10))])
        assert "\n" not in str(err.value)


def test_bounds_in_each_metrics_units():
    top1 = resolve_quality("top1", [LOGITS], np.zeros(1))
    assert drop_bound(top1, 0.9).max_drop == 0.01
    with pytest.raises(SearchError, match="beyond what top1 can lose"):
        drop_bound(top1, 0.9, max_drop=1.5)
    snr = resolve_quality("snr", [MAP], None)
    assert drop_bound(snr, SNR_CAP_DB).max_drop == SNR_CAP_DB - 30  # at least 30 dB
    bound = drop_bound(snr, SNR_CAP_DB, min_quality=40)
    assert bound.max_drop == 60 and bound.text.startswith("snr >= 40.00 dB")
    assert drop_bound(snr, SNR_CAP_DB, max_drop=2).max_drop == 2  # dB, not a share
    cosine = resolve_quality("cosine", [EMBEDDING], None)
    assert drop_bound(cosine, 1.0, min_quality=0.995).max_drop == pytest.approx(0.005)
    mse = resolve_quality("mse", [MAP], None)
    assert drop_bound(mse, 0.0, min_quality=0.02).max_drop == pytest.approx(0.02)
    with pytest.raises(SearchError, match="no natural scale"):
        drop_bound(mse, 0.0)
    with pytest.raises(SearchError, match="worse than --min-quality"):
        drop_bound(snr, 25.0, min_quality=30)
