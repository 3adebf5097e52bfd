"""Runtime: sessions with a fixed thread count, latency statistics, interleaving."""

import time

import numpy as np

from onnxamc.graph import load_model
from onnxamc.runtime import LatencyStats, make_session, measure_interleaved, time_sessions


def test_latency_stats():
    stats = LatencyStats.from_samples([0.001, 0.002, 0.003, 0.004])
    assert stats.median_ms == 2.5 and stats.runs == 4
    assert 3.5 < stats.p90_ms <= 4 and 0.4 < stats.cv < 0.5


def test_interleaved_measurement_orders_by_cost():
    fast, slow = (lambda: time.sleep(0.0005)), (lambda: time.sleep(0.003))
    a, b = measure_interleaved([fast, slow], warmup=1, runs=10)
    assert a.runs == b.runs == 10
    assert b.median_ms > 2 * a.median_ms


def _native_threads() -> int:
    import os

    return len(os.listdir("/proc/self/task"))


def test_session_thread_count_and_timing(tiny_cnn):
    """A session on one thread starts no intra-op worker threads; on four, three."""
    model = load_model(tiny_cnn)
    before = _native_threads()
    session = make_session(model, threads=1)
    one = _native_threads() - before
    four_threads = make_session(model, threads=4)
    four = _native_threads() - before - one
    assert one == 0 and four == 3, (one, four)
    del four_threads
    feed = {"input": np.zeros((1, 1, 8, 8), np.float32)}
    (stats,) = time_sessions([session], feed, warmup=2, runs=20)
    assert stats.runs == 20 and stats.median_ms > 0
