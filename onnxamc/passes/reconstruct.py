"""Least-squares reconstruction after channel pruning (ThiNet / AMC style).

A layer that lost input channels is refitted so that, on calibration data, its output
from the pruned model's inputs matches the original model's output (on the output
channels it keeps): min_W ||X W - Y||² + λ||W||², one linear solve per layer, no
training. Convolutions are unfolded into patches at a random sample of positions.

Layers are refitted in graph order, each on the inputs its refitted predecessors give:
the pruned model's activations come from a segment-by-segment forward pass
(runtime.segments), about one pass of the calibration data in all. The original's side
(the sampled positions and its outputs there) does not depend on the candidate: a
`ReferenceRows` kept across candidates (a search's hundreds) computes it once per layer.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.graph.groups import PruningPlan
from onnxamc.graph.model import copy_model, initializer_map
from onnxamc.profiling import phase
from onnxamc.runtime.segments import Forward

MAX_ROWS = 4096  # (fewer rows, e.g. 8 per unknown, cost 1-4 points of accuracy on ResNet-20)
RIDGE = 1e-3  # relative to the mean diagonal of XᵀX: keeps the solve well posed
Feeds = Callable[[], Iterable[dict[str, np.ndarray]]]


class ReferenceRows:
    """The original model's side of every refit, kept across candidates: per layer
    output, the sampled positions and the original's outputs there (all channels)."""

    def __init__(self, original: onnx.ModelProto, calibration: Feeds, seed: int = 0,
                 max_rows: int = MAX_ROWS):
        self.original, self.calibration = original, calibration
        self.seed, self.max_rows = seed, max_rows
        self.rows: dict[str, tuple[tuple, np.ndarray]] = {}
        self._forward: Forward | None = None

    def of(self, node: onnx.NodeProto) -> tuple[tuple, np.ndarray]:
        """(positions, targets): where to sample and what the original gives there."""
        name = node.output[0]
        if name not in self.rows:
            if self._forward is None:
                self._forward = Forward(self.original, self.calibration())
            y = self._forward.fetch(name)
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
            positions = _positions(node, y.shape, rng, self.max_rows)
            self.rows[name] = (positions, _targets(node, y, positions))
        return self.rows[name]


def reconstruct(original: onnx.ModelProto, pruned: onnx.ModelProto, plan: PruningPlan,
                calibration: Feeds, max_rows: int = MAX_ROWS, seed: int = 0,
                reference: ReferenceRows | None = None) -> onnx.ModelProto:
    """`pruned` with its input-pruned layers refitted to the original's outputs.
    `reference` (for `original` and `calibration`) may come from earlier candidates."""
    targets = _refittable(pruned, plan)
    if not targets:
        return pruned
    with phase("reconstruct"):
        reference = reference or ReferenceRows(original, calibration, seed, max_rows)
        out = copy_model(pruned)
        inits = initializer_map(out)
        forward = Forward(out, calibration())
        for i, out_mask in targets:  # in graph order, each on the inputs refitted so far
            node = out.graph.node[i]
            positions, y_rows = reference.of(node)
            x = forward.fetch(node.input[0])
            w_init = inits[node.input[1]]
            weight = numpy_helper.to_array(w_init)
            bias = None
            if len(node.input) > 2 and node.input[2] in inits:
                bias = numpy_helper.to_array(inits[node.input[2]])
            fitted = _refit(node, weight, bias, x, positions, y_rows, out_mask)
            w_init.CopyFrom(numpy_helper.from_array(fitted.astype(weight.dtype), w_init.name))
            forward.changed(i)
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


def _refit(node, weight, bias, x, positions, y_rows, out_mask) -> np.ndarray:
    targets = y_rows if out_mask is None else y_rows[:, out_mask]
    if node.op_type == "Conv":
        rows = _patches(node, weight.shape, x, positions)
        if bias is not None:
            targets = targets - bias
        current = weight.reshape(weight.shape[0], -1).T
        return _better(rows, targets, current).T.reshape(weight.shape)
    rows = x.reshape(-1, x.shape[-1])[positions[0]]
    if bias is not None and node.op_type == "Gemm":
        targets = targets - bias
    transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    solution = _better(rows, targets, weight.T if transposed else weight)  # (c_in, c_out)
    return solution.T if transposed else solution


def _positions(node, y_shape, rng, max_rows) -> tuple:
    """Where a layer's output is sampled: (sample, y, x) triples for a convolution, row
    indices of the flattened leading axes otherwise."""
    if node.op_type == "Conv":
        n, _, oh, ow = y_shape
        count = min(max_rows, n * oh * ow)
        flat = rng.choice(n * oh * ow, count, replace=False)
        ns, rest = np.divmod(flat, oh * ow)
        oy, ox = np.divmod(rest, ow)
        return ns, oy, ox
    total = int(np.prod(y_shape[:-1]))
    picks = rng.choice(total, max_rows, replace=False) if total > max_rows else np.arange(total)
    return (picks,)


def _targets(node, y: np.ndarray, positions: tuple) -> np.ndarray:
    """The layer's outputs at the sampled positions, (rows, channels), float64."""
    if node.op_type == "Conv":
        ns, oy, ox = positions
        return y[ns, :, oy, ox].astype(np.float64)
    return y.reshape(-1, y.shape[-1])[positions[0]].astype(np.float64)


def _patches(node, w_shape, x, positions) -> np.ndarray:
    """Input patches of a convolution at the sampled output positions, (rows, c·kh·kw),
    gathered one kernel offset at a time (small index arrays, not a 4-D broadcast)."""
    ns, oy, ox = positions
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kh, kw = w_shape[2:]
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    used = np.unique(ns)  # pad only the samples that give rows
    xp = np.pad(x[used], ((0, 0), (0, 0), (top, bottom), (left, right)))
    local = np.searchsorted(used, ns)
    out = np.empty((len(ns), x.shape[1], kh, kw), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i, j] = xp[local, :, oy * sh + i * dh, ox * sw + j * dw]
    return out.reshape(len(ns), -1)


def _better(rows: np.ndarray, targets: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The least-squares fit, unless it fits the sampled rows worse than `current`
    (errors from the normal equations' products: no second pass over the rows)."""
    rows, targets = rows.astype(np.float64, copy=False), targets.astype(np.float64, copy=False)
    gram, cross = rows.T @ rows, rows.T @ targets
    fitted = _ridge(gram, cross)
    total = float(np.sum(targets * targets))

    def error(w: np.ndarray) -> float:
        return float(np.sum(w * (gram @ w)) - 2 * np.sum(w * cross)) + total
    return fitted if error(fitted) <= error(current.astype(np.float64)) else current


def _ridge(gram: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """(XᵀX + λI)⁻¹ Xᵀy with λ relative to XᵀX's mean diagonal."""
    lam = RIDGE * float(np.mean(np.diag(gram))) + 1e-12
    regular = gram.copy()
    regular[np.diag_indices_from(regular)] += lam
    return np.linalg.solve(regular, cross)
