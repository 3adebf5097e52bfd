"""The action registry: every compression action, in the order the passes apply them.

Each action is one class declaring its policy fields, their validation, how the search
proposes it and which pass carries it out (actions/base.py says what an action is).
The policy's LayerAction, the search space, `apply_policy`, the CLI help and the
README's field table are all built from `ACTIONS`, so adding an action touches one file
(plus its line here).

Walls: actions/ declares; an action's `apply` imports its pass from passes/ when it
runs, so search/ can read the declarations without importing any pass.
"""

from __future__ import annotations

from onnxamc.actions.base import Action, Field, FloatRange, PassCache, PassJob, SearchSpec
from onnxamc.actions.quantize import Quantize
from onnxamc.actions.structure import LowRank, Prune, Remove
from onnxamc.actions.weights import Distill, Share, Sparsity

# Apply order: structural first (they keep layer names), then weight edits, then
# quantization, which must see the final float weights.
ACTIONS: tuple[Action, ...] = (Remove(), Prune(), LowRank(), Sparsity(), Share(), Quantize(),
                               Distill())
BY_NAME: dict[str, Action] = {a.name: a for a in ACTIONS}
FIELDS: tuple[Field, ...] = tuple(f for a in ACTIONS for f in a.fields)
OWNER: dict[str, Action] = {f.name: a for a in ACTIONS for f in a.fields}
SEARCHABLE: dict[str, Action] = {a.name: a for a in ACTIONS if a.search is not None}


def apply_policy(model, policy, calibration=None, calibration_method: str = "minmax", *,
                 reconstruct: bool = False, channel_multiple: int = 8,
                 importance: str = "l1", runtime: str = "onnxruntime",
                 int8_threshold: float | None = 0.0, cache: PassCache | None = None):
    """The compressed model for `policy`, validated against `model` first.

    `model` is a ModelProto or a graph.ModelContext (analysed once, reused);
    `calibration` returns feed dicts when called, which happens only when a policy
    quantizes activations statically or `reconstruct` refits pruned layers. Each action
    runs on the model the previous one left, in registry order, on the layers whose
    LayerAction asks for it. `cache` keeps what the passes may reuse for the next
    policy on the same model and calibration data."""
    from onnxamc.graph.context import ModelContext
    from onnxamc.profiling import phase

    context = model if isinstance(model, ModelContext) else ModelContext(model)
    job = PassJob(calibration, calibration_method, reconstruct, channel_multiple, importance,
                  runtime, int8_threshold, cache)
    check_policy(context, policy)
    current = context
    for action in ACTIONS:
        present = current.layer_ops
        chosen = {n: a for n, a in policy.layers.items() if n in present and action.is_active(a)}
        if not chosen:
            continue
        with phase(f"apply {action.name}"):
            out = action.apply(current, chosen, job)
        if out is not current.model:
            current = ModelContext(out, context.name)
    return current.model


def check_policy(context, policy) -> None:
    """A one-line PolicyError unless every layer can take what the policy asks of it:
    the fields' ranges, the model's fingerprint, then each action's fit on its layer."""
    from onnxamc.errors import PolicyError

    policy.validate(context.layer_ops, context.fingerprint)
    layers = {layer.name: layer for layer in context.info.layers}
    for name, layer_action in policy.layers.items():
        for action in ACTIONS:
            if action.is_active(layer_action) and not action.fits(layers[name], context):
                raise PolicyError(f"layer {name!r}: {action.unfit_reason(layers[name], context)}")


def field_table() -> str:
    """The policy fields as a markdown table (the README shows exactly this)."""
    rows = ["| field | values | action |", "|---|---|---|"]
    rows += [f"| `{f.name}` | {f.values} | {f.help} |" for f in FIELDS]
    return "\n".join(rows)


def searchable_help() -> str:
    """One line per searchable action and its default range, for `--actions` help."""
    parts = []
    for name, action in SEARCHABLE.items():
        spec = action.search
        values = (f"{spec.values.low:g}:{spec.values.high:g}:{spec.values.step:g}"
                  if isinstance(spec.values, FloatRange)
                  else "/".join(str(v) for v in spec.values))
        parts.append(f"{name}[={values}] ({spec.field}: {action.summary})")
    return "; ".join(parts)


__all__ = ["ACTIONS", "Action", "BY_NAME", "FIELDS", "Field", "FloatRange", "OWNER", "PassCache",
           "PassJob",
           "SEARCHABLE", "SearchSpec", "apply_policy", "field_table", "searchable_help"]
