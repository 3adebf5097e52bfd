"""Least-squares reconstruction after channel pruning (ThiNet / AMC style).

A layer that lost input channels is refitted so that, on calibration data, its output
from the pruned model's inputs matches the original model's output (on the output
channels it keeps): min_W ||X W - Y||² + λ||W||², one linear solve per layer, no
training. Convolutions are unfolded into patches at a random sample of positions.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.graph.groups import PruningPlan
from onnxamc.graph.model import copy_model, initializer_map
from onnxamc.runtime import fetch_activations

MAX_ROWS = 4096
RIDGE = 1e-3  # relative to the mean diagonal of XᵀX: keeps the solve well posed


def reconstruct(original: onnx.ModelProto, pruned: onnx.ModelProto, plan: PruningPlan,
                calibration: Callable[[], Iterable[dict[str, np.ndarray]]],
                max_rows: int = MAX_ROWS, seed: int = 0) -> onnx.ModelProto:
    """`pruned` with its input-pruned layers refitted to the original's outputs."""
    targets = _refittable(pruned, plan)
    if not targets:
        return pruned
    out = copy_model(pruned)
    inits = initializer_map(out)
    rng = np.random.default_rng(seed)
    for i, out_mask in targets:  # in graph order, each on the inputs refitted so far
        node = out.graph.node[i]  # one layer at a time: memory holds two activations
        x = fetch_activations(out, calibration(), [node.input[0]])[node.input[0]]
        y = fetch_activations(original, calibration(), [node.output[0]])[node.output[0]]
        w_init = inits[node.input[1]]
        weight = numpy_helper.to_array(w_init)
        bias = None
        if len(node.input) > 2 and node.input[2] in inits:
            bias = numpy_helper.to_array(inits[node.input[2]])
        fitted = _refit(node, weight, bias, x, y, out_mask, rng, max_rows)
        w_init.CopyFrom(numpy_helper.from_array(fitted.astype(weight.dtype), w_init.name))
    return out


def _refittable(pruned: onnx.ModelProto, plan: PruningPlan) -> list[tuple[int, np.ndarray | None]]:
    """(node index, kept output mask) of layers whose input channels were pruned."""
    found = []
    inits = initializer_map(pruned)
    uses: dict[str, int] = {}
    for node in pruned.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for i, node in enumerate(pruned.graph.node):
        masks = plan.masks.get((i, 1))
        if not masks or node.input[1] not in inits or uses[node.input[1]] > 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and attrs.get("group", 1) == 1 and \
                len(inits[node.input[1]].dims) == 4 and \
                attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"):
            in_axis, out_axis = 1, 0
        elif node.op_type == "Gemm" and not attrs.get("transA", 0) and \
                attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0:
            in_axis, out_axis = (1, 0) if attrs.get("transB", 0) else (0, 1)
        elif node.op_type == "MatMul" and len(inits[node.input[1]].dims) == 2:
            in_axis, out_axis = 0, 1
        else:
            continue
        if in_axis in masks and not masks[in_axis].all():
            found.append((i, masks.get(out_axis)))
    return found


def _refit(node, weight, bias, x, y, out_mask, rng, max_rows) -> np.ndarray:
    if node.op_type == "Conv":
        y = y if out_mask is None else y[:, out_mask]
        rows, targets = _conv_rows(node, weight.shape, x, y, rng, max_rows)
        if bias is not None:
            targets = targets - bias
        current = weight.reshape(weight.shape[0], -1).T
        return _better(rows, targets, current).T.reshape(weight.shape)
    channel_last = -1
    y = y if out_mask is None else np.compress(out_mask, y, axis=channel_last)
    rows = x.reshape(-1, x.shape[-1])
    targets = y.reshape(-1, y.shape[-1])
    if bias is not None and node.op_type == "Gemm":
        targets = targets - bias
    if len(rows) > max_rows:
        pick = rng.choice(len(rows), max_rows, replace=False)
        rows, targets = rows[pick], targets[pick]
    transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    solution = _better(rows, targets, weight.T if transposed else weight)  # (c_in, c_out)
    return solution.T if transposed else solution


def _conv_rows(node, w_shape, x, y, rng, max_rows):
    """Input patches and output values at random (sample, y, x) positions."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kh, kw = w_shape[2:]
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, _, oh, ow = y.shape
    count = min(max_rows, n * oh * ow)
    flat = rng.choice(n * oh * ow, count, replace=False)
    ns, rest = np.divmod(flat, oh * ow)
    oy, ox = np.divmod(rest, ow)
    channels = np.arange(x.shape[1])[None, :, None, None]
    yy = (oy * sh)[:, None, None, None] + (np.arange(kh) * dh)[None, None, :, None]
    xx = (ox * sw)[:, None, None, None] + (np.arange(kw) * dw)[None, None, None, :]
    patches = xp[ns[:, None, None, None], channels, yy, xx].reshape(count, -1)
    return patches.astype(np.float64), y[ns, :, oy, ox].astype(np.float64)


def _better(rows: np.ndarray, targets: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The least-squares fit, unless it fits the sampled rows worse than `current`."""
    fitted = _ridge(rows, targets)
    error = lambda w: float(np.sum((rows @ w - targets) ** 2))
    return fitted if error(fitted) <= error(current.astype(np.float64)) else current


def _ridge(rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    gram = rows.T @ rows
    lam = RIDGE * float(np.mean(np.diag(gram))) + 1e-12
    gram[np.diag_indices_from(gram)] += lam
    return np.linalg.solve(gram, rows.T @ targets.astype(np.float64))
