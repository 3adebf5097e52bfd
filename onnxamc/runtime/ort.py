"""onnxruntime sessions with a fixed thread count, batched inference and timing."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx

from onnxamc.runtime.latency import LatencyStats, measure_interleaved

DEFAULT_THREADS = 1
# onnxruntime's own log: errors (they also arrive as exceptions); the CLI, whose errors are
# one line each, raises it to fatal only.
LOG_SEVERITY = 3


def make_session(model: onnx.ModelProto | bytes | str, threads: int = DEFAULT_THREADS,
                 providers: list | None = None, provider_options: list | None = None):
    """An InferenceSession with `threads` intra-op threads, sequential execution,
    and full graph optimisation (what a deployment would use)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = LOG_SEVERITY
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    return ort.InferenceSession(model, options,
                                providers=providers or ["CPUExecutionProvider"],
                                provider_options=provider_options)


def run_batches(session, batches: Iterable[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Every output over all batches, each concatenated along the batch axis."""
    per_batch = [session.run(None, feed) for feed in batches]
    return [np.concatenate([b[k] for b in per_batch], axis=0) for k in range(len(per_batch[0]))]


def time_sessions(sessions: list, feed: dict[str, np.ndarray], warmup: int = 10,
                  runs: int = 50, min_seconds: float = 0.0) -> list[LatencyStats]:
    """Latency of each session on the same feed, measured interleaved."""
    runners = [(lambda s=s: s.run(None, feed)) for s in sessions]
    return measure_interleaved(runners, warmup, runs, min_seconds)
