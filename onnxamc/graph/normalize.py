"""The front door: every model entering graph/ is normalized here first.

Files from converters and exporters spell the same network many ways: weights as
`Constant` nodes (Paddle, TF) or behind `Identity`/`Cast`/`Transpose`/`DequantizeLinear`,
shapes computed at run time through `Shape` arithmetic, dynamic input dimensions, old
opsets. The analysis, the passes and the written model all see one normal form instead:

- the user's input shapes fixed (`--input-shape NAME:1,3,640,640`);
- opsets below 13 upgraded with onnx's version converter (the quantizer's
  per-channel `DequantizeLinear` needs 13), or refused naming the opset;
- constants folded into initializers and dead nodes removed by onnxscript's optimizer
  (on onnx-ir), which also resolves `Shape` arithmetic once the input shapes are known;
- shapes inferred by onnx;
- channel shuffles written as a Gather of the channels (shuffle.py).

onnxscript's optimizer was chosen after measuring it against onnxslim and onnx-simplifier
on the test zoo (see tools/bench_front_door.py): it is already a dependency of the torch
exporter, runs without onnxruntime, and lets us fold weight-only `DequantizeLinear`.
A model the front door has written carries a marker, so reading it again costs nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import onnx

from onnxamc.errors import ModelError
from onnxamc.graph.checks import MIN_IR_VERSION, MIN_OPSET, STANDARD_DOMAINS, all_nodes
from onnxamc.graph.shuffle import shuffles_as_gather

# onnx's reference evaluator (which the optimizer folds with) has DequantizeLinear from
# opset 19 on: a model with weight-only DequantizeLinear to fold is upgraded that far.
DEQUANTIZE_FOLD_OPSET = 19
MARKER = "onnxamc.normalized"
# onnxruntime's own operators: it runs them (bench, latency), nothing folds inside them.
RUNTIME_DOMAINS = ("com.microsoft",)
# Ops whose all-constant results are weights: folded whatever their size.
WEIGHT_OPS = frozenset({"Identity", "Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                        "Flatten", "DequantizeLinear", "Mul", "Div", "Add", "Sub", "Concat",
                        "Slice", "Gather", "Split"})
SMALL_TENSOR = 4096  # elements of a ConstantOfShape result that is shape arithmetic
OUTPUT_SIZE_LIMIT = 1 << 24
FOLD_ROUNDS = 3  # folding rounds: a round can make the next one's inputs constant  # elements a folded tensor may have when it grows the model
QUANTIZE_OPS = ("QuantizeLinear", "DynamicQuantizeLinear")


@dataclass
class FrontDoorReport:
    """What the front door changed, for `inspect` to say in a few lines."""

    nodes_before: int = 0
    nodes_after: int = 0
    removed: dict[str, int] = field(default_factory=dict)  # op type -> nodes fewer
    added: dict[str, int] = field(default_factory=dict)  # op type -> nodes more (inlined functions and If branches)
    shapes_fixed: dict[str, tuple[str, str]] = field(default_factory=dict)
    opset: tuple[int, int] = (0, 0)
    shapes_known: tuple[float, float] = (0.0, 0.0)  # node outputs with static shapes
    dynamic_inputs: list[str] = field(default_factory=list)
    dequantized_weights: int = 0
    shuffles: int = 0  # channel shuffles written as a Gather of the channels
    already_normalized: bool = False

    def lines(self) -> list[str]:
        if self.already_normalized:
            return ["front door: already normalized by onnxamc"]
        out = []
        if self.opset[0] != self.opset[1]:
            out.append(f"opset upgraded {self.opset[0]} -> {self.opset[1]}")
        for name, (before, after) in self.shapes_fixed.items():
            out.append(f"input {name}: shape {before} -> {after}")
        changes = [f"{label}: {_counts(ops)}" for label, ops in
                   (("folded or removed", self.removed),
                    ("added (inlined functions, shuffles)", self.added)) if ops]
        out.append(f"nodes {self.nodes_before} -> {self.nodes_after}"
                   + (f" ({'; '.join(changes)})" if changes else ""))
        if self.shuffles:
            out.append(f"{self.shuffles} channel shuffles (Reshape-Transpose-Reshape) written "
                       "as a Gather of the channels, so their channels prune one by one")
        if self.dequantized_weights:
            out.append(f"{self.dequantized_weights} weight-only DequantizeLinear folded to float")
        out.append(f"static shapes known for {100 * self.shapes_known[0]:.0f}% -> "
                   f"{100 * self.shapes_known[1]:.0f}% of node outputs")
        for name in self.dynamic_inputs:
            out.append(f"input {name} keeps dynamic dimensions beyond the batch: give "
                       f"--input-shape {name}:... for exact MACs")
        return ["front door: " + line for line in out]


def normalize(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None
              ) -> tuple[onnx.ModelProto, FrontDoorReport]:
    """The normal form of `model` (a new ModelProto) and what changed on the way."""
    report = FrontDoorReport(nodes_before=len(model.graph.node),
                             opset=(_opset(model), _opset(model)))
    if is_normalized(model) and not input_shapes:
        report.nodes_after, report.already_normalized = len(model.graph.node), True
        return model, report
    check_domains(model)
    before = Counter(n.op_type for n in model.graph.node)
    report.shapes_known = (_static_share(_infer(model)), 0.0)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if input_shapes:
        report.shapes_fixed = set_input_shapes(out, input_shapes)
    quantized = any(before[op] for op in QUANTIZE_OPS)
    fold_dq = not is_normalized(model) and before["DequantizeLinear"] > 0 and not quantized
    out = upgrade_opset(out, DEQUANTIZE_FOLD_OPSET if fold_dq else MIN_OPSET)
    report.dequantized_weights = before["DequantizeLinear"] if fold_dq else 0
    out = fold(out, fold_dq)
    out = _infer(out)
    report.shuffles = shuffles_as_gather(out)
    after = Counter(n.op_type for n in out.graph.node)
    report.dequantized_weights -= after["DequantizeLinear"] if fold_dq else 0
    report.removed = {op: n - after[op] for op, n in before.items() if n > after[op]}
    report.added = {op: n - before[op] for op, n in after.items() if n > before[op]}
    report.nodes_after, report.opset = len(out.graph.node), (report.opset[0], _opset(out))
    report.shapes_known = (report.shapes_known[0], _static_share(out))
    report.dynamic_inputs = [v.name for v in _real_inputs(out)
                             if not all(map(_fixed, v.type.tensor_type.shape.dim[1:]))]
    mark_normalized(out)
    return out, report


def is_normalized(model: onnx.ModelProto) -> bool:
    return any(p.key == MARKER for p in model.metadata_props)


def check_domains(model: onnx.ModelProto) -> None:
    """One line naming the first op of a domain onnxamc does not read: not standard
    ONNX, not onnxruntime's, not a model-local function, no channel rule registered
    for it (graph.rules.register_rule)."""
    from onnxamc.graph.rules import rule_table

    known = {(f.domain, f.name) for f in model.functions} | set(rule_table())
    for node in all_nodes(model.graph):
        if node.domain not in STANDARD_DOMAINS + RUNTIME_DOMAINS \
                and (node.domain, node.op_type) not in known:
            raise ModelError(f"op {node.domain}:{node.op_type} (node {node.name or '?'}) "
                             "is not standard ONNX; onnxamc reads "
                             "standard ONNX and onnxruntime (com.microsoft) ops, and ops "
                             "with a registered channel rule")


def parse_input_shapes(texts: list[str] | tuple[str, ...] | None) -> dict[str, tuple[int, ...]]:
    """`["NAME:1,3,640,640", ...]` -> {NAME: (1, 3, 640, 640)}. A shape without a name
    ("1,3,224,224") is keyed "" and means the model's only input. Names may contain
    colons (TF's "input:0"): the shape is what follows the last one."""
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts or ():
        name, _, dims = text.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            shape = ()
        if not shape or any(d <= 0 for d in shape):
            raise ModelError(f"--input-shape {text!r} is not NAME:D1,D2,... with positive "
                             "integer dimensions (e.g. input:1,3,224,224)")
        if name in shapes:
            raise ModelError(f"--input-shape gives input {name or '(unnamed)'!r} twice")
        shapes[name] = shape
    return shapes


def set_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]
                     ) -> dict[str, tuple[str, str]]:
    """Fix the given inputs' dimensions in place; one-line errors for a wrong name,
    rank or a dimension the model fixes differently."""
    inputs = {v.name: v for v in _real_inputs(model)}
    if "" in shapes:
        if len(inputs) != 1 or len(shapes) != 1:
            raise ModelError(f"--input-shape without a name fits a model with one input; "
                             f"this one has {len(inputs)} ({', '.join(inputs)}): use NAME:DIMS")
        shapes = {next(iter(inputs)): shapes[""]}
    changed = {}
    for name, shape in shapes.items():
        if name not in inputs:
            raise ModelError(f"--input-shape names {name!r}, which is not a model input "
                             f"(inputs: {', '.join(inputs)})")
        dims = inputs[name].type.tensor_type.shape.dim
        before = _fmt_dims(dims)
        if len(dims) != len(shape):
            raise ModelError(f"input {name} has shape {before}; --input-shape gives "
                             f"{len(shape)} dimensions")
        for axis, (dim, size) in enumerate(zip(dims, shape)):
            if _fixed(dim) and dim.dim_value != size:
                raise ModelError(f"input {name} has shape {before}: dimension {axis} is "
                                 f"fixed at {dim.dim_value}, --input-shape gives {size}")
            dim.Clear()
            dim.dim_value = int(size)
        if _fmt_dims(dims) != before:
            changed[name] = (before, _fmt_dims(dims))
    if changed:
        del model.graph.value_info[:]  # intermediate shapes are inferred again
    return changed


