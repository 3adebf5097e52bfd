"""The search space: one action per layer, suggested define-by-run from an Optuna trial.

The space is built from the layer table as data (name, op type, channels, MACs per
layer), so the search never needs the model itself. Parameter names are
`<layer>:<field>`, which keeps a trial's params readable as a policy.

Actions live in one flat table, ACTION_TABLE: a new action (a LayerAction field the
passes know) is one entry there — which layers it applies to, its default range, its
identity and most-compressed values, and how it scales the layer's MACs. Users pick
actions and ranges with `--actions quant,sparsity=0:0.8:0.1,prune=0.3:1`.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from onnxamc.policy import FLOAT_BITS, QUANTIZABLE_OPS, LayerAction, Policy


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
    producer: str | None = None  # the layer whose output channels this layer reads
    feeds_layer: bool = True  # False for layers whose outputs leave the model (logits)
    features: tuple[float, ...] = ()  # Layer.features(): the raw AMC state
    prunable: bool = True  # its channel group can lose channels (graph.groups says)


def slots_from_layers(layers: Sequence[Any],
                      prunable: set[str] | None = None) -> list[LayerSlot]:
    """LayerSlots from graph Layer rows (read as data, duck-typed).

    The producer of a layer is estimated as the nearest earlier layer whose output
    channels match its input channels; it is only used to estimate how channel pruning
    of one layer shrinks the MACs of the next. `prunable` names the layers whose channel
    group can be pruned (all, when not given).
    """
    slots, producers = [], {}
    for i, layer in enumerate(layers):
        producer = next((p.name for p in reversed(layers[:i]) if p.c_out == layer.c_in), None)
        producers[layer.name] = producer
    consumed = set(producers.values())
    for layer in layers:
        depthwise = bool(getattr(layer, "depthwise", False))
        slots.append(LayerSlot(layer.name, layer.op_type, int(layer.macs), int(layer.params),
                               int(layer.c_in), int(layer.c_out), depthwise,
                               producers[layer.name], layer.name in consumed,
                               tuple(layer.features()),
                               prunable is None or layer.name in prunable))
    return slots


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    step: float | None = None


@dataclass(frozen=True)
class ActionSpec:
    """One kind of action: a LayerAction field searched on the layers it applies to.

    `identity` leaves the layer as it is and `extreme` is its most compressed value
    (agents that think in "how much to compress" map [0, 1] onto that segment).
    `macs_scale` maps a value to the factor on the layer's MACs; `shrinks_consumers`
    says the factor also applies to the layers reading its output (channel pruning).
    `ready` is False while the pass behind the field is not in this branch.
    """

    name: str
    field: str
    applies: Callable[[LayerSlot], bool]
    values: FloatRange | tuple
    identity: Any
    seed: Any  # a moderate value for the uniform seed policies
    macs_scale: Callable[[Any], float] | None = None
    shrinks_consumers: bool = False
    ready: bool = True

    def distribution(self, values: FloatRange | tuple | None = None) -> BaseDistribution:
        values = self.values if values is None else values
        if isinstance(values, FloatRange):
            return FloatDistribution(values.low, values.high, step=values.step)
        return CategoricalDistribution(list(values))

    def extreme(self, distribution: BaseDistribution) -> Any:
        if isinstance(distribution, CategoricalDistribution):
            return distribution.choices[-1]
        lo, hi = distribution.low, distribution.high
        return hi if abs(hi - self.identity) >= abs(lo - self.identity) else lo


def _weighted(slot: LayerSlot) -> bool:
    return True


def _quantizable(slot: LayerSlot) -> bool:
    return slot.op_type in QUANTIZABLE_OPS


def _channel_prunable(slot: LayerSlot) -> bool:
    return slot.prunable and slot.feeds_layer and not slot.depthwise


ACTION_TABLE: dict[str, ActionSpec] = {spec.name: spec for spec in (
    ActionSpec("sparsity", "sparsity", _weighted, FloatRange(0.0, 0.9, 0.05), 0.0, 0.3,
               macs_scale=lambda s: 1.0 - s),
    ActionSpec("quant", "bits", _quantizable, (FLOAT_BITS, 8), FLOAT_BITS, 8),
    ActionSpec("prune", "keep", _channel_prunable, FloatRange(0.25, 1.0, 0.05), 1.0, 0.7,
               macs_scale=lambda k: k, shrinks_consumers=True),
)}
ACTIONS = tuple(name for name, spec in ACTION_TABLE.items() if spec.ready)


@dataclass(frozen=True)
class Param:
    """One searched number: an action of one layer, with its Optuna distribution."""

    name: str
    layer: int  # index into SearchSpace.layers
    action: ActionSpec
    distribution: BaseDistribution

    def compression(self, value: Any) -> float:
        """0 at the identity, 1 at the most compressed value."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return d.choices.index(value) / max(1, len(d.choices) - 1)
        extreme = self.action.extreme(d)
        span = extreme - self.action.identity
        return 0.0 if span == 0 else min(1.0, max(0.0, (value - self.action.identity) / span))

    def value_at(self, amount: float, toward_extreme: bool = False) -> Any:
        """The value `amount` of the way from the identity to the extreme, on the grid
        (`toward_extreme` rounds toward more compression)."""
        amount = min(1.0, max(0.0, float(amount)))
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            n = len(d.choices)
            index = -int(-amount * (n - 1) // 1) if toward_extreme else round(amount * (n - 1))
            return d.choices[min(n - 1, index)]
        start, extreme = self.action.identity, self.action.extreme(d)
        start = min(max(start, d.low), d.high)
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


@dataclass
class SearchSpace:
    layers: Sequence[LayerSlot]
    actions: Sequence[str] = ACTIONS
    allow_unready: bool = False  # tests and the merge of the pruning pass turn `prune` on
    ranges: dict[str, FloatRange | tuple] = field(default_factory=dict)

    def __post_init__(self):
        names = []
        for item in self.actions:
            name, _, spec = item.partition("=")
            name = name.strip()
            if name not in ACTION_TABLE:
                raise ValueError(f"unknown action {name!r}; known: {', '.join(ACTION_TABLE)}")
            if not ACTION_TABLE[name].ready and not self.allow_unready:
                raise ValueError(f"action {name!r} is not available yet (its pass is missing)")
            if spec:
                self.ranges[name] = parse_range(name, spec)
            names.append(name)
        self.actions = names
        self._params = [Param(f"{slot.name}:{spec.field}", i, spec,
                              spec.distribution(self.ranges.get(spec.name)))
                        for i, slot in enumerate(self.layers)
                        for spec in (ACTION_TABLE[n] for n in ACTION_TABLE if n in names)
                        if spec.applies(slot)]
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
        return {p.name: _nearest(p.distribution,
                                 getattr(policy.action(self.layers[p.layer].name), p.action.field))
                for p in self._params}

    def policy_from_params(self, params: dict) -> Policy:
        policy = Policy()
        for slot in self.layers:
            policy.layers[slot.name] = LayerAction()
        fields_by_layer: dict[str, dict] = {}
        for p in self._params:
            if p.name in params:
                fields_by_layer.setdefault(self.layers[p.layer].name, {})[p.action.field] = \
                    params[p.name]
        for name, values in fields_by_layer.items():
            policy.layers[name] = LayerAction(**values)
        return policy

    def seeds(self) -> list[Policy]:
        """Hand-made starting points a careful engineer would try first: the original,
        each action alone at a moderate value, and all of them together."""
        identity = self.policy_from_params({})
        identity.meta = {"baseline": "original"}
        seeds = [identity]
        specs = [ACTION_TABLE[n] for n in ACTION_TABLE if n in self.actions]
        for group in [[s] for s in specs] + ([specs] if len(specs) > 1 else []):
            params = {}
            for p in self._params:
                if p.action in group:
                    params[p.name] = _nearest(p.distribution, p.action.seed)
            seed = self.policy_from_params(params)
            seed.meta = {"baseline": "uniform " + " + ".join(f"{s.name}={s.seed:g}"
                                                             for s in group)}
            seeds.append(seed)
        return seeds

    # --- cost model ---------------------------------------------------------------
    @property
    def total_macs(self) -> int:
        return sum(slot.macs for slot in self.layers)

    def macs(self, params: dict) -> float:
        """Effective MACs (nonzero multiply-accumulates) of the policy `params`, from the
        layer table: each layer's MACs times its own factors and, for actions that remove
        channels, the factor of the layer whose output it reads."""
        own = [1.0] * len(self.layers)
        channels = [1.0] * len(self.layers)
        for p in self._params:
            if p.action.macs_scale is None or p.name not in params:
                continue
            factor = p.action.macs_scale(params[p.name])
            own[p.layer] *= factor
            if p.action.shrinks_consumers:
                channels[p.layer] *= factor
        index = {slot.name: i for i, slot in enumerate(self.layers)}

        def channel_factor(i: int, depth: int = 0) -> float:  # what layer i's readers see
            slot = self.layers[i]
            if slot.depthwise and slot.producer in index and depth < 64:
                return channels[i] * channel_factor(index[slot.producer], depth + 1)
            return channels[i]

        total = 0.0
        for i, slot in enumerate(self.layers):
            reads = channel_factor(index[slot.producer]) if slot.producer in index else 1.0
            total += slot.macs * own[i] * reads
        return total

    def macs_ratio(self, policy_or_params: Policy | dict) -> float:
        params = (self.params_of(policy_or_params) if isinstance(policy_or_params, Policy)
                  else policy_or_params)
        return self.macs(params) / self.total_macs if self.total_macs else 1.0

    def vector(self, params: dict) -> list[float]:
        """The policy as compression amounts in [0, 1], one per parameter."""
        return [p.compression(params.get(p.name, p.action.identity)) for p in self._params]


def parse_range(name: str, spec: str) -> FloatRange | tuple:
    """`0:0.8` or `0:0.8:0.1` (low:high[:step]) for numbers, `32/8` for choices."""
    base = ACTION_TABLE[name].values
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
