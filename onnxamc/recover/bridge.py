"""ONNX ⇄ torch: train the weights of the graph our passes made, then write them back.

onnx2fx turns the float ONNX graph into a torch.fx GraphModule (onnx and torch only;
onnx2torch and onnx2pytorch need torchvision, which pulls a CUDA torch). The graph
structure stays the ONNX one: after training only initializer values change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.errors import ModelError


@dataclass
class TorchBridge:
    """A trainable torch module for an ONNX model and the names that tie them."""

    module: "torch.nn.Module"  # noqa: F821 (torch is imported lazily)
    parameters: dict[str, str]  # torch parameter name -> ONNX initializer name
    features: list[str] = field(default_factory=list)  # extra outputs after the model's own
    trainable: set[str] = field(default_factory=set)  # ONNX names of weights worth training

    def onnx_weights(self) -> dict[str, np.ndarray]:
        """Current values of the trainable initializers, by ONNX name."""
        return {onnx_name: param.detach().cpu().numpy()
                for name, param in self.module.named_parameters()
                if (onnx_name := self.parameters.get(name)) is not None}


def to_torch(model: onnx.ModelProto, feature_tensors: Sequence[str] = ()) -> TorchBridge:
    """A trainable module; `feature_tensors` (ONNX tensor names) are returned as extra
    outputs after the model's own, for feature distillation."""
    try:
        from onnx2fx import convert, make_trainable
        from onnx2fx.utils.names import sanitize_name
    except ImportError:
        raise ModelError("training needs torch and onnx2fx (pip install -e '.[train]')") from None
    graph_model = _with_outputs(model, feature_tensors)
    names: dict[str, str] = {}
    for init in graph_model.graph.initializer:
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                              onnx.TensorProto.DOUBLE):
            safe = sanitize_name(init.name)
            if safe in names:
                raise ModelError(f"initializers {names[safe]!r} and {init.name!r} map to the same "
                                 "torch name; rename one")
            names[safe] = init.name
    try:
        module = make_trainable(convert(graph_model))
    except Exception as exc:
        raise ModelError(f"cannot convert the model to torch: {str(exc).splitlines()[0]}") from None
    params = {name: names[name] for name, _ in module.named_parameters() if name in names}
    trainable = trainable_initializers(graph_model)
    for name, param in module.named_parameters():  # Clip bounds, shapes, scales stay fixed
        param.requires_grad_(params.get(name) in trainable)
    return TorchBridge(module, params, list(feature_tensors), trainable)


# op type -> input positions that hold learnable weights
LEARNABLE_INPUTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "Add": (0, 1),
    "BatchNormalization": (1, 2), "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2), "GroupNormalization": (1, 2), "PRelu": (1,),
}


def trainable_initializers(model: onnx.ModelProto) -> set[str]:
    """Initializers that are weights, biases or normalization scales: everything else
    (Clip bounds, Reshape shapes, quantization scales) must not drift in training."""
    inits = {i.name for i in model.graph.initializer}
    out = set()
    for node in model.graph.node:
        for pos in LEARNABLE_INPUTS.get(node.op_type, ()):
            if pos < len(node.input) and node.input[pos] in inits:
                if node.op_type == "Add" and not _is_bias_add(model, node, pos):
                    continue
                out.add(node.input[pos])
    return out


def _is_bias_add(model: onnx.ModelProto, node: onnx.NodeProto, pos: int) -> bool:
    """An Add of a constant vector after a MatMul: the bias of an exported Linear."""
    other = node.input[1 - pos]
    return any(n.op_type == "MatMul" and other in n.output for n in model.graph.node)


def write_back(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` with these initializer values (shapes and dtypes kept)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in weights:
            old = numpy_helper.to_array(init)
            new = np.asarray(weights[init.name]).astype(old.dtype).reshape(old.shape)
            init.CopyFrom(numpy_helper.from_array(new, init.name))
    return out


def _with_outputs(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    if not tensors:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    for name in tensors:
        if name not in present:
            out.graph.output.append(helper.make_empty_tensor_value_info(name))
    return out
