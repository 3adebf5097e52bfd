"""torch → ONNX: export with a dynamic batch, readable layer names, checked against torch.

Needs torch and onnxscript (the `train` extra). The dynamo exporter is tried first and
the TorchScript one is the fallback for models it cannot trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from onnxamc.errors import ModelError
from onnxamc.graph.layers import LAYER_OPS
from onnxamc.graph.model import save_model

OPSET = 18


def export_torch(model, input_shape: Sequence[int], path: str | Path, opset: int = OPSET,
                 input_name: str = "input", output_name: str = "logits",
                 atol: float = 1e-4) -> onnx.ModelProto:
    """Export an nn.Module in eval mode to `path` and verify it against torch."""
    import logging
    import warnings

    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed"
    warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    model = model.eval()
    example = torch.rand(*input_shape)
    proto = None
    errors = []
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        forward_arg = _first_forward_arg(model)
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                    input_names=[input_name], output_names=[output_name],
                                    dynamic_shapes={forward_arg: {0: batch}}, optimize=True,
                                    verbose=False)
        proto = program.model_proto
    except Exception as exc:  # fall back to the TorchScript exporter
        errors.append(f"dynamo: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        try:
            import io

            buffer = io.BytesIO()
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=[input_name], output_names=[output_name],
                              dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
            proto = onnx.load_from_string(buffer.getvalue())
        except Exception as exc2:
            errors.append(f"torchscript: {str(exc2).splitlines()[0] if str(exc2) else type(exc2).__name__}")
    if proto is None:
        raise ModelError("the model cannot be exported to ONNX (" + "; ".join(errors) + ")")
    proto = tidy(proto)
    onnx.checker.check_model(proto)
    verify_against_torch(model, proto, input_shape, atol)
    save_model(proto, path)  # atomic, and only once its outputs match torch
    return proto


def load_factory(entry: str, weights: str | Path | None = None):
    """`package.module:factory` → the nn.Module it returns (weights loaded if given).

    The current directory is importable, as it is for `python -m`.
    """
    from onnxamc.entry_points import import_entry

    factory = import_entry(entry, "torch entry point", ModelError)
    try:
        model = factory() if callable(factory) else factory
    except Exception as exc:
        raise ModelError(f"{entry}() failed: {type(exc).__name__}: {exc}") from None
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{entry} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            model.load_state_dict(state)
        except FileNotFoundError:
            raise ModelError(f"weights file {str(weights)!r} does not exist") from None
        except Exception as exc:
            raise ModelError(f"cannot load weights {weights} into {entry}: "
                             f"{str(exc).splitlines()[0]}") from None
    return model


def parse_shape(text: str) -> tuple[int, ...]:
    """`1,3,224,224` → (1, 3, 224, 224)."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise ModelError(f"input shape {text!r} is not a comma-separated list of integers") from None
    if not shape or any(v <= 0 for v in shape):
        raise ModelError(f"input shape {text!r} must have positive dimensions")
    return shape


def tidy(model: onnx.ModelProto) -> onnx.ModelProto:
    """Name each layer after its torch module ("layers.0.conv1") and drop exporter metadata.

    Layer names are what policies are keyed on, so they should read like the model's code.
    """
    taken = {n.name for n in model.graph.node}
    for node in model.graph.node:
        del node.metadata_props[:]
        if node.op_type in LAYER_OPS and len(node.input) > 1:
            weight = node.input[1]
            if weight.endswith(".weight"):
                new = weight[: -len(".weight")]
                if new not in taken:
                    taken.discard(node.name)
                    node.name = new
                    taken.add(new)
    return model


def verify_against_torch(model, proto: onnx.ModelProto, input_shape: Sequence[int],
                         atol: float = 1e-4) -> None:
    """Run both on the same random batch (a different batch size than exported)."""
    import onnxruntime as ort
    import torch

    x = torch.rand(3, *input_shape[1:])
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    err = float(np.max(np.abs(got - want)))
    if not np.allclose(got, want, rtol=1e-4, atol=atol):
        raise ModelError(f"exported ONNX model differs from torch (max abs error {err:.2e})")


def _first_forward_arg(model) -> str:
    import inspect

    params = [p for p in inspect.signature(model.forward).parameters if p != "self"]
    return params[0] if params else "x"
