"""Intermediate activations of a model on data, for calibration and reconstruction.

The one place where passes get tensors computed by a model: they hand over a model, the
feeds and the tensor names, and get arrays back, without knowing about sessions.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx

from onnxamc.runtime.device_lock import compute_step
from onnxamc.runtime.ort import DEFAULT_THREADS, make_session


def fetch_activations(model: onnx.ModelProto, feeds: Iterable[dict[str, np.ndarray]],
                      names: list[str], threads: int = DEFAULT_THREADS) -> dict[str, np.ndarray]:
    """{name: activations over all feeds, concatenated on the batch axis}."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    for name in names:
        if name not in outputs:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    session = make_session(probe, threads)
    batches = []
    for feed in feeds:
        with compute_step():  # another worker's measurement has the machine to itself
            batches.append(session.run(names, feed))
    return {name: np.concatenate([b[k] for b in batches], axis=0)
            for k, name in enumerate(names)}