def upgrade_opset(model: onnx.ModelProto, minimum: int = MIN_OPSET) -> onnx.ModelProto:
    """The model at opset `minimum` or above (onnx's version converter), or a one-line
    refusal naming the opset."""
    opset = _opset(model)
    if opset >= minimum:
        return model
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, minimum)
        if upgraded.ir_version < MIN_IR_VERSION:  # IR 3 lists weights among the inputs
            weights = {i.name for i in upgraded.graph.initializer}
            inputs = [v for v in upgraded.graph.input if v.name not in weights]
            del upgraded.graph.input[:]
            upgraded.graph.input.extend(inputs)
            upgraded.ir_version = MIN_IR_VERSION
        onnx.checker.check_model(upgraded)
    except Exception as exc:
        raise ModelError(f"the model's opset {opset} cannot be upgraded to {minimum} by "
                         f"onnx's version converter ({_first_line(exc)}); re-export it at "
                         f"opset {minimum} or newer") from None
    return upgraded


def fold(model: onnx.ModelProto, fold_dequantize: bool) -> onnx.ModelProto:
    """Constants folded into initializers, Shape arithmetic resolved, no-op Identity and
    dead nodes gone: onnxscript's constant folder and onnx-ir's passes, the folder told
    to fold weights whatever their size (and weight-only `DequantizeLinear` when
    `fold_dequantize`). Of the optimizer's rewrite rules only those that drop redundant
    shape ops (`_shape_rules`: a Reshape of a Reshape, an Expand a broadcasting op would
    do anyway, as torch exports an attention mask per head): the others fuse
    BatchNormalization and Pad into convolutions and merge the Q/DQ nodes onnxruntime
    fuses, changes the analysis and the training bridge do not expect of a front door."""
    import onnx_ir as ir
    from onnx_ir.passes import common
    from onnxscript import optimizer

    def should_fold(node) -> bool | None:
        if node.domain not in STANDARD_DOMAINS:
            return None
        if node.op_type == "DequantizeLinear":
            return fold_dequantize
        if node.op_type == "ConstantOfShape":  # small ones compute pads (TF 'SAME')
            return _small_constant_of_shape(node)
        return True if node.op_type in WEIGHT_OPS else None

    ir_model = ir.from_proto(model)
    quiet = logging.getLogger("onnxscript")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        common.InlinePass()(ir_model)
        shape_rules = _shape_rules()
        for round_ in range(FOLD_ROUNDS + 1):
            result = optimizer.fold_constants(ir_model, onnx_shape_inference=True,
                                              should_fold=should_fold,
                                              output_size_limit=OUTPUT_SIZE_LIMIT)
            common.RemoveUnusedNodesPass()(ir_model)
            rewritten = shape_rules.apply_to_model(ir_model) if round_ < FOLD_ROUNDS else 0
            if not getattr(result, "modified", True) and not rewritten:
                break
        # onnx-ir's Identity elimination breaks If/Loop branches whose output an Identity
        # makes (silero-vad: "Graph output ... is not an output of any node"): skipped
        # where control flow is left; the analysis looks through Identity anyway.
        identity = [] if _has_subgraphs(ir_model.graph) else [common.IdentityEliminationPass()]
        for cleanup in (*identity, common.RemoveUnusedNodesPass(),
                        common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass(),
                        common.LiftConstantsToInitializersPass(lift_all_constants=True,
                                                               size_limit=0),
                        common.LiftSubgraphInitializersToMainGraphPass()):
            cleanup(ir_model)
    except Exception as exc:
        raise ModelError(f"the model cannot be normalized: {_first_line(exc)}") from None
    finally:
        quiet.setLevel(level)
    return ir.to_proto(ir_model)


