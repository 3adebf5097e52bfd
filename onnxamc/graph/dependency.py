"""Channel dependencies: which channels of which tensors must be removed together.

The Torch-Pruning "DepGraph" idea (Fang et al. 2023) on ONNX graphs. Every channel that a
layer produces is an *atom*; a tensor that carries channels has a *layout*: one axis and,
for each index along it, the atom stored there. Rules, one per ONNX op type in the flat
table `RULES` below, move layouts from inputs to outputs (Concat joins them, Split and
Slice cut them, Flatten repeats them, Transpose moves the axis), tie atoms that must go
together (the inputs of an Add, the heads of an attention block) and record the constant
tensors and attributes that change with them (weights, BatchNorm statistics, Reshape
shapes). Atoms tied together are one *channel*; layers whose channels are tied form one
*group*. A tracked tensor that reaches an op without a rule, or a model output, blocks its
channels: they are never removed, so an unknown op can cost compression but never
correctness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import helper

from onnxamc.graph.layers import _known_shapes, node_names
from onnxamc.graph.model import constant_array, initializer_map


@dataclass
class Layout:
    """Channels carried by a tensor: along `axis`, index i holds atom `atoms[i]`."""

    axis: int
    atoms: np.ndarray


@dataclass
class ParamSlot:
    """A constant input of a node that loses indices along `axis` with the channels."""

    node: int  # node index in the graph
    input_index: int
    tensor: str
    axis: int
    atoms: np.ndarray
    importance: bool  # counts toward channel importance (weights, norm scales)
    reads: bool = False  # a layer weight's input-channel axis


@dataclass
class ConstEdit:
    """A shape-like constant input that must be rewritten after pruning.

    kind "reshape": entry `entry` becomes the kept count of `atoms`;
    kind "split": the split sizes become the kept counts of each of `parts`;
    kind "slice": starts/ends on axis position `entry` are remapped through `atoms`
    (the sliced input's atoms) for the original range [start, stop).
    kind "group": the node's `group` attribute becomes the kept count of `atoms`.
    """

    kind: str
    node: int
    atoms: np.ndarray | None = None
    entry: int = 0
    parts: list[np.ndarray] = field(default_factory=list)
    start: int = 0
    stop: int = 0


class _Atoms:
    """Union-find over atoms, with the source layer of each atom and block reasons."""

    def __init__(self):
        self.parent: list[int] = []
        self.source: list[int] = []
        self.source_parent: list[int] = []
        self.source_names: list[str | None] = []
        self.blocked: dict[int, str] = {}

    def new_source(self, name: str | None, count: int, blocked: str | None = None) -> np.ndarray:
        src = len(self.source_names)
        self.source_names.append(name)
        self.source_parent.append(src)
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.source.extend([src] * count)
        atoms = np.arange(start, start + count, dtype=np.int64)
        if blocked:
            self.block(atoms, blocked)
        return atoms

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def find_source(self, s: int) -> int:
        parent = self.source_parent
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in set(zip(a.tolist(), b.tolist())):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[ry] = rx
            sx, sy = self.find_source(self.source[x]), self.find_source(self.source[y])
            if sx != sy:
                self.source_parent[sy] = sx

    def block(self, atoms: np.ndarray, reason: str) -> None:
        for a in atoms.tolist():
            self.blocked.setdefault(a, reason)


class Tracer:
    """Walks the graph once in order, applying RULES; the result feeds `groups.py`."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.nodes = list(model.graph.node)
        self.names = node_names(model)
        self.inits = initializer_map(model)
        self.shapes = _known_shapes(model)
        self.atoms = _Atoms()
        self.layouts: dict[str, Layout] = {}
        self.params: list[ParamSlot] = []
        self.edits: list[ConstEdit] = []
        self.layer_sources: dict[str, np.ndarray] = {}  # layer name -> output atoms
        self.consumers: dict[str, list[np.ndarray]] = {}  # layer name -> input atoms
        self._constants = {n.output[0] for n in self.nodes if n.op_type == "Constant"}
        self.users: dict[str, list[tuple[int, int]]] = {}
        for j, n in enumerate(self.nodes):
            for k, name in enumerate(n.input):
                self.users.setdefault(name, []).append((j, k))
        self.shape_of: dict[str, str] = {}  # Shape output -> the tracked tensor it measures
        self.mixed: list[np.ndarray] = []  # atoms an op computes statistics across
        self._transposed = {n.output[0]: (j, list(self.attr(n, "perm", [1, 0])))
                            for j, n in enumerate(self.nodes)
                            if n.op_type == "Transpose" and n.input[0] in self.inits}

    # --- helpers the rules use -------------------------------------------------------
    def layout(self, name: str) -> Layout | None:
        return self.layouts.get(name) if name else None

    def shape(self, name: str) -> tuple | None:
        if name in self.inits:
            return tuple(int(d) for d in self.inits[name].dims)
        return self.shapes.get(name)

    def const(self, name: str) -> np.ndarray | None:
        if not name or (name not in self.inits and name not in self._constants):
            return None
        return constant_array(self.model, name, self.inits)

    def is_const(self, name: str) -> bool:
        return name in self.inits or name in self._constants

    def attr(self, node, name: str, default=None):
        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def block_inputs(self, i: int, why: str) -> None:
        node = self.nodes[i]
        reason = f"{node.op_type} node {self.names[i]!r} ({why})" if why else \
            f"{node.op_type} node {self.names[i]!r}"
        for name in node.input:
            lay = self.layout(name)
            if lay is not None:
                self.atoms.block(lay.atoms, reason)

    def source(self, i: int, count: int, layer: bool = True) -> np.ndarray:
        atoms = self.atoms.new_source(self.names[i] if layer else None, count)
        if layer:
            self.layer_sources[self.names[i]] = atoms
        return atoms

    def weight(self, name: str) -> bool:
        """A constant weight: an initializer, or a Transpose of one (TorchScript Linear)."""
        return name in self.inits or name in self._transposed

    def param(self, i: int, k: int, axis: int, atoms: np.ndarray, importance: bool = True):
        name = self.nodes[i].input[k]
        if name in self._transposed:  # edit the initializer behind the Transpose
            i, perm = self._transposed[name]
            k, axis, name = 0, perm[axis], self.nodes[i].input[0]
        self.params.append(ParamSlot(i, k, name, axis, atoms, importance))

    def reads(self, i: int, axis: int, atoms: np.ndarray, all_atoms: np.ndarray) -> None:
        """Layer i reads these channels through its weight's `axis`."""
        self.param(i, 1, axis, atoms)
        self.params[-1].reads = True
        self.consumers.setdefault(self.names[i], []).append(all_atoms)

    def set(self, name: str, axis: int, atoms: np.ndarray) -> None:
        if name:
            self.layouts[name] = Layout(axis, atoms)

    # --- the walk ------------------------------------------------------------------
    def run(self) -> "Tracer":
        for i, node in enumerate(self.nodes):
            tracked = any(self.layout(n) is not None for n in node.input)
            rule = RULES.get(node.op_type)
            if rule is None:
                if tracked:
                    self.block_inputs(i, "no channel rule")
                continue
            if tracked or node.op_type in SOURCE_OPS:
                try:
                    rule(self, i, node)
                except Exception as exc:  # _Unsupported, or a graph no rule foresaw
                    self.block_inputs(i, str(exc) if isinstance(exc, _Unsupported)
                                      else f"rule failed: {type(exc).__name__}")
                    for out in node.output:
                        self.layouts.pop(out, None)
        for out in self.model.graph.output:
            lay = self.layout(out.name)
            if lay is not None:
                self.atoms.block(lay.atoms, f"model output {out.name!r}")
        return self


class _Unsupported(Exception):
    """A rule meets a case it cannot handle: the inputs' channels become unprunable."""


def _rank(t: Tracer, name: str) -> int:
    shape = t.shape(name)
    if shape is None:
        raise _Unsupported(f"unknown rank of {name!r}")
    return len(shape)


# --- rules: one function per kind of op ------------------------------------------------
def passthrough(t: Tracer, i: int, node) -> None:
    """Unary ops (activations, casts, softmax): channels flow through unchanged."""
    lay = t.layout(node.input[0])
    if lay is None or any(t.layout(n) is not None for n in node.input[1:]):
        raise _Unsupported("channels on a side input")
    for extra in node.input[1:]:  # Clip min/max, Dropout ratio: scalars only
        shape = t.shape(extra) if extra else ()
        if shape and int(np.prod(shape)) > 1:
            raise _Unsupported(f"non-scalar input {extra!r}")
    rank = len(t.shape(node.input[0]) or ())
    if node.op_type in ("Softmax", "LogSoftmax") and int(t.attr(node, "axis", -1)) % max(rank, 1) \
            == lay.axis:
        t.mixed.append(lay.atoms)
    t.set(node.output[0], lay.axis, lay.atoms)
    if len(node.output) > 1 and any(node.output[1:]):
        raise _Unsupported("second output")


def channel_first(t: Tracer, i: int, node) -> None:
    """Pooling and spatial ops: fine while the channels are on axis 1."""
    lay = t.layout(node.input[0])
    if lay is None or lay.axis != 1:
        raise _Unsupported("channels not on axis 1")
    t.set(node.output[0], 1, lay.atoms)
    if len(node.output) > 1 and node.output[1]:
        t.set(node.output[1], 1, lay.atoms)  # MaxPool indices


def elementwise(t: Tracer, i: int, node) -> None:
    """Broadcasting ops tie the channels of all their inputs (residual adds, SE gates);
    constants with a channel dimension lose the same indices."""
    ranks = [_rank(t, n) if n else 0 for n in node.input]
    out_rank = max(ranks)
    tracked = [(k, t.layout(n)) for k, n in enumerate(node.input) if t.layout(n) is not None]
    from_right = {lay.axis - ranks[k] for k, lay in tracked}
    if len(from_right) != 1:
        raise _Unsupported("channels on different axes")
    axis = from_right.pop()
    first = tracked[0][1].atoms
    for k, lay in tracked[1:]:
        if len(lay.atoms) != len(first):
            raise _Unsupported("broadcast of channels")
        t.atoms.union(first, lay.atoms)
    for k, name in enumerate(node.input):
        if not name or t.layout(name) is not None:
            continue
        shape = t.shape(name)
        if shape is None:
            raise _Unsupported(f"unknown shape of {name!r}")
        dim = shape[axis] if -axis <= len(shape) else 1
        if dim == 1:
            continue
        if dim is None or dim != len(first) or not t.is_const(name):
            raise _Unsupported(f"input {name!r} has channels of its own")
        if name not in t.inits:
            raise _Unsupported(f"per-channel Constant node {name!r}")
        t.param(i, k, len(shape) + axis, first, importance=False)
    t.set(node.output[0], out_rank + axis, first)


def conv(t: Tracer, i: int, node) -> None:
    """Conv: input channels are the weight's axis 1 (per group), output channels a new
    source. Depthwise: output channel c is input channel c (group count follows).
    Grouped: every group must keep the same positions, so positions are tied across groups."""
    w = t.shape(node.input[1])
    if not t.weight(node.input[1]) or w is None:
        raise _Unsupported("weight is not a constant")
    groups = int(t.attr(node, "group", 1))
    c_out, c_in = w[0], w[1] * groups
    lay = t.layout(node.input[0])
    if lay is not None and lay.axis != 1:
        raise _Unsupported("channels not on axis 1")
    bias = len(node.input) > 2 and node.input[2]
    if groups == 1:
        if lay is not None:
            t.reads(i, 1, lay.atoms, lay.atoms)
        out = t.source(i, c_out)
    elif groups == c_in and c_in > 1:  # depthwise (channel multiplier c_out / c_in)
        if lay is None:
            out = t.atoms.new_source(t.names[i], c_out, f"{node.op_type} node {t.names[i]!r} "
                                     "(depthwise over a model input)")
        else:
            out = np.repeat(lay.atoms, c_out // c_in)
            t.edits.append(ConstEdit("group", i, lay.atoms))
        t.layer_sources[t.names[i]] = out
    else:
        if lay is not None:
            per_group = lay.atoms.reshape(groups, -1)
            for row in per_group[1:]:
                t.atoms.union(per_group[0], row)
            t.reads(i, 1, per_group[0], lay.atoms)
        out = t.source(i, c_out)
        grid = out.reshape(groups, -1)
        for row in grid[1:]:
            t.atoms.union(grid[0], row)
    t.param(i, 1, 0, out)
    if bias:
        t.param(i, 2, 0, out, importance=False)
    t.set(node.output[0], 1, out)


def conv_transpose(t: Tracer, i: int, node) -> None:
    """ConvTranspose (group 1): weight is (c_in, c_out, k...)."""
    w = t.shape(node.input[1])
    if not t.weight(node.input[1]) or w is None or int(t.attr(node, "group", 1)) != 1:
        raise _Unsupported("grouped or non-constant weight")
    if t.attr(node, "output_shape") is not None:
        raise _Unsupported("explicit output_shape")
    lay = t.layout(node.input[0])
    if lay is not None:
        if lay.axis != 1:
            raise _Unsupported("channels not on axis 1")
        t.reads(i, 0, lay.atoms, lay.atoms)
    out = t.source(i, w[1])
    t.param(i, 1, 1, out)
    if len(node.input) > 2 and node.input[2]:
        t.param(i, 2, 0, out, importance=False)
    t.set(node.output[0], 1, out)


def gemm(t: Tracer, i: int, node) -> None:
    """Gemm: A's axis 1 meets B's axis 1 (transB) or 0; the output axis 1 is a new source."""
    w = t.shape(node.input[1])
    if not t.weight(node.input[1]) or w is None or t.layout(node.input[1]) is not None:
        raise _Unsupported("B is not a constant")
    if t.attr(node, "transA", 0):
        raise _Unsupported("transA")
    trans_b = int(t.attr(node, "transB", 0))
    lay = t.layout(node.input[0])
    if lay is not None:
        if lay.axis != 1:
            raise _Unsupported("channels not on axis 1")
        t.reads(i, 1 if trans_b else 0, lay.atoms, lay.atoms)
    out = t.source(i, w[0] if trans_b else w[1])
    t.param(i, 1, 0 if trans_b else 1, out)
    if len(node.input) > 2 and node.input[2]:
        c = t.shape(node.input[2])
        if c and c[-1] == len(out) and len(out) > 1:
            if node.input[2] not in t.inits:
                raise _Unsupported("bias is not an initializer")
            t.param(i, 2, len(c) - 1, out, importance=False)
    t.set(node.output[0], 1, out)


def matmul(t: Tracer, i: int, node) -> None:
    """MatMul with a constant 2-D weight is a layer; between two activations (attention),
    the contracted axes are tied and batch axes (heads) tied across both sides."""
    a, b = node.input[0], node.input[1]
    w = t.shape(b)
    if t.weight(b) and w is not None and len(w) == 2:
        lay = t.layout(a)
        rank = _rank(t, a)
        if lay is not None and lay.axis == rank - 1:
            t.reads(i, 0, lay.atoms, lay.atoms)
        elif lay is not None:  # channels on a row axis pass through; no new source
            t.set(node.output[0], lay.axis, lay.atoms)
            return
        out = t.source(i, w[1])
        t.param(i, 1, 1, out)
        t.set(node.output[0], rank - 1, out)
        return
    if t.is_const(a) or t.is_const(b):
        raise _Unsupported("constant of rank other than 2")
    ra, rb = _rank(t, a), _rank(t, b)
    if ra < 2 or rb < 2:
        raise _Unsupported("1-D operand")
    la, lb = t.layout(a), t.layout(b)
    xa = la.axis - ra if la else None
    xb = lb.axis - rb if lb else None
    out_rank = max(ra, rb)
    outs = []
    if xa == -1 or xb == -2:
        if xa != -1 or xb != -2 or len(la.atoms) != len(lb.atoms):
            raise _Unsupported("contracted axis tracked on one side only")
        t.atoms.union(la.atoms, lb.atoms)
    else:
        if xa is not None and xb is not None and xa == xb:  # same batch axis (heads)
            if len(la.atoms) != len(lb.atoms):
                raise _Unsupported("broadcast of channels")
            t.atoms.union(la.atoms, lb.atoms)
            outs.append((xa, la.atoms))
        else:
            for x, lay, other, r_other in ((xa, la, b, rb), (xb, lb, a, ra)):
                if x is None:
                    continue
                if x <= -3:
                    o_shape = t.shape(other)
                    if o_shape is None or (-x <= r_other and o_shape[x] not in (1,)):
                        raise _Unsupported("batch axis tracked on one side only")
                outs.append((x, lay.atoms))
    if len(outs) > 1:
        raise _Unsupported("two channel axes in the output")
    if outs:
        t.set(node.output[0], out_rank + outs[0][0], outs[0][1])


def norm_channel_first(t: Tracer, i: int, node) -> None:
    """BatchNormalization / InstanceNormalization: per-channel constants on axis 1.
    InstanceNormalization over channels on a later axis (GroupNorm as exported: reshape
    to (N, groups, -1)) normalises over them, like LayerNormalization."""
    lay = t.layout(node.input[0])
    if lay is not None and lay.axis > 1 and node.op_type == "InstanceNormalization":
        t.mixed.append(lay.atoms)
        t.set(node.output[0], lay.axis, lay.atoms)
        return
    if lay is None or lay.axis != 1:
        raise _Unsupported("channels not on axis 1")
    if len(node.output) > 1 and any(node.output[1:]):
        raise _Unsupported("training-mode outputs")
    for k, name in enumerate(node.input[1:], start=1):
        if name not in t.inits:
            raise _Unsupported(f"{name!r} is not an initializer")
        t.param(i, k, 0, lay.atoms, importance=(k == 1))
    t.set(node.output[0], 1, lay.atoms)


def layer_norm(t: Tracer, i: int, node) -> None:
    """LayerNormalization: when the channel axis is normalised, scale and bias follow it
    (the statistics then run over the kept channels)."""
    lay = t.layout(node.input[0])
    rank = _rank(t, node.input[0])
    first = int(t.attr(node, "axis", -1)) % rank
    if len(node.output) > 1 and any(node.output[1:]):
        raise _Unsupported("mean / inv_std outputs")
    if lay.axis >= first:
        t.mixed.append(lay.atoms)
        for k, name in enumerate(node.input[1:3], start=1):
            if not name:
                continue
            shape = t.shape(name)
            if name not in t.inits or shape is None:
                raise _Unsupported(f"{name!r} is not an initializer")
            ax = len(shape) - (rank - lay.axis)
            if ax >= 0 and shape[ax] == len(lay.atoms) and len(lay.atoms) > 1:
                t.param(i, k, ax, lay.atoms, importance=(k == 1))
    t.set(node.output[0], lay.axis, lay.atoms)


def group_norm(t: Tracer, i: int, node) -> None:
    """GroupNormalization: every group keeps the same positions (num_groups stays)."""
    lay = t.layout(node.input[0])
    groups = int(t.attr(node, "num_groups"))
    if lay is None or lay.axis != 1 or len(lay.atoms) % groups:
        raise _Unsupported("channels not on axis 1")
    grid = lay.atoms.reshape(groups, -1)
    for row in grid[1:]:
        t.atoms.union(grid[0], row)
    t.mixed.append(lay.atoms)
    for k, name in enumerate(node.input[1:3], start=1):
        shape = t.shape(name)
        if shape and shape[0] == len(lay.atoms) and groups < len(lay.atoms):
            if name not in t.inits:
                raise _Unsupported(f"{name!r} is not an initializer")
            t.param(i, k, 0, lay.atoms, importance=(k == 1))
    t.set(node.output[0], 1, lay.atoms)


def concat(t: Tracer, i: int, node) -> None:
    """Concat along the channel axis joins layouts at their offsets; along another axis
    it ties the channels of all inputs."""
    rank = _rank(t, node.output[0]) if t.shape(node.output[0]) else _rank(t, node.input[0])
    axis = int(t.attr(node, "axis")) % rank
    lays = [t.layout(n) for n in node.input]
    tracked_axes = {lay.axis for lay in lays if lay is not None}
    if tracked_axes == {axis}:
        parts = []
        for name, lay in zip(node.input, lays):
            if lay is not None:
                parts.append(lay.atoms)
                continue
            shape = t.shape(name)
            if shape is None or shape[axis] is None:
                raise _Unsupported(f"unknown size of {name!r}")
            parts.append(t.atoms.new_source(None, shape[axis], f"Concat node {t.names[i]!r} "
                                            f"(input {name!r} has fixed channels)"))
        t.set(node.output[0], axis, np.concatenate(parts))
        return
    if len(tracked_axes) != 1:
        raise _Unsupported("channels on different axes")
    ch_axis = tracked_axes.pop()
    first = next(lay.atoms for lay in lays if lay is not None)
    for k, (name, lay) in enumerate(zip(node.input, lays)):
        if lay is not None:
            t.atoms.union(first, lay.atoms)
        elif name in t.inits:
            t.param(i, k, ch_axis, first, importance=False)
        else:
            raise _Unsupported(f"input {name!r} has channels of its own")
    t.set(node.output[0], ch_axis, first)


def split(t: Tracer, i: int, node) -> None:
    """Split on the channel axis cuts the layout; the sizes are rewritten after pruning."""
    lay = t.layout(node.input[0])
    rank = _rank(t, node.input[0])
    axis = int(t.attr(node, "axis", 0)) % rank
    if axis != lay.axis:
        for out in node.output:
            t.set(out, lay.axis, lay.atoms)
        return
    sizes = t.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if sizes is None:
        sizes = t.attr(node, "split")
    if sizes is None:
        n = len(node.output)
        if len(lay.atoms) % n:
            raise _Unsupported("uneven split")
        sizes = [len(lay.atoms) // n] * n
    bounds = np.cumsum([0] + [int(s) for s in sizes])
    parts = [lay.atoms[bounds[k]:bounds[k + 1]] for k in range(len(node.output))]
    for out, part in zip(node.output, parts):
        t.set(out, axis, part)
    t.edits.append(ConstEdit("split", i, parts=parts))


def slice_(t: Tracer, i: int, node) -> None:
    """Slice with step 1 on the channel axis keeps the atoms in its range."""
    lay = t.layout(node.input[0])
    rank = _rank(t, node.input[0])
    if len(node.input) < 3:
        raise _Unsupported("attribute-style Slice")
    starts, ends = t.const(node.input[1]), t.const(node.input[2])
    axes = t.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    steps = t.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if starts is None or ends is None or (len(node.input) > 3 and node.input[3] and axes is None):
        raise _Unsupported("non-constant bounds")
    axes = [int(a) % rank for a in (axes if axes is not None else range(len(starts)))]
    if lay.axis not in axes:
        t.set(node.output[0], lay.axis, lay.atoms)
        return
    pos = axes.index(lay.axis)
    if steps is not None and int(steps[pos]) != 1:
        raise _Unsupported("step other than 1")
    start, stop, _ = slice(int(starts[pos]), int(ends[pos])).indices(len(lay.atoms))
    t.set(node.output[0], lay.axis, lay.atoms[start:stop])
    t.edits.append(ConstEdit("slice", i, lay.atoms, entry=pos, start=start, stop=stop))


def transpose(t: Tracer, i: int, node) -> None:
    lay = t.layout(node.input[0])
    rank = _rank(t, node.input[0])
    perm = list(t.attr(node, "perm", list(range(rank))[::-1]))
    t.set(node.output[0], perm.index(lay.axis), lay.atoms)


def _axes_input(t: Tracer, node, rank: int) -> list[int] | None:
    axes = t.attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = t.const(node.input[1])
        if value is None:
            raise _Unsupported("non-constant axes")
        axes = value.tolist()
    return None if axes is None else [int(a) % rank for a in axes]


def squeeze(t: Tracer, i: int, node) -> None:
    lay = t.layout(node.input[0])
    rank = _rank(t, node.input[0])
    axes = _axes_input(t, node, rank)
    if axes is None:
        axes = [k for k, d in enumerate(t.shape(node.input[0])) if d == 1]
    if lay.axis in axes:
        raise _Unsupported("squeezes the channel axis")
    t.set(node.output[0], lay.axis - sum(a < lay.axis for a in axes), lay.atoms)


def unsqueeze(t: Tracer, i: int, node) -> None:
    lay = t.layout(node.input[0])
    out_rank = _rank(t, node.output[0])
    axes = sorted(_axes_input(t, node, out_rank))
    axis = lay.axis
    for a in axes:
        if a <= axis:
            axis += 1
    t.set(node.output[0], axis, lay.atoms)


def reduce(t: Tracer, i: int, node) -> None:
    """Reductions over other axes keep the channels; over the channel axis they end them."""
    lay = t.layout(node.input[0])
    rank = _rank(t, node.input[0])
    axes = _axes_input(t, node, rank)
    if axes is None:
        if t.attr(node, "noop_with_empty_axes", 0):
            t.set(node.output[0], lay.axis, lay.atoms)
            return
        axes = list(range(rank))
    if lay.axis in axes:
        t.mixed.append(lay.atoms)
        return
    keep = int(t.attr(node, "keepdims", 1))
    axis = lay.axis if keep else lay.axis - sum(a < lay.axis for a in axes)
    t.set(node.output[0], axis, lay.atoms)


def pad(t: Tracer, i: int, node) -> None:
    lay = t.layout(node.input[0])
    rank = _rank(t, node.input[0])
    pads = t.const(node.input[1]) if len(node.input) > 1 else t.attr(node, "pads")
    if pads is None or (len(node.input) > 3 and node.input[3]):
        raise _Unsupported("non-constant pads or axes")
    if int(pads[lay.axis]) or int(pads[lay.axis + rank]):
        raise _Unsupported("pads the channel axis")
    t.set(node.output[0], lay.axis, lay.atoms)


def resize(t: Tracer, i: int, node) -> None:
    lay = t.layout(node.input[0])
    if len(node.input) > 3 and node.input[3]:
        raise _Unsupported("explicit sizes")
    scales = t.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scales is None or float(scales[lay.axis]) != 1.0:
        raise _Unsupported("scales the channel axis")
    t.set(node.output[0], lay.axis, lay.atoms)


def shape(t: Tracer, i: int, node) -> None:
    """Shape of a tracked tensor: fine when it only feeds Reshape targets (the reshape
    back after an exported GroupNorm), which then follow the pruned shape by themselves."""
    if t.attr(node, "start", 0) != 0 or t.attr(node, "end") is not None:
        raise _Unsupported("partial shape")
    if any(t.nodes[j].op_type != "Reshape" or k != 1 for j, k in t.users.get(node.output[0], [])):
        raise _Unsupported("shape used in arithmetic")
    t.shape_of[node.output[0]] = node.input[0]


def reshape(t: Tracer, i: int, node) -> None:
    """Reshape / Flatten: merging the channel axis with others repeats its atoms (stride
    expansion into a Gemm); splitting it into several axes ties atoms so one axis stays
    prunable: the outer one for a split of the last axis (attention heads move whole),
    the inner one otherwise (channel shuffle keeps the group count)."""
    lay = t.layout(node.input[0])
    src, dst = t.shape(node.input[0]), t.shape(node.output[0])
    if src is None or dst is None:
        raise _Unsupported("unknown shapes")
    like = t.layout(t.shape_of.get(node.input[1], "")) if node.op_type == "Reshape" else None
    if node.op_type == "Reshape" and like is None and t.const(node.input[1]) is None:
        raise _Unsupported("computed target shape")
    if src and dst and src[0] is None and dst[0] is None:
        src, dst = (1,) + tuple(src[1:]), (1,) + tuple(dst[1:])
    if any(d is None for d in src + dst):
        raise _Unsupported("dynamic dimensions")
    span = _reshape_span(src, dst, lay.axis)
    if span is None:
        raise _Unsupported("channel axis mixed with the batch")
    (i0, i1), (j0, j1) = span
    block = [1] * (i1 - i0)
    block[lay.axis - i0] = -1
    grid = np.broadcast_to(lay.atoms.reshape(block), src[i0:i1]).reshape(dst[j0:j1])
    varying = [a for a in range(grid.ndim) if grid.shape[a] > 1 and
               not (grid == grid.take([0], axis=a)).all()]
    if not varying:
        raise _Unsupported("single channel")
    keep = varying[0] if lay.axis == len(src) - 1 else varying[-1]
    moved = np.moveaxis(grid, keep, 0).reshape(grid.shape[keep], -1)
    for col in range(1, moved.shape[1]):
        t.atoms.union(moved[:, 0], moved[:, col])
    atoms = moved[:, 0].copy()
    axis = j0 + keep
    t.set(node.output[0], axis, atoms)
    if like is not None:  # reshaped to the shape of a tracked tensor: same channels
        if like.axis != axis or len(like.atoms) != len(atoms):
            raise _Unsupported("reshaped to a tensor with other channels")
        t.atoms.union(like.atoms, atoms)
    elif node.op_type == "Reshape":
        t.edits.append(ConstEdit("reshape", i, atoms, entry=axis))


def _reshape_span(src, dst, axis):
    """The smallest blocks of axes [i0, i1) in src and [j0, j1) in dst that hold the same
    elements and contain `axis`; None when the block reaches axis 0 of both (the batch)."""
    pre_src = np.cumprod([1] + list(src))
    pre_dst = list(np.cumprod([1] + list(dst)))
    i0 = max(k for k in range(axis + 1) if pre_src[k] in pre_dst)
    i1 = min(k for k in range(axis + 1, len(src) + 1) if pre_src[k] in pre_dst)
    j0 = pre_dst.index(pre_src[i0])
    j1 = len(pre_dst) - 1 - pre_dst[::-1].index(pre_src[i1])
    while j0 < j1 and dst[j0] == 1 and j0 + 1 < len(dst) and pre_dst[j0 + 1] == pre_src[i0]:
        j0 += 1
    if i0 == 0 and j0 == 0 and src[0] != 1:
        return None
    return (i0, i1), (j0, j1)


SOURCE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

UNARY = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu",
         "Selu", "Celu", "Softplus", "Softsign", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Abs",
         "Neg", "Reciprocal", "Mish", "ThresholdedRelu", "Clip", "Identity", "Dropout",
         "Cast", "Softmax", "LogSoftmax", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos")

# The rule table: ONNX op type -> rule. An op that is not here blocks its channels.
RULES: dict[str, Callable[[Tracer, int, object], None]] = {
    **{op: passthrough for op in UNARY},
    **{op: channel_first for op in ("MaxPool", "AveragePool", "GlobalAveragePool",
                                     "GlobalMaxPool", "LpPool", "GlobalLpPool")},
    **{op: elementwise for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Where", "Pow",
                                  "PRelu", "Sum", "Mean")},
    **{op: reduce for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum",
                             "ReduceL1", "ReduceL2", "ReduceProd")},
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "Gemm": gemm,
    "MatMul": matmul,
    "BatchNormalization": norm_channel_first,
    "InstanceNormalization": norm_channel_first,
    "LayerNormalization": layer_norm,
    "GroupNormalization": group_norm,
    "Concat": concat,
    "Split": split,
    "Slice": slice_,
    "Transpose": transpose,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Reshape": reshape,
    "Flatten": reshape,
    "Shape": shape,
    "Pad": pad,
    "Resize": resize,
}
