"""Fine-grained magnitude sparsity: zero the smallest-magnitude weights of each layer.

Dense kernels do not get faster from zeros; the gain is in compressed size and in
runtimes with sparse kernels. Exactly round(sparsity * n) weights become zero.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxamc.errors import PolicyError
from onnxamc.graph import Layer, initializer_map
from onnxamc.graph.model import copy_model


def magnitude_sparsity(model: onnx.ModelProto, layers: list[Layer],
                       sparsities: dict[str, float]) -> onnx.ModelProto:
    """Return a copy of `model` with each named layer's weight pruned to its sparsity."""
    if not sparsities:
        return model
    out = copy_model(model)
    inits = initializer_map(out)
    by_name = {layer.name: layer for layer in layers}
    for name, sparsity in sparsities.items():
        layer = by_name[name]
        init = inits[layer.weight]
        weight = numpy_helper.to_array(init)
        if not np.issubdtype(weight.dtype, np.floating):
            raise PolicyError(f"layer {name!r}: sparsity needs float weights, this weight is "
                              f"{weight.dtype} (already quantized?)")
        init.CopyFrom(numpy_helper.from_array(prune_by_magnitude(weight, sparsity), init.name))
    return out


def prune_by_magnitude(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero exactly round(sparsity * size) entries of smallest absolute value."""
    count = int(round(sparsity * weight.size))
    if count <= 0:
        return weight
    flat = weight.reshape(-1).copy()
    smallest = np.argpartition(np.abs(flat), count - 1)[:count]
    flat[smallest] = 0
    return flat.reshape(weight.shape)
