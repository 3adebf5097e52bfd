"""The search space: one action per layer, suggested define-by-run from an Optuna trial.

The space is built from the layer table as data (name and op type per layer), so the
search never needs the model itself. Parameter names are `<layer>:<field>`, which
keeps a trial's params readable as a policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import optuna

from onnxamc.policy import FLOAT_BITS, QUANTIZABLE_OPS, LayerAction, Policy

ACTIONS = ("quant", "sparsity")


@dataclass(frozen=True)
class LayerSlot:
    """What the search needs to know of a layer."""

    name: str
    op_type: str


@dataclass
class SearchSpace:
    layers: Sequence[LayerSlot]
    actions: Sequence[str] = ACTIONS
    max_sparsity: float = 0.9
    sparsity_step: float = 0.05
    bits: Sequence[int] = (FLOAT_BITS, 8)

    def __post_init__(self):
        unknown = set(self.actions) - set(ACTIONS)
        if unknown:
            raise ValueError(f"unknown actions {sorted(unknown)}; known: {', '.join(ACTIONS)}")

    def suggest(self, trial: optuna.Trial) -> Policy:
        policy = Policy()
        for layer in self.layers:
            values = {}
            if "sparsity" in self.actions:
                values["sparsity"] = trial.suggest_float(
                    f"{layer.name}:sparsity", 0.0, self.max_sparsity, step=self.sparsity_step)
            if "quant" in self.actions and layer.op_type in QUANTIZABLE_OPS:
                values["bits"] = trial.suggest_categorical(f"{layer.name}:bits", list(self.bits))
            policy.layers[layer.name] = LayerAction(**values)
        return policy

    def params_of(self, policy: Policy) -> dict:
        """The trial params that reproduce `policy` (for enqueueing seed policies)."""
        params = {}
        for layer in self.layers:
            action = policy.action(layer.name)
            if "sparsity" in self.actions:
                params[f"{layer.name}:sparsity"] = action.sparsity
            if "quant" in self.actions and layer.op_type in QUANTIZABLE_OPS:
                params[f"{layer.name}:bits"] = action.bits
        return params

    def policy_from_params(self, params: dict) -> Policy:
        policy = Policy()
        for layer in self.layers:
            values = {}
            if f"{layer.name}:sparsity" in params:
                values["sparsity"] = params[f"{layer.name}:sparsity"]
            if f"{layer.name}:bits" in params:
                values["bits"] = params[f"{layer.name}:bits"]
            policy.layers[layer.name] = LayerAction(**values)
        return policy

    def seeds(self) -> list[Policy]:
        """Hand-made starting points a careful engineer would try first."""
        names = [layer.name for layer in self.layers]
        ops = {layer.name: layer.op_type for layer in self.layers}
        seeds = [Policy.uniform(names)]
        if "quant" in self.actions:
            seeds.append(Policy.uniform(names, ops, bits=8))
        if "sparsity" in self.actions:
            seeds.append(Policy.uniform(names, ops, sparsity=0.3))
        if "quant" in self.actions and "sparsity" in self.actions:
            seeds.append(Policy.uniform(names, ops, sparsity=0.3, bits=8))
        return seeds
