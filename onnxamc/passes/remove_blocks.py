"""Layer removal: replace chosen residual blocks x + f(x) by x.

The closing Add becomes an Identity with the same output name, the branch's nodes and
the weights only they used are dropped; every other node keeps its name.
"""

from __future__ import annotations

import onnx
from onnx import helper

from onnxamc.errors import PolicyError
from onnxamc.graph.blocks import residual_blocks
from onnxamc.graph.layers import node_names
from onnxamc.graph.model import infer
from onnxamc.passes.graph_edit import drop_unused_initializers
from onnxamc.graph.model import copy_model


def remove_blocks(model: onnx.ModelProto, layers: list[str],
                  blocks: list | None = None) -> onnx.ModelProto:
    """Remove, for each named layer, the smallest residual block that contains it
    (`blocks`: the model's residual blocks when already known)."""
    out = model
    for layer in layers:
        found = blocks if out is model and blocks is not None else residual_blocks(out)
        blocks = [b for b in found if layer in b.layers]
        if not blocks:
            if out is not model and layer not in _names(out):
                continue  # already gone with a block removed before
            raise PolicyError(f"layer {layer!r}: remove=true but it is not inside a residual "
                              "block (x + f(x)) that can be replaced by the identity")
        out = _remove(out, min(blocks, key=lambda b: len(b.branch)))
    return out


def _remove(model: onnx.ModelProto, block) -> onnx.ModelProto:
    out = copy_model(model)
    add = out.graph.node[block.add]
    identity = helper.make_node("Identity", [block.identity], list(add.output), add.name)
    dropped = set(block.branch)
    nodes = [identity if i == block.add else node for i, node in enumerate(out.graph.node)
             if i not in dropped]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    drop_unused_initializers(out)
    del out.graph.value_info[:]
    return infer(out)


def _names(model: onnx.ModelProto) -> set[str]:
    return set(node_names(model))
