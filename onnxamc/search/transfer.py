"""Transfer: apply a policy found for one model to another of similar architecture.

Layers are matched by kind (op type, depthwise or not, kernel size and stride, from the
AMC features) and by relative depth (position in the layer table scaled to [0, 1]), with
small preferences for equal channel counts and for the same role in a block (the last
part of the layer name, e.g. `conv1` / `conv2`, which models of one family share):
in a ResNet-32 the first stride-2 3x3 conv
of a stage gets the action of the ResNet-20 one, and the five blocks of a stage share
the actions of the three blocks of the shallower one in order. The transferred policy
warm-starts a new study (it is enqueued first).
"""

from __future__ import annotations

import re
from typing import Sequence

from onnxamc.policy import Policy
from onnxamc.search.space import LayerSlot

CHANNEL_MISMATCH = 0.25  # relative-depth units a channel-count mismatch costs
ROLE_MISMATCH = 0.1  # ... and a different block role (about two layers of ResNet-20)


def _kind(slot: LayerSlot) -> tuple:
    kernel = slot.features[4] if len(slot.features) > 5 else None
    stride = slot.features[5] if len(slot.features) > 5 else None
    return slot.op_type, slot.depthwise, kernel, stride


def _role(slot: LayerSlot) -> str:
    """`layers.3.conv1` and `/layers/layers.3/conv1/Conv` (TorchScript names) → conv1."""
    parts = [p for p in re.split(r"[./]", slot.name) if p]
    while len(parts) > 1 and parts[-1] == slot.op_type:
        parts.pop()
    return parts[-1] if parts else ""


def match_layers(source: Sequence[LayerSlot], target: Sequence[LayerSlot]) -> dict[str, str]:
    """{target layer: source layer} for every target layer that has a counterpart of
    the same op type (the same kind where one exists)."""
    def depth(i: int, n: int) -> float:
        return i / (n - 1) if n > 1 else 0.0

    mapping = {}
    for j, t in enumerate(target):
        same_op = [(i, s) for i, s in enumerate(source) if s.op_type == t.op_type]
        same_kind = [(i, s) for i, s in same_op if _kind(s) == _kind(t)]
        candidates = same_kind or same_op
        if not candidates:
            continue
        i, s = min(candidates, key=lambda c: (
            abs(depth(c[0], len(source)) - depth(j, len(target)))
            + CHANNEL_MISMATCH * (c[1].c_in != t.c_in) + CHANNEL_MISMATCH * (c[1].c_out != t.c_out)
            + ROLE_MISMATCH * (_role(c[1]) != _role(t)),
            c[0]))
        mapping[t.name] = s.name
    return mapping


def transfer_policy(policy: Policy, source: Sequence[LayerSlot],
                    target: Sequence[LayerSlot]) -> Policy:
    """`policy` (for the source layers) rewritten for the target layers."""
    mapping = match_layers(source, target)
    out = Policy(meta={"transferred_from": policy.model_name or policy.fingerprint,
                       "layer_map": mapping})
    for t in target:
        if t.name in mapping:
            out.layers[t.name] = policy.action(mapping[t.name])
    return out
