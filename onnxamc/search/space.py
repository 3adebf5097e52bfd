"""The search space: one action per layer, suggested define-by-run from an Optuna trial.

The space is built from the layer table as data (LayerSlot rows: name, op type, channels,
MACs, the actions each layer takes) and the cost model (graph.cost.CostModel, also pure
data), so the search never needs the model itself. Parameter names are
`<layer>:<field>`, which keeps a trial's params readable as a policy.

Which actions exist, their ranges and how they enter the cost model is the action
registry's (onnxamc.actions: each action's `search` spec). Users pick actions and ranges
with `--actions quant,sparsity=0:0.8:0.1,prune=0.3:1`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from onnxamc.actions import SEARCHABLE, Action, FloatRange
from onnxamc.policy import LayerAction, Policy

DEFAULT_ACTIONS = ("prune", "quant")


@dataclass(frozen=True)
class LayerSlot:
    """What the search needs to know of a layer (a row of the layer table, as data)."""

    name: str
    op_type: str
    macs: int = 0
    params: int = 0
    c_in: int = 0
    c_out: int = 0
    depthwise: bool = False
    features: tuple[float, ...] = ()  # Layer.features(): the raw AMC state
    takes: frozenset[str] = frozenset(SEARCHABLE)  # actions the search proposes on it
    choices: tuple[tuple[str, tuple], ...] = ()  # (action, its values on this layer)

    def choices_for(self, action: str) -> tuple | None:
        return next((values for name, values in self.choices if name == action), None)


@dataclass(frozen=True)
class Param:
    """One searched number: an action of one layer, with its Optuna distribution."""

    name: str
    layer: int  # index into SearchSpace.layers
    action: Action
    distribution: BaseDistribution

    @property
    def spec(self):
        return self.action.search

    def compression(self, value: Any) -> float:
        """0 at the identity, 1 at the most compressed value."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return d.choices.index(value) / max(1, len(d.choices) - 1)
        extreme = _extreme(d, self.spec.identity)
        span = extreme - self.spec.identity
        return 0.0 if span == 0 else min(1.0, max(0.0, (value - self.spec.identity) / span))

    def value_at(self, amount: float, toward_extreme: bool = False) -> Any:
        """The value `amount` of the way from the identity to the extreme, on the grid
        (`toward_extreme` rounds toward more compression)."""
        amount = min(1.0, max(0.0, float(amount)))
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            n = len(d.choices)
            index = -int(-amount * (n - 1) // 1) if toward_extreme else round(amount * (n - 1))
            return d.choices[min(n - 1, index)]
        start, extreme = min(max(self.spec.identity, d.low), d.high), _extreme(d, self.spec.identity)
        value = start + amount * (extreme - start)
        if d.step:
            steps = (value - d.low) / d.step
            if not toward_extreme:
                steps = round(steps)
            elif extreme > start:
                steps = math.ceil(steps - 1e-9)
            else:
                steps = math.floor(steps + 1e-9)
            value = d.low + steps * d.step
        return float(min(d.high, max(d.low, round(value, 10))))


def _extreme(d: BaseDistribution, identity: Any) -> Any:
    """The most compressed value of a distribution: its last choice, or the end of its
    range farther from the identity."""
    if isinstance(d, CategoricalDistribution):
        return d.choices[-1]
    return d.high if abs(d.high - identity) >= abs(d.low - identity) else d.low


def _distribution(values: FloatRange | tuple) -> BaseDistribution:
    if isinstance(values, FloatRange):
        return FloatDistribution(values.low, values.high, step=values.step)
    return CategoricalDistribution(list(values))


@dataclass
class SearchSpace:
    layers: Sequence[LayerSlot]
    actions: Sequence[str] = DEFAULT_ACTIONS  # each "name" or "name=RANGE"
    cost: Any = None  # graph.cost.CostModel (None: a layer's MACs change only by its own factors)
    ranges: dict[str, FloatRange | tuple] = field(default_factory=dict)

    def __post_init__(self):
        names = []
        for item in self.actions:
            name, _, spec = item.partition("=")
            name = name.strip()
            if name not in SEARCHABLE:
                raise ValueError(f"unknown action {name!r}; searchable: {', '.join(SEARCHABLE)}")
            if spec:
                self.ranges[name] = parse_range(name, spec)
            names.append(name)
        self.actions = names
        self._params = []
        for i, slot in enumerate(self.layers):
            for name, action in SEARCHABLE.items():
                values = self.ranges.get(name) or slot.choices_for(name) or action.search.values
                if name in names and name in slot.takes and _varies(values):
                    self._params.append(Param(f"{slot.name}:{action.search.name}", i, action,
                                              _distribution(values)))
        self._by_name = {p.name: p for p in self._params}

    # --- the parameters ----------------------------------------------------------
    def params(self) -> list[Param]:
        """Every searched number, in the order `suggest` asks for them."""
        return list(self._params)

    def param(self, name: str) -> Param | None:
        return self._by_name.get(name)

    def suggest(self, trial: optuna.Trial) -> Policy:
        values = {p.name: suggest_value(trial, p.name, p.distribution) for p in self._params}
        return self.policy_from_params(values)

    def params_of(self, policy: Policy) -> dict:
        """The trial params that reproduce `policy` (for enqueueing seed policies), each
        snapped to its range (a transferred policy may come from another range)."""
        out = {}
        for p in self._params:
            action = policy.action(self.layers[p.layer].name)
            choices = getattr(p.distribution, "choices", ())
            out[p.name] = _nearest(p.distribution, p.action.encode(action, choices))
        return out

    def policy_from_params(self, params: dict) -> Policy:
        values: dict[str, dict] = {slot.name: {} for slot in self.layers}
        for p in self._params:
            if p.name in params:
                values[self.layers[p.layer].name].update(p.action.decode(params[p.name]))
        return Policy({name: LayerAction(**v) for name, v in values.items()})

    def seeds(self) -> list[Policy]:
        """Hand-made starting points a careful engineer would try first: the original,
        each action alone at a moderate value, and all of them together."""
        identity = self.policy_from_params({})
        identity.meta = {"baseline": "original"}
        seeds = [identity]
        chosen = [SEARCHABLE[n] for n in SEARCHABLE  # actions whose seed compresses
                  if n in self.actions and SEARCHABLE[n].search.seed != SEARCHABLE[n].search.identity]
        for group in [[a] for a in chosen] + ([chosen] if len(chosen) > 1 else []):
            params = {p.name: _seed_value(p) for p in self._params if p.action in group}
            seed = self.policy_from_params(params)
            seed.meta = {"baseline": "uniform " + " + ".join(
                f"{a.name}={a.search.seed:g}" for a in group)}
            seeds.append(seed)
        return seeds

    # --- cost model ---------------------------------------------------------------
    @property
    def total_macs(self) -> int:
        return self.cost.total_macs if self.cost is not None else sum(s.macs for s in self.layers)

    def macs(self, params: dict) -> float:
        """Effective MACs (non-zero multiply-accumulates) of the policy `params`: channel
        keep ratios through the cost model, each layer's own factors (sparsity) on top."""
        keep: dict[str, float] = {}
        factors: dict[str, float] = {}
        for p in self._params:
            if p.name not in params or p.spec.cost is None:
                continue
            layer = self.layers[p.layer].name
            if p.spec.cost == "keep":
                keep[layer] = params[p.name]
            else:
                factors[layer] = factors.get(layer, 1.0) * p.spec.macs_factor(params[p.name])
        if self.cost is not None:
            return self.cost.macs(keep, factors)
        return sum(s.macs * keep.get(s.name, 1.0) * factors.get(s.name, 1.0) for s in self.layers)

    def macs_ratio(self, policy_or_params: Policy | dict) -> float:
        params = (self.params_of(policy_or_params) if isinstance(policy_or_params, Policy)
                  else policy_or_params)
        return self.macs(params) / self.total_macs if self.total_macs else 1.0

    def vector(self, params: dict) -> list[float]:
        """The policy as compression amounts in [0, 1], one per parameter."""
        return [p.compression(params.get(p.name, p.spec.identity)) for p in self._params]


def parse_range(name: str, spec: str) -> FloatRange | tuple:
    """`0:0.8` or `0:0.8:0.1` (low:high[:step]) for numbers, `32/8` for choices."""
    base = SEARCHABLE[name].search.values
    try:
        if isinstance(base, FloatRange):
            parts = [float(x) for x in spec.split(":")]
            if len(parts) not in (2, 3) or parts[0] > parts[1]:
                raise ValueError
            step = parts[2] if len(parts) == 3 else base.step
            if step and (parts[1] - parts[0]) / step % 1 > 1e-6 and \
                    1 - (parts[1] - parts[0]) / step % 1 > 1e-6:
                raise ValueError
            return FloatRange(parts[0], parts[1], step)
        choices = tuple(type(base[0])(x) for x in spec.split("/"))
        if not choices:
            raise ValueError
        return choices
    except ValueError:
        form = "LOW:HIGH[:STEP] with HIGH-LOW a multiple of STEP" \
            if isinstance(base, FloatRange) else "A/B/... (e.g. 32/8)"
        raise ValueError(f"action range {name}={spec!r} is not {form}") from None


def _varies(values: FloatRange | tuple) -> bool:
    """More than one value to choose from (a layer with one form takes no parameter)."""
    return isinstance(values, FloatRange) or len(values) > 1


def _seed_value(p: Param) -> Any:
    """The action's moderate value; for per-layer choices, the first that compresses."""
    choices = getattr(p.distribution, "choices", None)
    if choices and p.spec.seed not in choices:
        return choices[1] if len(choices) > 1 else choices[0]
    return _nearest(p.distribution, p.spec.seed)


def suggest_value(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, list(distribution.choices))
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step)


def _nearest(distribution: BaseDistribution, value: Any) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return value if value in distribution.choices else distribution.choices[-1]
    value = min(distribution.high, max(distribution.low, value))
    if distribution.step:
        value = distribution.low + round((value - distribution.low) / distribution.step) \
            * distribution.step
    return float(round(value, 10))
