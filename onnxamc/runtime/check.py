"""The check every compressed model passes before it is returned.

The passes never run a model (DESIGN.md walls): the caller hands this function to
`apply_policy` as its `check` hook. It raises a one-line CheckError, never a traceback.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxamc.errors import CheckError, first_line
from onnxamc.graph.model import PROTOBUF_LIMIT, model_inputs, without_weights
from onnxamc.runtime.ort import make_session

RTOL, ATOL = 1e-4, 1e-5


def check_compressed(original: onnx.ModelProto, compressed: onnx.ModelProto,
                     unchanged: bool = False, feed: dict[str, np.ndarray] | None = None) -> None:
    """onnx checker, onnxruntime load, the original's output shapes, and with `unchanged`
    (a policy that changes nothing) the original's outputs."""
    try:
        onnx.checker.check_model(compressed if compressed.ByteSize() < PROTOBUF_LIMIT
                                 else without_weights(compressed))
    except Exception as exc:
        raise CheckError(f"the compressed model is not valid ONNX: {first_line(exc)}") from None
    feed = feed if feed is not None else probe_feed(original)
    try:
        after = make_session(compressed).run(None, feed)
    except Exception as exc:
        raise CheckError("the compressed model does not run in onnxruntime: "
                         f"{first_line(exc)}") from None
    before = make_session(original).run(None, feed)
    names = [o.name for o in original.graph.output]
    for name, a, b in zip(names, before, after):
        if np.shape(a) != np.shape(b):
            raise CheckError(f"output {name!r} has shape {np.shape(b)} after compression, "
                             f"{np.shape(a)} before")
        if unchanged and not np.allclose(a, b, rtol=RTOL, atol=ATOL):
            raise CheckError(f"output {name!r} changed (max difference "
                             f"{float(np.max(np.abs(a - b))):.3g}) under a policy that "
                             "changes nothing")


def probe_feed(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """One input per model input: dynamic dims 1, floats uniform, integers 0, bools False."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in model_inputs(model):
        shape = tuple(1 if d is None else d for d in spec.shape)
        if np.issubdtype(spec.dtype, np.floating):
            feed[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
        else:
            feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feed

