"""The channel tracer: one walk over the graph that applies a rule to every node.

A tensor that carries channels has a *layout*: one axis and, for each index along it,
the atom stored there (see atoms.py). Rules (graph/rules/) move layouts from inputs to
outputs, tie atoms that must go together and record the constant tensors (`ParamSlot`)
and shape-like constants or attributes (`ConstEdit`) that change with them. A tracked
tensor that reaches an op without a rule, or a model output, blocks its channels: an
unknown op can cost compression but never correctness. A rule that raises `Unsupported`
blocks its inputs with that reason; a rule that raises anything else is a bug: it is
logged and recorded as a failure on the group, and also blocks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.graph.atoms import ChannelAtoms
from onnxamc.graph.layers import node_names
from onnxamc.graph.model import initializer_map
from onnxamc.graph.shapes import known_shapes
from onnxamc.graph.topology import Topology

log = logging.getLogger(__name__)


class Unsupported(Exception):
    """A rule meets a case it does not handle: the inputs' channels become unprunable."""


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
    rule: str = ""  # the rule that recorded it (named when its edit fails)


@dataclass
class ConstEdit:
    """A shape-like constant input that must be rewritten after pruning.

    kind "reshape": entry `entry` becomes the kept count of `atoms`;
    kind "split": the split sizes become the kept counts of each of `parts`;
    kind "slice": starts/ends on axis position `entry` are remapped through `atoms`
    (the sliced input's atoms) for the original range [start, stop).
    kind "group": the node's `group` attribute becomes the kept count of `atoms`.
    kind "gather": the constant indices (input 1, channels on their axis `entry`) into
    `atoms` (the gathered input's) keep the kept channels, renumbered.
    """

    kind: str
    node: int
    atoms: np.ndarray | None = None
    entry: int = 0
    parts: list[np.ndarray] = field(default_factory=list)
    start: int = 0
    stop: int = 0


RuleFunction = Callable[["Tracer", int, onnx.NodeProto], None]


@dataclass(frozen=True)
class Rule:
    """How one op type moves channels. `source`: the op creates channels, so it runs
    even when no input carries any (Conv, Gemm, MatMul)."""

    apply: RuleFunction
    source: bool = False

    @property
    def name(self) -> str:
        return getattr(self.apply, "__name__", type(self.apply).__name__)


