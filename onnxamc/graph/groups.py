"""Channel groups and pruning plans: what the tracer found, as data a pass can use.

A `ChannelGroup` is a set of layers whose output channels are tied (by residual adds,
depthwise convolutions, attention heads...). Its channels are pruned together: keeping
channel c keeps index c in every coupled tensor. A `PruningPlan` turns a set of kept
channels into concrete tensor edits (which indices each constant keeps, new shape
constants) and predicts the MACs and params of the pruned model without building it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxamc.graph.layers import find_layers
from onnxamc.graph.rules import rule_table
from onnxamc.graph.tracer import Tracer


@dataclass
class ChannelGroup:
    index: int
    name: str  # the first layer that produces these channels
    layers: list[str]  # layers whose output channels belong to the group
    consumers: list[str]  # layers whose input channels belong to the group
    channels: int  # prunable channels (tied atoms count once)
    blocked_by: str | None  # why the group cannot be pruned, None when it can
    classes: np.ndarray = field(repr=False)  # one representative atom per channel
    mixed: bool = False  # some op computes statistics across these channels (LayerNorm...)
    rule_failure: str | None = None  # a rule raised on these channels (a bug, not a limit)

    @property
    def prunable(self) -> bool:
        return self.blocked_by is None and self.channels > 1

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "layers": self.layers,
                "consumers": self.consumers, "channels": self.channels,
                "prunable": self.prunable, "blocked_by": self.blocked_by,
                "rule_failure": self.rule_failure, "normalised_across": self.mixed}


def kept_count(channels: int, keep: float, multiple: int = 8) -> int:
    """Channels kept for a keep ratio: rounded to `multiple` (fast kernels, few distinct
    shapes to tune), at least one multiple where the group has that many, at least 1."""
    if keep >= 1.0:
        return channels
    if channels <= multiple:
        return max(1, min(channels, round(keep * channels)))
    return min(channels, max(multiple, int(round(keep * channels / multiple)) * multiple))


class ChannelAnalysis:
    """Groups of one model plus everything needed to plan their pruning."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.tracer = Tracer(model, rule_table()).run()
        uf = self.tracer.atoms
        n = len(uf.parent)
        self.roots = np.array([uf.find(a) for a in range(n)], dtype=np.int64)
        source_root = [uf.find_source(s) for s in range(len(uf.source_names))]
        self.group_key = np.array([source_root[uf.source[a]] for a in range(n)], dtype=np.int64)
        self.groups = self._build_groups()
        self.layer_group = {layer: self.group_key[atoms[0]]
                            for layer, atoms in self.tracer.layer_sources.items() if len(atoms)}

    def _build_groups(self) -> list[ChannelGroup]:
        uf = self.tracer.atoms
        order: dict[int, dict] = {}
        for a in range(len(self.roots)):
            g = order.setdefault(int(self.group_key[a]),
                                 {"classes": {}, "blocked": None, "failure": None})
            g["classes"].setdefault(int(self.roots[a]), None)
            if g["blocked"] is None and a in uf.blocked:
                g["blocked"] = uf.blocked[a]
            if g["failure"] is None and a in uf.failures:
                g["failure"] = uf.failures[a]
        layers: dict[int, list[str]] = {}
        for layer, atoms in self.tracer.layer_sources.items():
            if len(atoms):
                layers.setdefault(int(self.group_key[atoms[0]]), []).append(layer)
        consumers: dict[int, list[str]] = {}
        for layer, arrays in self.tracer.consumers.items():
            for key in sorted({int(k) for atoms in arrays for k in self.group_key[atoms]}):
                if layer not in consumers.setdefault(key, []):
                    consumers[key].append(layer)
        mixed = {int(k) for atoms in self.tracer.mixed for k in self.group_key[atoms]}
        groups = []
        self._index_of_key = {}
        for key, g in order.items():
            names = layers.get(key, [])
            if not names and key not in consumers:
                continue
            self._index_of_key[key] = len(groups)
            groups.append(ChannelGroup(len(groups), names[0] if names else "(fixed channels)",
                                       names, consumers.get(key, []), len(g["classes"]),
                                       g["failure"] or g["blocked"],
                                       np.array(list(g["classes"]), np.int64), key in mixed,
                                       g["failure"]))
        return groups

    def group_of(self, layer: str) -> ChannelGroup | None:
        """The group of a layer's output channels (None when they pass on another axis)."""
        key = self.layer_group.get(layer)
        return None if key is None else self.groups[self._index_of_key[int(key)]]

    def group_index(self, atom: int) -> int | None:
        """Index of the group holding `atom`; None for atoms no layer reads or writes."""
        return self._index_of_key.get(int(self.group_key[atom]))

    @property
    def rule_failures(self) -> list[str]:
        """One line per rule that raised while tracing (each also blocks its group)."""
        return list(self.tracer.failures)

    def plan(self, kept_classes: np.ndarray) -> "PruningPlan":
        alive = np.zeros(len(self.roots) + 1, dtype=bool)
        alive[np.asarray(kept_classes, dtype=np.int64)] = True
        # every channel not in a prunable group stays
        for g in self.groups:
            if not g.prunable:
                alive[g.classes] = True
        grouped = set(int(c) for g in self.groups for c in g.classes)
        for root in set(self.roots.tolist()) - grouped:
            alive[root] = True
        return PruningPlan(self, alive[self.roots])


