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

SCHEMA = "onnxamc.policy/1"
FLOAT_BITS = 32
SUPPORTED_BITS = (32, 8)
QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class LayerAction:
    """What happens to one layer. The defaults are the identity action."""

    sparsity: float = 0.0  # fraction of weights zeroed by magnitude (fine-grained)
    bits: int = FLOAT_BITS  # 32 keeps float; 8 is int8 per-channel QDQ (u8 activations)
    keep: float = 1.0  # structured: share of output channels kept (pass: issue 3)

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
        if op_type is not None and self.bits != FLOAT_BITS and op_type not in QUANTIZABLE_OPS:
            raise PolicyError(f"layer {layer!r}: bits={self.bits} is not supported for "
                              f"{op_type} layers (quantizable: {', '.join(QUANTIZABLE_OPS)})")


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
                fields_for_layer.pop("bits", None)
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
            values[key] = int(raw) if known[key] in ("int", int) else float(raw)
        except ValueError:
            raise PolicyError(f"uniform policy: {key} needs a number, got {raw!r}") from None
    if not values:
        raise PolicyError("uniform policy is empty; give e.g. sparsity=0.5,bits=8")
    return values