def _shape_rules():
    """onnxscript's rewrite rules that only remove redundant shape ops."""
    from onnxscript.rewriter import RewriteRuleSet
    from onnxscript.rewriter.rules.common import (expand_before_binary_op_rules,
                                                  no_op_expand_rule, reshape_reshape_rule)

    return RewriteRuleSet([reshape_reshape_rule, no_op_expand_rule,
                           *expand_before_binary_op_rules.rules])


def _has_subgraphs(graph) -> bool:
    """Whether a node of the (onnx-ir) graph holds a graph attribute (If, Loop, Scan)."""
    import onnx_ir as ir

    return any(attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
               for node in graph for attr in node.attributes.values())


def _small_constant_of_shape(node) -> bool | None:
    """The optimizer keeps ConstantOfShape (it may make large tensors): fold the small
    ones, which are shape arithmetic (pads, Reshape targets)."""
    shape = node.inputs[0].const_value if node.inputs and node.inputs[0] is not None else None
    if shape is None:
        return None
    size = 1
    for d in shape.numpy().reshape(-1).tolist():
        size *= max(int(d), 0)
    return True if size <= SMALL_TENSOR else None


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with the shapes onnx infers (data propagation on), or as it was when
    inference fails. Inference runs on a copy without the large weights' bytes (their
    shapes are what it needs): serializing the weights was most of its time."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_without_large_weights(model),
                                                     data_prop=True)
    except Exception:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    out.graph.value_info.extend(inferred.graph.value_info)
    for mine, theirs in zip(out.graph.output, inferred.graph.output):
        mine.type.CopyFrom(theirs.type)
    return out


