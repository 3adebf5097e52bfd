"""Weight sharing (Deep Compression, HAQ): a layer's weights clustered by 1-D k-means
into 2**bits shared values. The file stores a float codebook and one index per weight
(packed uint4 for bits <= 4, else uint8); a Cast + Gather in front of the layer expands
them, so the layer computes exactly with the clustered weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.graph.model import copy_model
from onnxamc.passes.graph_edit import (ensure_opset, int_tensor, nodes_by_name,
                                       replace_weight, unique, weight_of)

KMEANS_ITERATIONS = 30


def cluster_weights(weight: np.ndarray, bits: int, iterations: int = KMEANS_ITERATIONS
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(codebook of 2**bits floats, indices of weight's shape): 1-D Lloyd k-means with
    linear initialisation over [min, max], as Deep Compression found best."""
    flat = weight.astype(np.float32).ravel()
    k = min(2 ** bits, max(1, np.unique(flat).size))
    centroids = np.linspace(flat.min(), flat.max(), k, dtype=np.float64)
    for _ in range(iterations):
        labels = _nearest(flat, centroids)
        sums = np.bincount(labels, weights=flat, minlength=k)
        counts = np.bincount(labels, minlength=k)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids):
            break
        centroids = np.sort(updated)
    labels = _nearest(flat, centroids)
    return centroids.astype(np.float32), labels.reshape(weight.shape).astype(np.uint8)


def _nearest(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted centroids (1-D: boundaries are midpoints)."""
    edges = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(edges, values).astype(np.int64)


def share_weights(model: onnx.ModelProto, layers: dict[str, int]) -> onnx.ModelProto:
    """`layers`: {layer name: bits}; each weight becomes codebook + indices."""
    if not layers:
        return model
    out = copy_model(model)
    if any(bits <= 4 for bits in layers.values()):
        out = ensure_opset(out)  # uint4 needs opset 21
    nodes = nodes_by_name(out)
    for name, bits in layers.items():
        node = nodes[name]
        codebook, indices = cluster_weights(weight_of(out, node), bits)
        i_name, c_name = unique(out, f"{name}.weight_index"), unique(out, f"{name}.codebook")
        i32, w_name = unique(out, f"{name}.weight_index32"), unique(out, f"{name}.weight_shared")
        nodes_in = [helper.make_node("Cast", [i_name], [i32], to=onnx.TensorProto.INT32,
                                     name=unique(out, f"{name}.index_cast")),
                    helper.make_node("Gather", [c_name, i32], [w_name], axis=0,
                                     name=unique(out, f"{name}.codebook_gather"))]
        replace_weight(out, node, [int_tensor(i_name, indices, 4 if bits <= 4 else 8, False),
                                   numpy_helper.from_array(codebook, c_name)], nodes_in, w_name)
    return out
