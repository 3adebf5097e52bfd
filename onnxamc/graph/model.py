"""Loading, checking and saving ONNX models; input specs and a structural fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.errors import ModelError
from onnxamc.graph.checks import admit

# Protobuf's hard limit; above it weights must live in external data files.
PROTOBUF_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, shape (None for a dynamic dimension) and numpy dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


def load_model(source: str | Path | onnx.ModelProto, infer_shapes: bool = True) -> onnx.ModelProto:
    """Read a model (path or ModelProto, external data too), checked and shape-inferred."""
    if isinstance(source, onnx.ModelProto):
        model = source
    else:
        path = Path(source)
        if not path.exists():
            raise ModelError(f"model file {str(path)!r} does not exist")
        if path.is_dir():
            raise ModelError(f"{str(path)!r} is a directory, not an ONNX file")
        try:
            model = onnx.load(str(path), load_external_data=True)
        except Exception as exc:
            raise ModelError(f"{path} is not a readable ONNX model: {_first_line(exc)}") from None
        if not model.graph.node:
            raise ModelError(f"{path} is not an ONNX model (no graph nodes found)")
    model = admit(model)  # graph/checks.py: opsets older than the quantizer's upgraded
    try:
        onnx.checker.check_model(model if model.ByteSize() < PROTOBUF_LIMIT else without_weights(model))
    except Exception as exc:
        raise ModelError(f"invalid ONNX model: {_first_line(exc)}") from None
    if infer_shapes:
        model = infer(model)
    return model


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The one way passes copy a model: a deep copy whose nodes all carry the names the
    layer table uses (their own, else op type + position), so a pass, onnxruntime's
    quantizers and the policy all find a layer by the same name."""
    from onnxamc.graph.layers import node_names

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name, node in zip(node_names(out), out.graph.node):
        node.name = name
    return out


def infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference that never fails the caller: missing shapes only cost features."""
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        return model


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Save atomically, putting weights in an external file only when protobuf cannot
    hold them."""
    from onnxamc.files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        if model.ByteSize() >= PROTOBUF_LIMIT:
            onnx.save(model, str(tmp), save_as_external_data=True,
                      location=path.name + ".data", size_threshold=1024)
        else:
            onnx.save(model, str(tmp))
    return path


def serialized_size(model: onnx.ModelProto) -> int:
    """Bytes the model takes when serialized: the honest on-disk size."""
    return model.ByteSize()


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The real inputs (graph inputs that are not initializers), batch dim first."""
    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        specs.append(InputSpec(value.name, dims, dtype))
    return specs


def initializer_map(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def constant_array(model: onnx.ModelProto, name: str,
                   initializers: dict[str, onnx.TensorProto] | None = None) -> np.ndarray | None:
    """The value of a tensor that is an initializer or a Constant node's output, else None."""
    inits = initializer_map(model) if initializers is None else initializers
    if name in inits:
        return numpy_helper.to_array(inits[name])
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
    return None


def fingerprint(model: onnx.ModelProto) -> str:
    """A hash of the graph's structure (ops, wiring, weight shapes), not of weight values.

    A policy stays valid for the same architecture with retrained weights, and is
    rejected for a different one.
    """
    digest = hashlib.sha256()
    for node in model.graph.node:
        digest.update(f"{node.op_type}|{','.join(node.input)}|{','.join(node.output)};".encode())
    for init in sorted(model.graph.initializer, key=lambda i: i.name):
        digest.update(f"{init.name}:{list(init.dims)};".encode())
    return digest.hexdigest()[:16]


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without weight data, for checking models too large for protobuf."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        init.ClearField("raw_data")
    return copy


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
