"""fp16 weight storage: the weight is kept as float16 and Cast to float in front of the
layer. onnxruntime folds the Cast at session start, so compute stays float32 (the CPU
provider has few fp16 kernels) while the file holds half the bytes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.graph.model import copy_model
from onnxamc.passes.graph_edit import nodes_by_name, replace_weight, unique, weight_of


def weights_to_fp16(model: onnx.ModelProto, layers: list[str]) -> onnx.ModelProto:
    if not layers:
        return model
    out = copy_model(model)
    nodes = nodes_by_name(out)
    for name in layers:
        node = nodes[name]
        half = weight_of(out, node).astype(np.float16)
        h_name, w_name = unique(out, f"{name}.weight_fp16"), unique(out, f"{name}.weight_f32")
        cast = helper.make_node("Cast", [h_name], [w_name], to=onnx.TensorProto.FLOAT,
                                name=unique(out, f"{name}.cast"))
        replace_weight(out, node, [numpy_helper.from_array(half, h_name)], [cast], w_name)
    return out
