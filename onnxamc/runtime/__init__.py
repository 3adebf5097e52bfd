"""Running models: onnxruntime sessions, TVM builds, remote devices, timing and energy.

Knows nothing of policies or search: it runs ModelProtos and feeds.
"""

from onnxamc.runtime.activations import fetch_activations
from onnxamc.runtime.latency import LatencyStats, measure_interleaved
from onnxamc.runtime.ort import DEFAULT_THREADS, make_session, run_batches, time_sessions

__all__ = ["DEFAULT_THREADS", "LatencyStats", "fetch_activations", "make_session",
           "measure_interleaved", "run_batches", "time_sessions"]
