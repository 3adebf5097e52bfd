"""onnxruntime sessions for a Target: CPU or CUDA execution provider, IO binding on CUDA.

A CUDA target on a machine without a usable CUDA execution provider is a one-line
TargetError, never a silent fall-back to CPU (which would feed wrong latencies to the
search).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from onnxamc.errors import TargetError
from onnxamc.runtime.ort import make_session
from onnxamc.runtime.target import Target

CUDA_EP = "CUDAExecutionProvider"


def check_cuda_provider(target: Target) -> None:
    import onnxruntime as ort

    if CUDA_EP not in ort.get_available_providers():
        raise TargetError(f"target {target.name} needs CUDA, but this onnxruntime has no CUDA "
                          "execution provider (install onnxruntime-gpu on a machine with an "
                          "NVIDIA GPU)")


def target_session(model: onnx.ModelProto | bytes | str, target: Target):
    """An InferenceSession on the target's execution provider with its options."""
    if target.compute_device != "cuda":
        return make_session(model, target.threads)
    check_cuda_provider(target)
    session = make_session(model, target.threads, [CUDA_EP, "CPUExecutionProvider"],
                           [dict(target.provider_options), {}])
    if session.get_providers()[0] != CUDA_EP:
        raise TargetError(f"target {target.name}: the CUDA execution provider did not start "
                          "(no GPU visible, or CUDA/cuDNN libraries missing)")
    return session


def session_runner(session, feed: dict[str, np.ndarray], target: Target) -> Callable[[], object]:
    """A no-argument callable that runs one inference, as the timing loop wants it.

    On CUDA with io_binding the inputs are copied to the GPU once and outputs stay there,
    so the time is the model's, not the PCIe copies'; the call waits for the GPU."""
    if target.compute_device != "cuda" or not target.io_binding:
        return lambda: session.run(None, feed)
    import onnxruntime as ort

    device_id = int(target.provider_options.get("device_id", 0))
    binding = session.io_binding()
    for name, array in feed.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda",
                                                                           device_id))
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda", device_id)
    binding.synchronize_inputs()

    def run() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
    return run
