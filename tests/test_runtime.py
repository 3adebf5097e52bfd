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


def test_session_thread_count_and_timing(tiny_cnn):
    model = load_model(tiny_cnn)
    session = make_session(model, threads=1)
    assert session.get_session_options().intra_op_num_threads == 1
    feed = {"input": np.zeros((1, 1, 8, 8), np.float32)}
    (stats,) = time_sessions([session], feed, warmup=2, runs=20)
    assert stats.runs == 20 and stats.median_ms > 0
