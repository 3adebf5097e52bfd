"""Small graph edits shared by the structural passes."""

from __future__ import annotations

import onnx


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove initializers no node (and no output) uses any more, in place."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