def _without_large_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    light = onnx.ModelProto()
    light.CopyFrom(model)
    for init in light.graph.initializer:
        size = 1
        for d in init.dims:
            size *= d
        if size > SMALL_TENSOR:
            for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
                init.ClearField(name)
            init.raw_data = b""
    return light


def mark_normalized(model: onnx.ModelProto) -> None:
    if not is_normalized(model):
        model.metadata_props.add(key=MARKER, value="1")


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), 0)


def _real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def _static_share(model: onnx.ModelProto) -> float:
    """The share of node outputs whose shape is fully known."""
    known = {v.name for v in list(model.graph.value_info) + list(model.graph.output)
             if v.type.tensor_type.HasField("shape")
             and all(map(_fixed, v.type.tensor_type.shape.dim))}
    known |= {i.name for i in model.graph.initializer}
    outputs = [o for n in model.graph.node for o in n.output if o]
    return sum(o in known for o in outputs) / len(outputs) if outputs else 1.0


def _fixed(dim) -> bool:
    """A dimension with a size (converters write -1 or 0 for dynamic ones too)."""
    return dim.HasField("dim_value") and dim.dim_value > 0


def _fmt_dims(dims) -> str:
    return "[" + ", ".join(str(d.dim_value) if _fixed(d) else (d.dim_param or "?")
                           for d in dims) + "]"


def _counts(ops: dict[str, int]) -> str:
    return ", ".join(f"{n} {op}" for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
