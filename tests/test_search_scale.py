"""Cost per trial and latency trust: the parts, each on real models and sessions."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest

from onnxamc import api
from onnxamc.config import RunConfig
from onnxamc.metrics import Metrics
from onnxamc.runtime.latency import RatioInterval, ratio_intervals
from onnxamc.search import AccuracyBound, LatencyBudget
from onnxamc.search.fidelity import Checkpoint, Stop, slices


def test_ratio_interval_covers_a_known_ratio_and_narrows_with_rounds():
    rng = np.random.default_rng(0)
    base = 1e-3 * (1 + rng.gamma(2.0, 0.05, size=(400, 1)))  # machine phases, shared
    samples = np.hstack([base, 0.6 * base]) * (1 + rng.normal(0, 0.02, size=(400, 2)))
    few, many = ratio_intervals(samples[:20])[1], ratio_intervals(samples)[1]
    assert many.low <= 0.6 <= many.high and abs(many.ratio - 0.6) < 0.01
    assert (many.high - many.low) < (few.high - few.low)
    assert not many.contains_one and RatioInterval.exact().contains_one
    assert ratio_intervals(samples)[0].ratio == 1.0


def test_unchanged_model_is_never_reported_as_a_speed_up(resnet20):
    from onnxamc.workflows.candidates import build_candidate
    from onnxamc.workflows.run import Run

    run = Run(resnet20)
    evaluator = run.evaluator(data=None, runs=10, measure_energy=False)
    identity = build_candidate(run, api.uniform_policy(resnet20, "bits=32"))
    original, same = evaluator.compare([identity])
    assert same.latency_ratio == 1.0 and same.latency_interval["low"] == 1.0
    assert same.no_measurable_change and "no measurable change" in same.describe_latency()


def test_busy_reading_sees_a_cpu_burner():
    from onnxamc.runtime.busy import CpuWatch

    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        watch = CpuWatch()
        time.sleep(1.0)
        busy = watch.stop()
    finally:
        burner.kill()
        burner.wait()
    assert busy is not None and busy.other_cores >= 0.7
    assert "other processes used" in busy.describe()


@pytest.mark.parametrize("other_cores, cpus, core_taken, contended", [
    (0.1, 2, 0.0, False),  # a quiet machine
    (0.5, 2, 0.4, True),  # something shared the measurement's own core
    (0.95, 2, 0.0, True),  # its core free, the only other one saturated
    (1.0, 8, 0.0, False),  # one busy core out of seven others
    (6.9, 8, 0.0, True),  # all seven others busy
    (0.5, 1, None, True),  # one core: anything else running shares it
    (1.2, 2, None, True),  # unpinned: others wanted more than the other core
])
def test_busy_is_contended_when_our_core_or_every_other_core_is_taken(
        other_cores, cpus, core_taken, contended):
    from onnxamc.runtime.busy import Busy

    core = None if core_taken is None else cpus - 1
    assert Busy(other_cores, cpus, core, core_taken).contended is contended


def _hold(path_key, seconds, queue):
    from onnxamc.runtime.device_lock import exclusive_measurement

    with exclusive_measurement(path_key, pin=False):
        queue.put(("in", time.time()))
        time.sleep(seconds)
        queue.put(("out", time.time()))


def test_measurements_take_turns_across_processes():
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    key = f"test-{time.time()}"
    workers = [context.Process(target=_hold, args=(key, 1.0, queue)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    events = sorted((queue.get(timeout=5) for _ in range(4)), key=lambda e: e[1])
    assert [e[0] for e in events] == ["in", "out", "in", "out"]  # never both inside


def test_a_workers_compute_waits_for_a_measurement_and_never_otherwise():
    """A compute step of a worker sharing the machine waits while another process
    measures on the device, and starts at once when nobody measures or it shares
    nothing."""
    from onnxamc.runtime import device_lock

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    key = f"test-quiet-{time.time()}"
    try:
        device_lock.share_machine(key)
        start = time.perf_counter()
        with device_lock.compute_step():
            assert time.perf_counter() - start < 0.1  # nobody measures
        holder = context.Process(target=_hold, args=(key, 1.5, queue))
        holder.start()
        assert queue.get(timeout=60)[0] == "in"
        with device_lock.compute_step():
            left = time.time()
        out = queue.get(timeout=5)
        assert out[0] == "out" and left >= out[1]  # waited for the measurement to end
        holder.join(10)
    finally:
        device_lock.stop_sharing_machine()
    holder = context.Process(target=_hold, args=(key, 1.5, queue))
    holder.start()
    assert queue.get(timeout=60)[0] == "in"
    start = time.perf_counter()
    with device_lock.compute_step():  # not sharing: never waits
        assert time.perf_counter() - start < 0.1
    holder.join(10)


def _step(key, seconds, queue):
    from onnxamc.runtime import device_lock

    device_lock.share_machine(key)
    with device_lock.compute_step():
        queue.put(("step in", time.time()))
        time.sleep(seconds)
        queue.put(("step out", time.time()))


def test_a_measurement_waits_for_the_compute_steps_in_progress():
    """A worker in the middle of a step (a candidate's build) when another starts to
    measure: the measurement starts once that step has ended; the measuring worker's
    own steps inside it never wait for themselves."""
    from onnxamc.runtime import device_lock

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    key = f"test-steps-{time.time()}"
    worker = context.Process(target=_step, args=(key, 1.5, queue))
    worker.start()
    try:
        assert queue.get(timeout=60)[0] == "step in"
        device_lock.share_machine(key)
        with device_lock.exclusive_measurement(key, pin=False):
            began = time.time()
            with device_lock.compute_step():  # nested in the measurement: no wait
                pass
        out = queue.get(timeout=5)
        assert out[0] == "step out" and began >= out[1]
    finally:
        device_lock.stop_sharing_machine()
        worker.join(10)


def test_slices_grow_by_three_and_end_with_everything():
    assert slices(2000) == [223, 667, 2000]
    assert slices(300) == [300]
    assert slices(10000)[-1] == 10000 and len(slices(10000)) == 3


def test_checkpoint_stops_what_is_already_decided():
    over = Metrics(quality=0.8, latency_ratio=0.9,
                   latency_interval={"ratio": 0.9, "low": 0.85, "high": 0.95, "rounds": 50})
    with pytest.raises(Stop, match="above the bound"):
        Checkpoint(None, LatencyBudget(0.7)).latency(over)
    Checkpoint(None, LatencyBudget(0.7), seeded=True).latency(over)  # baselines run through
    with pytest.raises(Stop, match="slower than the best"):
        Checkpoint(None, AccuracyBound(0.01), best_latency=0.8).latency(over)
    Checkpoint(None, AccuracyBound(0.01), best_latency=0.97).latency(over)
    study = optuna.create_study(direction="minimize")
    trial = study.ask()
    bad = Metrics(quality=0.70, quality_drop=0.2, latency_ratio=0.5)
    with pytest.raises(Stop, match="surely over the bound"):
        Checkpoint(trial, AccuracyBound(0.01)).quality(bad, 1, 300, final=False)
    close = Metrics(quality=0.90, quality_drop=0.012, latency_ratio=0.5)
    Checkpoint(trial, AccuracyBound(0.01)).quality(close, 1, 300, final=False)  # noise


def test_a_drop_within_the_slices_noise_is_not_penalised_for_the_pruner():
    from onnxamc.search.fidelity import pruning_value

    bound = AccuracyBound(0.01)
    noisy = Metrics(quality=0.90, quality_drop=0.03, latency_ratio=0.5)  # 2 pts over
    assert pruning_value(bound, noisy, 223) == 0.5  # a 223-sample top-1: error 2.8 pts
    assert pruning_value(bound, noisy, 20000) > 0.5  # on 20,000 samples it is a violation
    assert pruning_value(bound, noisy) > 0.5  # no slice given: as measured
    far = Metrics(quality=0.80, quality_drop=0.15, latency_ratio=0.5)
    assert pruning_value(bound, far, 223) > 1.0
    budget = LatencyBudget(0.4)  # a latency constraint is not quality noise
    assert pruning_value(budget, noisy, 223) == pytest.approx(
        pruning_value(budget, noisy, 20000))


def test_segmented_forward_equals_the_whole_model_after_weight_edits(tiny_cnn):
    from onnx import numpy_helper

    from onnxamc.graph.model import copy_model, initializer_map
    from onnxamc.runtime import fetch_activations
    from onnxamc.runtime.segments import Forward

    model = copy_model(api.load(tiny_cnn))
    feeds = list(api.data_for(tiny_cnn, "digits", limit=100).batches(32))
    names = [n.output[0] for n in model.graph.node]
    forward = Forward(model, feeds)
    first = forward.fetch(names[len(names) // 2])
    np.testing.assert_allclose(first, fetch_activations(model, feeds, [names[len(names) // 2]])[
        names[len(names) // 2]], rtol=1e-5, atol=1e-6)
    conv = next(i for i, n in enumerate(model.graph.node) if n.op_type == "Conv")
    weight = initializer_map(model)[model.graph.node[conv].input[1]]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 0.5, weight.name))
    forward.changed(conv)
    last = model.graph.output[0].name
    np.testing.assert_allclose(forward.fetch(last), fetch_activations(model, feeds, [last])[last],
                               rtol=1e-5, atol=1e-5)


def test_calibration_cache_gives_the_same_model(resnet20, tmp_path):
    from onnxamc.workflows.run import Run

    run = Run(resnet20, RunConfig(calibration_samples=64))
    policy = api.uniform_policy(resnet20, "bits=8")
    first = run.apply(policy, check=False)  # calibrates, writes the ranges
    start = time.process_time()
    second = run.apply(policy, check=False)  # reads them
    cached = time.process_time() - start
    assert first.SerializeToString() == second.SerializeToString()
    fresh = Run(resnet20, RunConfig(calibration_samples=64, reconstruct=False))
    assert fresh.apply(policy, check=False, calibration_samples=None).SerializeToString() \
        == first.SerializeToString()
    assert cached < 5.0


def test_profile_says_where_a_trial_goes(tiny_cnn, tmp_path, capsys):
    from onnxamc.cli import main

    code = main(["search", str(tiny_cnn), "--data", "digits", "--calibration", "digits",
                 "--calibration-samples", "32", "--eval-samples", "200", "--runs", "5",
                 "--trials", "4", "--profile", "--no-progress", "-o", str(tmp_path / "p.onnx")])
    out = capsys.readouterr().out
    assert code == 0, out
    table = out.split("where a trial's time went")[1]
    for phase in ("build", "quality", "latency", "session", "trial total"):
        assert phase in table
    assert "cpu s/trial" in table
