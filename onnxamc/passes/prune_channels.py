"""Structured channel pruning: physically remove channels of whole groups.

Weights, biases, norm statistics and shape constants lose the removed indices, so the
model really gets smaller and faster (no masks). Which channels go is decided per group
by importance: the L1 or L2 norm of each channel's slice, summed over every coupled
tensor of the group (each tensor's norms divided by their mean first, so a wide layer
does not drown a narrow one). Model inputs and outputs keep their shapes, because
their channels are blocked in the analysis.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from onnxamc.errors import PassError, PolicyError, first_line
from onnxamc.graph.groups import ChannelAnalysis, PruningPlan, channel_groups, kept_count
from onnxamc.graph.model import constant_array, infer, initializer_map
from onnxamc.graph.model import copy_model

CRITERIA = ("l1", "l2")
DEFAULT_MULTIPLE = 8

Feeds = Callable[[], Iterable[dict[str, np.ndarray]]]


def prune_channels(model: onnx.ModelProto, keep: dict[str, float],
                   multiple: int = DEFAULT_MULTIPLE, criterion: str = "l1",
                   calibration: Feeds | None = None,
                   analysis: ChannelAnalysis | None = None,
                   reference=None) -> onnx.ModelProto:
    """Keep `keep[layer]` of the output channels of each named layer's group.

    A group's ratio is the largest one given to any of its layers (layers left at 1.0 do
    not vote, so one entry prunes a whole residual group). With `calibration` (feed
    dicts), the layers that lost input channels are refitted by least squares
    (`reference`: the original's side of it, kept across candidates).
    """
    if criterion not in CRITERIA:
        raise PolicyError(f"unknown importance criterion {criterion!r}; use one of "
                          f"{', '.join(CRITERIA)}")
    if multiple < 1:
        raise PolicyError(f"channel multiple must be at least 1, got {multiple}")
    analysis = analysis or channel_groups(model)
    ratios = group_ratios(analysis, keep)
    if not ratios:
        return model
    plan = analysis.plan(choose_channels(model, analysis, ratios, multiple, criterion))
    out = apply_plan(model, plan)
    if calibration is not None:
        from onnxamc.passes.reconstruct import reconstruct

        out = reconstruct(model, out, plan, calibration, reference=reference)
    return out


def group_ratios(analysis: ChannelAnalysis, keep: dict[str, float]) -> dict[int, float]:
    """{group index: keep ratio}; a one-line PolicyError for a layer that cannot prune."""
    ratios: dict[int, float] = {}
    for layer, ratio in keep.items():
        if ratio >= 1.0:
            continue
        group = analysis.group_of(layer)
        if group is None:
            raise PolicyError(f"layer {layer!r}: keep={ratio} but its output channels are "
                              "not a channel group (they pass on another axis)")
        if group.blocked_by is not None:
            raise PolicyError(f"layer {layer!r}: keep={ratio} but its channels cannot be "
                              f"pruned: blocked by {group.blocked_by}")
        if not group.prunable:
            raise PolicyError(f"layer {layer!r}: keep={ratio} but its group has a single "
                              "channel")
        ratios[group.index] = max(ratios.get(group.index, 0.0), ratio)
    return ratios


def channel_importance(model: onnx.ModelProto, analysis: ChannelAnalysis,
                       criterion: str = "l1") -> np.ndarray:
    """Importance per atom root: normalised norms summed over coupled tensors."""
    score = np.zeros(len(analysis.roots), dtype=np.float64)
    inits = initializer_map(model)
    for slot in analysis.tracer.params:
        if not slot.importance:
            continue
        w = np.moveaxis(constant_array(model, slot.tensor, inits), slot.axis, 0)
        w = w.reshape(len(slot.atoms), -1)
        norms = np.abs(w).sum(axis=1, dtype=np.float64) if criterion == "l1" else \
            np.sqrt(np.square(w).sum(axis=1, dtype=np.float64))
        norms = norms / (norms.mean() + 1e-12)
        np.add.at(score, analysis.roots[slot.atoms], norms)
    return score


def choose_channels(model: onnx.ModelProto, analysis: ChannelAnalysis,
                    ratios: dict[int, float], multiple: int, criterion: str) -> np.ndarray:
    """Representative atoms of the kept channels (all of them in groups not pruned)."""
    score = channel_importance(model, analysis, criterion)
    kept = [g.classes for g in analysis.groups if g.index not in ratios]
    for index, ratio in ratios.items():
        group = analysis.groups[index]
        count = kept_count(group.channels, ratio, multiple)
        order = np.argsort(-score[group.classes], kind="stable")
        kept.append(group.classes[np.sort(order[:count])])
    kept = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return _never_empty(analysis, kept, score, set(ratios))


def _never_empty(analysis: ChannelAnalysis, kept: np.ndarray, score: np.ndarray,
                 pruned: set[int]) -> np.ndarray:
    """Add back the best channel of any layer output or Split/Slice part that would lose
    all of its channels (a zero-size tensor is not a model)."""
    alive = set(kept.tolist())
    t = analysis.tracer
    parts = list(t.layer_sources.values())
    for edit in t.edits:
        parts.extend(edit.parts if edit.kind == "split" else
                     [edit.atoms[edit.start:edit.stop]] if edit.kind == "slice" else [])
    extra = []
    for atoms in parts:
        roots = analysis.roots[atoms]
        if len(roots) and not alive.intersection(roots.tolist()):
            if analysis.group_index(atoms[0]) not in pruned:
                continue
            best = int(roots[np.argmax(score[roots])])
            alive.add(best)
            extra.append(best)
    return np.concatenate([kept, np.array(extra, dtype=np.int64)])


def apply_plan(model: onnx.ModelProto, plan: PruningPlan) -> onnx.ModelProto:
    """A copy of `model` with the plan's edits; node names and graph I/O unchanged."""
    out = copy_model(model)
    graph = out.graph
    inits = initializer_map(out)
    names = plan.analysis.tracer.names
    for tensor, uses in plan.tensor_changes().items():
        sigs = set(uses.values())
        in_place = len(sigs) == 1 and () not in sigs and tensor in inits
        original = inits.get(tensor)
        old = None if original is None and tensor not in _constant_outputs(out) \
            else constant_array(out, tensor, inits)
        for sig in sigs - {()}:
            key = next(k for k, s in uses.items() if s == sig)
            value = _edited(plan, key, sig, old, tensor)
            name = tensor if in_place else _fresh_name(f"{tensor}.{names[key[0]]}", inits)
            init = numpy_helper.from_array(value, name)
            if in_place:
                original.CopyFrom(init)
                continue
            graph.initializer.append(init)
            inits[name] = graph.initializer[-1]
            for (i, k), s in uses.items():
                if s == sig:
                    _set_input(graph.node[i], k, name)
        if original is not None and () not in sigs and not in_place:
            graph.initializer.remove(original)
            del inits[tensor]
    for i, groups in plan.groups_attr.items():
        for attr in graph.node[i].attribute:
            if attr.name == "group":
                attr.i = groups
    for (i, k) in plan.values:
        node = graph.node[i]
        if node.op_type == "Split":
            for attr in list(node.attribute):
                if attr.name in ("num_outputs", "split"):
                    node.attribute.remove(attr)
    _match_initializer_inputs(graph, inits)
    del graph.value_info[:]
    return infer(out)


def _match_initializer_inputs(graph, inits) -> None:
    """Old-style models also list initializers as graph inputs: give them the new shapes."""
    for value in graph.input:
        init = inits.get(value.name)
        if init is not None and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            if len(dims) == len(init.dims):
                for dim, size in zip(dims, init.dims):
                    dim.dim_value = size


def _edited(plan: PruningPlan, key, sig, old: np.ndarray | None, tensor: str) -> np.ndarray:
    """The new value of one use of `tensor`; a one-line PassError naming the node, its op
    and the rule that asked for the edit if it cannot be made."""
    try:
        if old is None and sig[0] != "value":
            raise ValueError("it is not a constant")
        return _new_value(plan, key, sig, old)
    except Exception as exc:
        t = plan.analysis.tracer
        rules = sorted({s.rule for s in t.params if (s.node, s.input_index) == key} - {""})
        node = t.nodes[key[0]]
        raise PassError(f"prune_channels: cannot edit {tensor!r} of {node.op_type} node "
                        f"{t.names[key[0]]!r} (rule {', '.join(rules) or 'shape edit'}): "
                        f"{type(exc).__name__}: {first_line(exc)}") from None


def _new_value(plan: PruningPlan, key, sig, old: np.ndarray | None) -> np.ndarray:
    if sig[0] == "value":
        return np.asarray(plan.values[key])
    value = old
    for axis, mask in plan.masks[key].items():
        value = np.compress(mask, value, axis=axis)
    return np.ascontiguousarray(value)


def _set_input(node, k: int, name: str) -> None:
    while len(node.input) <= k:
        node.input.append("")
    node.input[k] = name


def _fresh_name(base: str, taken) -> str:
    name, n = base, 1
    while name in taken:
        name, n = f"{base}.{n}", n + 1
    return name


def _constant_outputs(model: onnx.ModelProto) -> set[str]:
    return {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
