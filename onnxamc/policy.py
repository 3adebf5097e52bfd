"""Policy: one compression action per layer, as JSON, validated against the model.

A policy file looks like this (layers left out keep the identity action):

    {
      "schema": "onnxamc.policy/1",
      "model": {"fingerprint": "3f2a...", "name": "resnet20.onnx"},
      "layers": {
        "layers.0.conv1": {"sparsity": 0.5, "bits": 8},
        "fc": {"bits": 32}
      }
    }

JSON only, never pickle: a policy is data that users read, diff and hand-edit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from onnxamc.errors import PolicyError
from onnxamc.quant_actions import QUANT_FIELDS, check_quant_fields

SCHEMA = "onnxamc.policy/1"
FLOAT_BITS = 32
SUPPORTED_BITS = (32, 16, 8, 4)  # 16 = fp16 weights; 8 and 4 are integer
QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")
LOW_RANK_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class LayerAction:
    """What happens to one layer. The defaults are the identity action."""

    sparsity: float = 0.0  # fraction of weights zeroed by magnitude (fine-grained)
    bits: int = FLOAT_BITS  # 32 keeps float; 16 fp16 weights; 8/4 integer weights (QDQ)
    keep: float = 1.0  # structured: share of output channels kept (its channel group's)
    rank: float = 1.0  # low-rank factorization: kept share of the full rank
    remove: bool = False  # replace the residual block this layer opens by the identity
    # Quantization detail (see onnxamc.quant_actions for what each combination means).
    granularity: str = "per-channel"  # "per-channel" | "per-tensor" | "per-block"
    block_size: int = 0  # per-block and weight_only: weights per scale (0 = default)
    weight_only: bool = False  # MatMul/Gemm through MatMulNBits, float activations
    accuracy_level: int = 0  # MatMulNBits compute accuracy (0 = onnxruntime default, 1-4)
    dynamic: bool = False  # int8 with activations quantized at run time, no calibration
    mixed_low_bits_ratio: float = 0.0  # share of output channels at 4 bits, the rest at `bits`
    share_bits: int = 0  # weight sharing: k-means into 2**share_bits centroids (0 = off)
    distill: float = 0.0  # feature-distillation weight of this layer's output in training

    @property
    def is_identity(self) -> bool:
        return self == LayerAction()

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that differ from the identity, so files stay short."""
        default = LayerAction()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}

    @classmethod
    def from_dict(cls, data: Any, layer: str) -> "LayerAction":
        if not isinstance(data, dict):
            raise PolicyError(f"layer {layer!r}: action must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise PolicyError(f"layer {layer!r}: unknown field {key!r} "
                                  f"(fields: {', '.join(sorted(known))})")
        action = cls(**data)
        action.check(layer)
        return action

    def check(self, layer: str, op_type: str | None = None) -> None:
        """Range checks; with op_type, also whether the action fits that kind of layer."""
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)) \
                or not 0.0 <= self.sparsity < 1.0:
            raise PolicyError(f"layer {layer!r}: sparsity must be a number in [0, 1), "
                              f"got {self.sparsity!r}")
        if isinstance(self.bits, bool) or self.bits not in SUPPORTED_BITS:
            raise PolicyError(f"layer {layer!r}: bits must be one of "
                              f"{', '.join(map(str, SUPPORTED_BITS))}, got {self.bits!r}")
        for name in ("keep", "rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0.0 < value <= 1.0:
                raise PolicyError(f"layer {layer!r}: {name} must be a number in (0, 1], "
                                  f"got {value!r}")
        if not isinstance(self.remove, bool):
            raise PolicyError(f"layer {layer!r}: remove must be true or false, got "
                              f"{self.remove!r}")
        if isinstance(self.distill, bool) or not isinstance(self.distill, (int, float)) \
                or not 0.0 <= self.distill <= 100.0:
            raise PolicyError(f"layer {layer!r}: distill must be a weight in [0, 100], "
                              f"got {self.distill!r}")
        if op_type is not None and self.rank < 1.0 and op_type not in LOW_RANK_OPS:
            raise PolicyError(f"layer {layer!r}: rank={self.rank} is not supported for "
                              f"{op_type} layers (low-rank: {', '.join(LOW_RANK_OPS)})")
        if op_type is not None and self.bits != FLOAT_BITS and op_type not in QUANTIZABLE_OPS:
            raise PolicyError(f"layer {layer!r}: bits={self.bits} is not supported for "
                              f"{op_type} layers (quantizable: {', '.join(QUANTIZABLE_OPS)})")
        problem = check_quant_fields(self, op_type)
        if problem:
            raise PolicyError(f"layer {layer!r}: {problem}")


@dataclass
class Policy:
    """`{layer name → LayerAction}` plus the fingerprint of the model it was made for."""

    layers: dict[str, LayerAction] = field(default_factory=dict)
    fingerprint: str | None = None
    model_name: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def action(self, layer: str) -> LayerAction:
        return self.layers.get(layer, LayerAction())

    @property
    def is_identity(self) -> bool:
        return all(a.is_identity for a in self.layers.values())

    def sparsities(self) -> dict[str, float]:
        return {n: a.sparsity for n, a in self.layers.items() if a.sparsity > 0}

    def keeps(self) -> dict[str, float]:
        return {n: a.keep for n, a in self.layers.items() if a.keep < 1.0}

    def ranks(self) -> dict[str, float]:
        return {n: a.rank for n, a in self.layers.items() if a.rank < 1.0}

    def removals(self) -> list[str]:
        return [n for n, a in self.layers.items() if a.remove]

    def layers_with_bits(self, bits: int) -> list[str]:
        return [n for n, a in self.layers.items() if a.bits == bits]

    @classmethod
    def uniform(cls, layer_names: Iterable[str], op_types: dict[str, str] | None = None,
                **values: Any) -> "Policy":
        """The same action on every layer that can take it (quantization skips layers
        whose op cannot be quantized, as a baseline would)."""
        policy = cls()
        for name in layer_names:
            fields_for_layer = dict(values)
            if op_types and op_types.get(name) not in QUANTIZABLE_OPS:
                for key in ("bits", *QUANT_FIELDS):
                    fields_for_layer.pop(key, None)
            policy.layers[name] = LayerAction.from_dict(fields_for_layer, name)
        return policy

    # --- JSON ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA,
                               "model": {"fingerprint": self.fingerprint, "name": self.model_name},
                               "layers": {n: a.to_dict() for n, a in self.layers.items()
                                          if not a.is_identity}}
        if self.meta:
            out["meta"] = self.meta
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, data: Any) -> "Policy":
        if not isinstance(data, dict):
            raise PolicyError("policy must be a JSON object")
        schema = data.get("schema")
        if schema != SCHEMA:
            raise PolicyError(f"unsupported policy schema {schema!r} (expected {SCHEMA!r})")
        unknown = set(data) - {"schema", "model", "layers", "meta"}
        if unknown:
            raise PolicyError(f"unknown top-level policy fields: {', '.join(sorted(unknown))}")
        layers = data.get("layers", {})
        if not isinstance(layers, dict):
            raise PolicyError("policy 'layers' must be an object mapping layer names to actions")
        model = data.get("model") or {}
        if not isinstance(model, dict):
            raise PolicyError("policy 'model' must be an object with 'fingerprint' and 'name'")
        try:
            actions = {name: LayerAction.from_dict(a, name) for name, a in layers.items()}
        except TypeError as exc:  # e.g. a field given twice by a hand-made dict
            raise PolicyError(f"invalid policy: {exc}") from None
        return cls(actions, model.get("fingerprint"), model.get("name"), data.get("meta") or {})

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy is not valid JSON: {exc.msg} at line {exc.lineno} "
                              f"column {exc.colno}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        path = Path(path)
        if not path.exists():
            raise PolicyError(f"policy file {str(path)!r} does not exist")
        try:
            return cls.from_json(path.read_text())
        except PolicyError as exc:
            raise PolicyError(f"{path}: {exc}") from None

    # --- against a model ----------------------------------------------------------
    def validate(self, layer_ops: dict[str, str], fingerprint: str | None = None) -> None:
        """Check against a model's layer table (`{name: op_type}`) and fingerprint."""
        if fingerprint and self.fingerprint and fingerprint != self.fingerprint:
            raise PolicyError(f"policy was made for another model (fingerprint "
                              f"{self.fingerprint}, this model is {fingerprint})")
        for name, action in self.layers.items():
            if name not in layer_ops:
                close = [n for n in layer_ops if name in n or n in name][:3]
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise PolicyError(f"layer {name!r} is not a compressible layer of this "
                                  f"model{hint}")
            action.check(name, layer_ops[name])


def parse_uniform(spec: str) -> dict[str, Any]:
    """`sparsity=0.5,bits=8` → {"sparsity": 0.5, "bits": 8}, for baseline policies."""
    values: dict[str, Any] = {}
    known = {f.name: f.type for f in fields(LayerAction)}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise PolicyError(f"uniform policy term {part!r} is not FIELD=VALUE with FIELD in "
                              f"{', '.join(known)}")
        try:
            kind = known[key] if isinstance(known[key], str) else known[key].__name__
            values[key] = {"int": int, "str": str.strip, "bool": _parse_bool}.get(kind, float)(raw)
        except ValueError:
            raise PolicyError(f"uniform policy: {key} needs a number, got {raw!r}") from None
    if not values:
        raise PolicyError("uniform policy is empty; give e.g. sparsity=0.5,bits=8")
    return values


def _parse_bool(raw: str) -> bool:
    if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(raw)
    return raw.strip().lower() in ("1", "true", "yes")
