"""torch → ONNX the way users do it: `torch.onnx.export` with either exporter, defaults
kept (no onnxamc tidying), the result checked against torch once when it is built."""

from __future__ import annotations

import importlib
import io
from pathlib import Path

import numpy as np
import onnx

from zoo.records import Entry
from zoo.torch_import import import_timm, import_torchvision

AXIS_NAMES = {"batch": {0: "batch"}, "spatial": {2: "height", 3: "width"},
              "sequence": {1: "sequence"}}


def build_module(entry: Entry):
    """The nn.Module an entry names, in eval mode, with seeded random weights."""
    import torch

    torch.manual_seed(0)
    kwargs = dict(entry.kwargs)
    if entry.source == "torchvision":
        tv = import_torchvision()
        namespace = tv.models.segmentation if entry.family == "segmentation" else tv.models
        module = getattr(namespace, entry.model)(weights=None, **kwargs)
    elif entry.source == "timm":
        module = import_timm().create_model(entry.model, pretrained=False, **kwargs)
    else:
        module = getattr(importlib.import_module("zoo.torch_models"), entry.model)(**kwargs)
    if entry.family == "segmentation":
        module = _tuple_outputs(module)
    return module.eval()


def export(entry: Entry, path: Path) -> Path:
    """Export `entry` to `path` with its exporter and check ORT against torch."""
    import torch

    module = build_module(entry)
    batch = 2 if entry.exporter == "dynamo" and "batch" in entry.dynamic else None
    feed = entry.feed(seed=1, batch=batch)
    args = tuple(torch.from_numpy(a) for a in feed.values())
    names = list(feed)
    if entry.exporter == "torchscript":
        buffer = io.BytesIO()
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=entry.opset,
                          input_names=names, output_names=list(entry.outputs),
                          dynamic_axes=_dynamic_axes(entry) or None)
        proto = onnx.load_from_string(buffer.getvalue())
    else:
        program = torch.onnx.export(module, args, dynamo=True, opset_version=entry.opset,
                                    input_names=names, output_names=list(entry.outputs),
                                    dynamic_shapes=_dynamic_shapes(entry), verbose=False)
        proto = program.model_proto
    _check_against_torch(module, proto, args, feed, entry.name)
    onnx.save(proto, str(path))
    return path


def _tuple_outputs(module):
    """The module with its dict outputs (torchvision segmentation) returned as a tuple."""
    import torch

    class Tupled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return tuple(self.inner(x).values())

    return Tupled(module)


def _dynamic_axes(entry: Entry) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for spec in entry.inputs:
        for kind in entry.dynamic:
            for axis, label in AXIS_NAMES[kind].items():
                if axis < len(spec.shape):
                    axes.setdefault(spec.name, {})[axis] = label
    if "batch" in entry.dynamic:
        for name in entry.outputs:
            axes[name] = {0: "batch"}
    return axes


def _dynamic_shapes(entry: Entry):
    if not entry.dynamic:
        return None
    import torch

    dims = {}
    for kind in entry.dynamic:
        for axis, label in AXIS_NAMES[kind].items():
            dims[axis] = torch.export.Dim(label)
    return tuple({a: d for a, d in dims.items() if a < len(spec.shape)} for spec in entry.inputs)


def _check_against_torch(module, proto: onnx.ModelProto, args, feed, name: str) -> None:
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        expected = module(*args)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, feed)
    for want, have in zip(expected, got):
        want = want.numpy()
        scale = max(1.0, float(np.abs(want).max()))
        if want.shape != have.shape or not np.isfinite(have).all() or \
                float(np.abs(want - have).max()) > 1e-3 * scale:
            raise AssertionError(f"zoo export of {name} disagrees with torch")
