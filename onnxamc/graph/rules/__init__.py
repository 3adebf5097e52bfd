"""The channel rules: one flat table from ONNX op type to the rule that moves its channels.

Each family module (elementwise, conv, linear, normalization, concat_split, shape_ops,
reduction, attention, recurrent) declares `RULES = {op_type: function}`; this package
merges them into one registry keyed by (domain, op_type). A rule is `rule(tracer, node_index, node)`: it
reads the layouts of the node's inputs (`tracer.layout(name)`), sets those of its outputs
(`tracer.set`), ties atoms (`tracer.atoms.union`), records the constants that lose
channels with them (`tracer.param`) and raises `Unsupported("why")` for a case it does not
handle. An op without a rule blocks the channels that reach it.

A user registers a rule for a custom op with `register_rule`, e.g. an element-wise
activation in a custom domain:

    from onnxamc.graph.rules import register_rule, passthrough
    register_rule("FastGelu", passthrough, domain="com.microsoft")
"""

from __future__ import annotations

from onnxamc.graph.rules import (attention, concat_split, conv, elementwise, linear,
                                 normalization, recurrent, reduction, shape_ops)
from onnxamc.graph.rules.elementwise import elementwise as broadcast_elementwise
from onnxamc.graph.rules.elementwise import passthrough
from onnxamc.graph.tracer import Rule, RuleFunction, Tracer, Unsupported, domain_key

FAMILIES = (elementwise, conv, linear, normalization, concat_split, shape_ops, reduction,
            attention, recurrent)

_REGISTRY: dict[tuple[str, str], Rule] = {
    ("", op): Rule(function, source=op in getattr(family, "SOURCES", ()))
    for family in FAMILIES for op, function in getattr(family, "RULES", {}).items()}


def register_rule(op_type: str, rule: RuleFunction, domain: str = "",
                  source: bool = False) -> Rule | None:
    """Use `rule` for nodes of `op_type` in `domain` from now on; returns the rule it
    replaces (None if there was none). `source=True` for an op that creates channels
    (a layer: it runs even when no input carries tracked channels)."""
    key = (domain_key(domain), op_type)
    previous = _REGISTRY.get(key)
    _REGISTRY[key] = Rule(rule, source)
    return previous


def unregister_rule(op_type: str, domain: str = "") -> None:
    """Forget the rule of `op_type` (its channels are blocked again)."""
    _REGISTRY.pop((domain_key(domain), op_type), None)


def rule_table() -> dict[tuple[str, str], Rule]:
    """A snapshot of the registry: {(domain, op_type): Rule}, domain "" for ONNX."""
    return dict(_REGISTRY)


__all__ = ["FAMILIES", "Rule", "Tracer", "Unsupported", "broadcast_elementwise", "passthrough",
           "register_rule", "rule_table", "unregister_rule"]
