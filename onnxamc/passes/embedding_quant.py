"""Weight-only int8 / int4 for embedding tables: `Gather` from a constant matrix.

onnxruntime's `GatherBlockQuantized` (com.microsoft) gathers rows of the quantized
table and dequantizes only those rows, so the table is stored at 8 or 4 bits and
nothing is dequantized beyond the tokens of the batch. Dynamic int8 of the MatMuls
leaves the table float (it is most of a small transformer's file: MiniLM's word
embeddings are 11.7 M of its 22.7 M weights). int4 goes through onnxruntime's
MatMulNBitsQuantizer (which takes Gather); int8, which that quantizer refuses, is the
same op with `bits=8`, uint8 rows and a zero point of 128, written here.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxamc.graph import initializer_map
from onnxamc.graph.model import copy_model
from onnxamc.passes.graph_edit import (drop_unused_initializer, fix_ir_version, nodes_by_name,
                                       restore_names, unique)
from onnxamc.passes.quantize import _quiet_root_logger

MS_DOMAIN = "com.microsoft"
DEFAULT_BLOCK = 32


def embedding_gathers(model: onnx.ModelProto) -> list[str]:
    """Gather nodes (named as copy_model names them) that read rows (axis 0) of a
    constant float matrix with at least one block of columns."""
    inits = initializer_map(model)
    out = []
    for node in copy_model(model).graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if table is not None and table.data_type == onnx.TensorProto.FLOAT and \
                len(table.dims) == 2 and axis == 0 and table.dims[1] >= 16:
            out.append(node.name)
    return out


def quantize_embeddings(model: onnx.ModelProto, bits: dict[str, int],
                        block_size: int = DEFAULT_BLOCK) -> onnx.ModelProto:
    """`bits`: {Gather node name: 8 or 4}; each table becomes blocked symmetric integers
    (one scale per `block_size` columns of a row) behind a GatherBlockQuantized."""
    if not bits:
        return model
    out = copy_model(model)
    for name in [n for n, b in bits.items() if b == 8]:
        _gather_int8(out, nodes_by_name(out)[name], block_size)
    four = [n for n, b in bits.items() if b == 4]
    if four:
        out = _gather_int4(out, four, block_size)
    if not any(o.domain == MS_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return fix_ir_version(out)


def _block_for(columns: int, block_size: int) -> int:
    """The largest power of two <= block_size (>= 16) that divides the row."""
    block = block_size
    while block > 16 and columns % block:
        block //= 2
    return block


def _gather_int8(model: onnx.ModelProto, node: onnx.NodeProto, block_size: int) -> None:
    table = numpy_helper.to_array(initializer_map(model)[node.input[0]])
    block = _block_for(table.shape[1], block_size)
    padded = -table.shape[1] % block
    rows = np.pad(table, ((0, 0), (0, padded))).reshape(table.shape[0], -1, block)
    scale = np.maximum(np.abs(rows).max(-1), np.finfo(np.float32).tiny) / 127
    q = np.clip(np.round(rows / scale[..., None]), -127, 127).astype(np.int16) + 128
    q = q.reshape(table.shape[0], -1)[:, :table.shape[1]].astype(np.uint8)
    names = [unique(model, f"{node.name}.table_{k}") for k in ("q8", "scale", "zero")]
    model.graph.initializer.extend([
        numpy_helper.from_array(q, names[0]),
        numpy_helper.from_array(scale.astype(np.float32), names[1]),
        numpy_helper.from_array(np.full(scale.shape, 128, np.uint8), names[2])])
    old_table = node.input[0]
    gathered = helper.make_node("GatherBlockQuantized", [names[0], node.input[1], *names[1:]],
                                list(node.output), name=node.name, domain=MS_DOMAIN, bits=8,
                                block_size=block, gather_axis=0, quantize_axis=1)
    index = list(model.graph.node).index(node)
    model.graph.node.remove(node)
    model.graph.node.insert(index, gathered)
    drop_unused_initializer(model, old_table)


def _gather_int4(model: onnx.ModelProto, names: list[str], block_size: int) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet_root_logger():
        quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True,
                                         nodes_to_include=names, op_types_to_quantize=("Gather",),
                                         quant_axes=(("Gather", 1),))
        quantizer.process()
    return restore_names(quantizer.model.model, names, "_Q4")
