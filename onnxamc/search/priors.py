"""Sensitivity priors: good first policies from a per-layer sensitivity table.

The table (written by a sensitivity scan, one action on one layer at a time) is JSON:

    {"layers": {"conv1": {"bits=8": 0.004, "keep=0.5": 0.031, "sparsity=0.5": 0.002},
                "fc":    {"bits=8": 0.0}}}

each value being the accuracy drop measured with only that action applied. For a few
tolerances, every layer takes, per action, its most compressing entry whose drop is
within the tolerance; these policies are enqueued first, so a search starts from what
the scan already knows instead of from uniform guesses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onnxamc.errors import SearchError
from onnxamc.policy import Policy
from onnxamc.search.space import SearchSpace

TOLERANCES = (0.001, 0.003, 0.01, 0.03)


def load_sensitivity(path: str | Path) -> dict[str, dict[str, float]]:
    """The table as {layer: {"field=value": drop}}, checked, with a clear error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SearchError(f"sensitivity table {str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise SearchError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if isinstance(data, dict) and "drops" in data and "actions" in data:
        data = {"layers": _from_sensitivity_command(data)}
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, dict):
        raise SearchError(f"{path}: expected {{\"layers\": {{name: {{\"bits=8\": drop, ...}}}}}}")
    for name, entries in layers.items():
        if not isinstance(entries, dict) or not all(
                isinstance(k, str) and "=" in k and isinstance(v, (int, float))
                and not isinstance(v, bool) for k, v in entries.items()):
            raise SearchError(f"{path}: layer {name!r} must map \"field=value\" to an "
                              "accuracy drop (a number)")
    return layers


def _from_sensitivity_command(data: dict) -> dict[str, dict[str, float]]:
    """The table `onnxamc sensitivity -o` writes ({drops: {layer: {label: drop}},
    actions: {label: fields}}), as {layer: {"field=value": drop}}: actions of one field
    map onto a search parameter; combined ones (e.g. int4 per-block) have none."""
    actions = data.get("actions") or {}
    layers: dict[str, dict[str, float]] = {}
    for name, drops in (data.get("drops") or {}).items():
        entries = {}
        for label, drop in (drops or {}).items():
            fields = actions.get(label) or {}
            if drop is not None and len(fields) == 1:
                (field, value), = fields.items()
                entries[f"{field}={value}"] = drop
        layers[name] = entries
    return layers


def prior_policies(space: SearchSpace, table: dict[str, dict[str, float]],
                   tolerances=TOLERANCES) -> list[Policy]:
    """One policy per tolerance (duplicates and the identity left out)."""
    options = _options(space, table)
    policies, seen = [], set()
    for tolerance in tolerances:
        params: dict[str, Any] = {}
        for name, choices in options.items():
            fitting = [(c, v) for c, v, drop in choices if drop <= tolerance]
            if fitting:
                params[name] = max(fitting, key=lambda cv: cv[0])[1]
        key = tuple(sorted(params.items()))
        if params and key not in seen:
            seen.add(key)
            policies.append(space.policy_from_params(params))
    return policies


def _options(space: SearchSpace, table) -> dict[str, list[tuple[float, Any, float]]]:
    """{param name: [(compression, value, drop)]} for the entries the space can take."""
    options: dict[str, list] = {}
    for layer, entries in table.items():
        for key, drop in entries.items():
            field, _, raw = key.partition("=")
            param = _param_for(space, layer, field.strip())
            if param is None:
                continue
            value = _coerce(param, field.strip(), raw.strip())
            if value is None:
                continue
            options.setdefault(param.name, []).append((param.compression(value), value,
                                                       float(drop)))
    return options


def _param_for(space: SearchSpace, layer: str, field: str):
    """The parameter of `layer` whose action owns the policy field `field`."""
    return next((p for p in space.params() if space.layers[p.layer].name == layer
                 and field in {f.name for f in p.action.fields}), None)


def _coerce(param, field: str, raw: str):
    """The table's value as one the parameter's distribution holds, else None."""
    d = param.distribution
    try:
        number = float(raw)
    except ValueError:
        number = None
    choices = getattr(d, "choices", ())
    if choices and isinstance(choices[0], str):  # named forms: the one that means field=raw
        from onnxamc.policy import LayerAction

        try:
            wanted = LayerAction.from_dict({field: number if number is not None else raw}, field)
        except Exception:
            return None
        value = param.action.encode(wanted, choices)
        return value if param.action.decode(value).get(field) == getattr(wanted, field) \
            else None
    if hasattr(d, "choices"):
        for choice in d.choices:
            if str(choice) == raw or (number is not None and not isinstance(choice, str)
                                      and float(choice) == number):
                return choice
        return None
    if number is None or not d.low - 1e-9 <= number <= d.high + 1e-9:
        return None
    return param.value_at(param.compression(number))