def new_input_name(t: Tracer, key: tuple[int, int]) -> str:
    """The tensor at a node input; a placeholder name for an input to be added."""
    inputs = t.nodes[key[0]].input
    if key[1] < len(inputs) and inputs[key[1]]:
        return inputs[key[1]]
    return f"{t.names[key[0]]}.input{key[1]}"


class PruningPlan:
    """Concrete edits for one choice of kept channels (`alive[atom]`)."""

    def __init__(self, analysis: ChannelAnalysis, alive: np.ndarray):
        self.analysis = analysis
        self.alive = alive
        t = analysis.tracer
        self.masks: dict[tuple[int, int], dict[int, np.ndarray]] = {}
        for slot in t.params:
            mask = alive[slot.atoms]
            key = (slot.node, slot.input_index)
            prev = self.masks.setdefault(key, {}).get(slot.axis)
            self.masks[key][slot.axis] = mask if prev is None else prev & mask
        self.values: dict[tuple[int, int], np.ndarray] = {}  # new shape-like constants
        self.groups_attr: dict[int, int] = {}
        for edit in t.edits:
            self._const_edit(edit)

    def kept(self, atoms: np.ndarray) -> int:
        return int(self.alive[atoms].sum())

    def _const_edit(self, edit) -> None:
        t = self.analysis.tracer
        node = t.nodes[edit.node]
        if edit.kind == "group":
            self.groups_attr[edit.node] = self.kept(edit.atoms)
        elif edit.kind == "reshape":
            shape = t.const(node.input[1]).copy()
            if shape[edit.entry] > 0:
                shape[edit.entry] = self.kept(edit.atoms)
            self.values[(edit.node, 1)] = shape
        elif edit.kind == "split":
            sizes = [self.kept(p) for p in edit.parts]
            if sizes != [len(p) for p in edit.parts]:
                self.values[(edit.node, 1)] = np.array(sizes, dtype=np.int64)
        elif edit.kind == "gather":
            indices = t.const(node.input[1])
            flat = indices.ravel().astype(np.int64) % len(edit.atoms)
            kept_in = self.alive[edit.atoms]
            position = np.cumsum(kept_in) - 1  # index of each kept input channel after pruning
            shape = list(indices.shape)
            shape[edit.entry] = int(kept_in[flat].sum())
            new = position[flat[kept_in[flat]]].astype(indices.dtype).reshape(shape)
            if new.shape != indices.shape or (new != indices).any():
                self.values[(edit.node, 1)] = new
        elif edit.kind == "slice":
            before = self.kept(edit.atoms[:edit.start])
            inside = self.kept(edit.atoms[edit.start:edit.stop])
            for k, value in ((1, before), (2, before + inside)):
                old = t.const(node.input[k])
                new = self.values.get((edit.node, k), old).copy()
                dim = len(edit.atoms)
                if k == 2 and int(old[edit.entry]) >= dim:
                    continue  # "to the end" stays
                if k == 1 and int(old[edit.entry]) in (0,):
                    continue
                new[edit.entry] = value
                self.values[(edit.node, k)] = new

    # --- which tensors change, and whether they can change in place ---------------------
    def tensor_changes(self) -> dict[str, dict[tuple[int, int], tuple]]:
        """{tensor: {use: signature}} for every tensor with an edited use; an unedited use
        has the signature (). Equal signatures can share one edited tensor."""
        t = self.analysis.tracer
        edited = {}
        for key, axes in self.masks.items():
            if any(not m.all() for m in axes.values()):
                edited[key] = ("mask",) + tuple((ax, m.tobytes()) for ax, m in sorted(axes.items()))
        for key, value in self.values.items():
            name = t.nodes[key[0]].input[key[1]] if key[1] < len(t.nodes[key[0]].input) else ""
            old = t.const(name) if name else None
            if old is None or old.shape != value.shape or (old != value).any():
                edited[key] = ("value", value.shape, str(value.dtype), tuple(value.ravel().tolist()))
        names = {key: new_input_name(t, key) for key in edited}
        changes: dict[str, dict] = {}
        for key, sig in edited.items():
            changes.setdefault(names[key], {})[key] = sig
        for i, node in enumerate(t.nodes):
            for k, name in enumerate(node.input):
                if name in changes and (i, k) not in changes[name]:
                    changes[name][(i, k)] = ()
        for out in self.analysis.model.graph.output:
            if out.name in changes:
                changes[out.name][(-1, 0)] = ()
        return changes

    def new_shape(self, key: tuple[int, int], sig: tuple, old_shape: tuple) -> tuple:
        if not sig:
            return old_shape
        if sig[0] == "value":
            return tuple(sig[1])
        shape = list(old_shape)
        for ax, mask in self.masks[key].items():
            shape[ax] = int(mask.sum())
        return tuple(shape)

    def predict(self) -> tuple[int, int]:
        """(MACs, params) the pruned model will have: MACs by the cost model (graph.cost)
        at the channels this plan keeps, params from the edited tensors' sizes."""
        from onnxamc.graph.cost import CostModel

        model = self.analysis.model
        sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
        shapes = {init.name: tuple(int(d) for d in init.dims) for init in model.graph.initializer}
        for name, uses in self.tensor_changes().items():
            old = shapes.get(name)
            sizes.pop(name, None)
            for sig in set(uses.values()):
                if old is None and not sig:
                    continue
                key = next(k for k, s in uses.items() if s == sig)
                sizes[f"{name}|{sig!r}"] = int(np.prod(self.new_shape(key, sig, old)))
        tracer = self.analysis.tracer
        out = {name: self.alive[atoms].mean() for name, atoms in tracer.layer_sources.items()
               if len(atoms)}
        read = {}
        for layer in find_layers(model):
            atoms = [a for a in tracer.consumers.get(layer.name, ())]
            if atoms and not layer.depthwise:  # a depthwise conv's inputs are its outputs
                joined = np.concatenate(atoms)
                read[layer.name] = self.alive[joined].mean()
        cost = CostModel.of(find_layers(model), self.analysis)
        return int(round(cost.macs_of(out, read))), sum(sizes.values())


def channel_groups(model: onnx.ModelProto) -> ChannelAnalysis:
    """The channel groups of a shape-inferred model."""
    return ChannelAnalysis(model)