class Tracer:
    """Walks the graph once in order, applying `rules` ({(domain, op_type): Rule})."""

    def __init__(self, model: onnx.ModelProto, rules: Mapping[tuple[str, str], Rule]):
        self.model = model
        self.rules = rules
        self.topology = Topology(model)
        self.nodes = self.topology.nodes
        self.names = node_names(model)
        self.inits = initializer_map(model)
        self.shapes = known_shapes(model)
        self.atoms = ChannelAtoms()
        self.layouts: dict[str, Layout] = {}
        self.params: list[ParamSlot] = []
        self.edits: list[ConstEdit] = []
        self.layer_sources: dict[str, np.ndarray] = {}  # layer name -> output atoms
        self.consumers: dict[str, list[np.ndarray]] = {}  # layer name -> input atoms
        self.failures: list[str] = []  # one line per rule that raised
        self.shape_of: dict[str, str] = {}  # Shape output -> the tracked tensor it measures
        self.mixed: list[np.ndarray] = []  # atoms an op computes statistics across
        self.current_rule = ""  # the rule being applied
        self._constants = {n.output[0]: n for n in self.nodes if n.op_type == "Constant"}
        self._transposed = {n.output[0]: (j, list(self.attr(n, "perm", [1, 0])))
                            for j, n in enumerate(self.nodes)
                            if n.op_type == "Transpose" and n.input[0] in self.inits}

    @property
    def users(self) -> dict[str, list[tuple[int, int]]]:
        return self.topology.users

    # --- helpers the rules use -------------------------------------------------------
    def layout(self, name: str) -> Layout | None:
        return self.layouts.get(name) if name else None

    def shape(self, name: str) -> tuple | None:
        if name in self.inits:
            return tuple(int(d) for d in self.inits[name].dims)
        if name in self._constants and name not in self.shapes:
            return self.const(name).shape
        return self.shapes.get(name)

    def rank(self, name: str) -> int:
        shape = self.shape(name)
        if shape is None:
            raise Unsupported(f"unknown rank of {name!r}")
        return len(shape)

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self._constants.get(name) if name else None
        value = None if node is None else self.attr(node, "value")
        return None if value is None else numpy_helper.to_array(value)

    def is_const(self, name: str) -> bool:
        return name in self.inits or name in self._constants

    def axes(self, node, rank: int) -> list[int] | None:
        """The `axes` of a node (attribute, or constant input 1), made non-negative."""
        axes = self.attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            value = self.const(node.input[1])
            if value is None:
                raise Unsupported("non-constant axes")
            axes = value.tolist()
        return None if axes is None else [int(a) % rank for a in axes]

    @staticmethod
    def attr(node, name: str, default=None):
        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def block_inputs(self, i: int, why: str, failure: bool = False) -> None:
        node = self.nodes[i]
        reason = why if failure else f"{node.op_type} node {self.names[i]!r} ({why})" if why \
            else f"{node.op_type} node {self.names[i]!r}"
        for name in node.input:
            lay = self.layout(name)
            if lay is not None:
                self.atoms.block(lay.atoms, reason, failure)

    def source(self, i: int, count: int, layer: bool = True) -> np.ndarray:
        atoms = self.atoms.new_source(self.names[i] if layer else None, count)
        if layer:
            self.layer_sources[self.names[i]] = atoms
        return atoms

    def weight(self, name: str) -> bool:
        """A constant weight: an initializer, or a Transpose of one (TorchScript Linear)."""
        return name in self.inits or name in self._transposed

    def param(self, i: int, k: int, axis: int, atoms: np.ndarray, importance: bool = True):
        """Input k of node i is a constant that loses the removed `atoms` along `axis`.

        A size-1 (broadcast) axis is left alone; anything else that is not a constant
        with exactly one entry per atom there cannot follow the channels."""
        name = self.nodes[i].input[k]
        if name in self._transposed:  # edit the initializer behind the Transpose
            i, perm = self._transposed[name]
            k, axis, name = 0, perm[axis], self.nodes[i].input[0]
        if not self.is_const(name):
            raise Unsupported(f"{name!r} is not a constant")
        shape = self.shape(name)
        if not -len(shape) <= axis < len(shape):
            raise Unsupported(f"{name!r} has no axis {axis}")
        if shape[axis] == 1 and len(atoms) != 1:
            return  # broadcast along the channels: the same value for every channel
        if shape[axis] != len(atoms):
            raise Unsupported(f"{name!r} has {shape[axis]} entries for {len(atoms)} channels")
        self.params.append(ParamSlot(i, k, name, axis % len(shape), atoms, importance,
                                     rule=self.current_rule))

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
            rule = self.rules.get((domain_key(node.domain), node.op_type))
            if rule is None:
                if tracked:
                    self.block_inputs(i, "no channel rule")
            elif tracked or rule.source:
                self._apply(rule, i, node)
        for out in self.model.graph.output:
            lay = self.layout(out.name)
            if lay is not None:
                self.atoms.block(lay.atoms, f"model output {out.name!r}")
        return self

    def _apply(self, rule: Rule, i: int, node) -> None:
        first_new = len(self.atoms)
        self.current_rule = rule.name
        try:
            rule.apply(self, i, node)
            return
        except Unsupported as exc:
            self.block_inputs(i, str(exc))
            reason, failure = f"{node.op_type} node {self.names[i]!r} ({exc})", False
        except Exception as exc:  # a bug in the rule, or a graph it never foresaw
            reason = (f"rule {rule.name} failed on {node.op_type} node {self.names[i]!r}: "
                      f"{type(exc).__name__}: {_one_line(exc)}")
            log.warning("%s", reason)
            log.debug("traceback of the failed rule", exc_info=True)
            self.failures.append(reason)
            self.block_inputs(i, reason, failure=True)
            failure = True
        # channels the node created before it gave up stay too, and its outputs carry none
        self.atoms.block(np.arange(first_new, len(self.atoms)), reason, failure)
        for out in node.output:
            self.layouts.pop(out, None)


def domain_key(domain: str) -> str:
    """The registry key of a node domain: "" for the default ONNX domain."""
    return "" if domain in ("", "ai.onnx") else domain


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
