"""Weight-only 4/8-bit MatMul and Gemm through onnxruntime's MatMulNBits.

Built on `MatMulNBitsQuantizer` (QOperator format: the MatMul becomes a MatMulNBits
contrib op with blocked weights). The quantizer takes MatMul only, so a Gemm layer is
first rewritten as MatMul (+ Add for its bias) under the same name.
"""

from __future__ import annotations

from collections import defaultdict

import onnx

from onnxamc.graph.model import copy_model
from onnxamc.passes.graph_edit import (fix_ir_version, gemm_to_matmul, nodes_by_name,
                                       restore_names)
from onnxamc.passes.quantize import _quiet_root_logger


def quantize_matmul_nbits(model: onnx.ModelProto,
                          layers: dict[str, tuple[int, int, int]]) -> onnx.ModelProto:
    """`layers`: {layer name: (bits, block_size, accuracy_level)}; 0 = onnxruntime default."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if not layers:
        return model
    out = copy_model(model)
    nodes = nodes_by_name(out)
    for name in layers:
        if nodes[name].op_type == "Gemm":
            gemm_to_matmul(out, nodes[name])
    groups: dict[tuple[int, int, int], list[str]] = defaultdict(list)
    for name, config in layers.items():
        groups[config].append(name)
    for (bits, block, level), names in groups.items():
        # `nodes_to_include` adds to the op types quantized (every MatMul by default), it
        # does not restrict them: one layer asked for int4 made every MatMul int4. Every
        # other node is excluded by name (unnamed ones too: their name is "").
        others = sorted({n.name for n in out.graph.node} - set(names))
        with _quiet_root_logger():
            quantizer = MatMulNBitsQuantizer(out, bits=bits, block_size=block, is_symmetric=True,
                                             accuracy_level=level or None,
                                             nodes_to_include=names, nodes_to_exclude=others)
            quantizer.process()
        out = restore_names(quantizer.model.model, names, f"_Q{bits}")
    return fix_ir_version(out)
