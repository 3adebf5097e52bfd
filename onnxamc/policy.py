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

JSON only, never pickle: a policy is data that users read, diff and hand-edit. The
fields of a LayerAction are those the actions declare (onnxamc.actions).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Mapping

from onnxamc.actions import ACTIONS, FIELDS, OWNER
from onnxamc.errors import PolicyError
from onnxamc.files import write_text

SCHEMA = "onnxamc.policy/1"
MAX_POLICY_BYTES = 16 * 2**20  # a policy of a 100k-layer model is far below this
UNIFORM = "uniform policy"  # the "layer" name of a uniform policy's action, in messages


def _is_identity(self) -> bool:
    return all(getattr(self, f.name) == f.default for f in FIELDS)


def _to_dict(self) -> dict[str, Any]:
    """Only the fields that differ from the identity, so files stay short."""
    return {f.name: getattr(self, f.name) for f in FIELDS if getattr(self, f.name) != f.default}


def _from_dict(cls, data: Any, layer: str):
    """Normalized (8.0 is 8; 8.5 for bits is refused) and checked; one-line PolicyError."""
    where = f"layer {layer!r}" if layer != UNIFORM else UNIFORM
    if not isinstance(data, dict):
        raise PolicyError(f"{where}: action must be an object, got {type(data).__name__}")
    values = {}
    for key, raw in data.items():
        spec = next((f for f in FIELDS if f.name == key), None)
        if spec is None:
            hint = difflib.get_close_matches(key, [f.name for f in FIELDS], 1)
            raise PolicyError(f"{where}: unknown field {key!r}"
                              + (f"; did you mean {hint[0]!r}?" if hint else
                                 f" (fields: {', '.join(f.name for f in FIELDS)})"))
        try:
            values[key] = spec.normalize(raw)
        except ValueError as exc:
            raise PolicyError(f"{where}: {key} {exc}, got {raw!r}") from None
    action = cls(**values)
    action.check(layer)
    return action


def _check(self, layer: str, op_type: str | None = None) -> None:
    """Field ranges; then each action's own checks (with op_type: whether the layer's op
    can take it)."""
    where = f"layer {layer!r}" if layer != UNIFORM else UNIFORM
    for spec in FIELDS:
        problem = spec.check(getattr(self, spec.name))
        if problem:
            raise PolicyError(f"{where}: {spec.name} {problem}")
    for action in ACTIONS:
        problem = action.check(self, op_type)
        if problem:
            raise PolicyError(f"{where}: {problem}")


LayerAction = make_dataclass(
    "LayerAction", [(f.name, f.kind, field(default=f.default)) for f in FIELDS], frozen=True,
    namespace={"__doc__": "What happens to one layer: one field per action field (see "
                          "onnxamc.actions); the defaults are the identity action.",
               "is_identity": property(_is_identity), "to_dict": _to_dict,
               "from_dict": classmethod(_from_dict), "check": _check})
LayerAction.__module__ = __name__


@dataclass
class Policy:
    """`{layer name → LayerAction}` plus the fingerprint of the model it was made for."""

    layers: dict[str, Any] = field(default_factory=dict)  # name -> LayerAction
    fingerprint: str | None = None
    model_name: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def action(self, layer: str):
        return self.layers.get(layer, LayerAction())

    @property
    def is_identity(self) -> bool:
        return all(a.is_identity for a in self.layers.values())

    def only(self, *names: str) -> "Policy":
        """The same policy with only the fields of the named actions (the rest identity):
        e.g. the float part of a policy for training, `only("prune", "low-rank", ...)`."""
        kept = {f.name for f in FIELDS if OWNER[f.name].name in names}
        layers = {n: LayerAction(**{k: v for k, v in a.to_dict().items() if k in kept})
                  for n, a in self.layers.items()}
        return Policy(layers, self.fingerprint, self.model_name, dict(self.meta))

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
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | Path) -> Path:
        return write_text(path, self.to_json())

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
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            raise PolicyError("policy 'meta' must be an object")
        actions = {name: LayerAction.from_dict(a, name) for name, a in layers.items()}
        return cls(actions, model.get("fingerprint"), model.get("name"), meta)

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
        if not path.is_file():
            raise PolicyError(f"policy file {str(path)!r} does not exist"
                              + (" (it is a directory)" if path.is_dir() else ""))
        if path.stat().st_size > MAX_POLICY_BYTES:
            raise PolicyError(f"{path}: {path.stat().st_size / 2**20:.0f} MB is not a policy "
                              f"(at most {MAX_POLICY_BYTES // 2**20} MB)")
        try:
            return cls.from_json(path.read_text())
        except UnicodeDecodeError:
            raise PolicyError(f"{path}: not a text (JSON) file") from None
        except PolicyError as exc:
            raise PolicyError(f"{path}: {exc}") from None

    # --- against a model ----------------------------------------------------------
    def validate(self, layer_ops: Mapping[str, str], fingerprint: str | None = None) -> None:
        """Check against a model's layer table (`{name: op_type}`) and fingerprint."""
        if fingerprint and self.fingerprint and fingerprint != self.fingerprint:
            raise PolicyError(f"policy was made for another model (fingerprint "
                              f"{self.fingerprint}, this model is {fingerprint})")
        for name, action in self.layers.items():
            if name not in layer_ops:
                close = difflib.get_close_matches(name, list(layer_ops), 3, 0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise PolicyError(f"layer {name!r} is not a compressible layer of this "
                                  f"model{hint}")
            action.check(name, layer_ops[name])


def uniform_policy(context, values: Mapping[str, Any]) -> Policy:
    """The same action on every layer that can take it (each field only where its action
    fits the layer: quantization skips unquantizable ops, pruning blocked groups...)."""
    checked = LayerAction.from_dict(dict(values), UNIFORM)
    policy = Policy(fingerprint=context.fingerprint, model_name=context.name)
    for layer in context.info.layers:
        fitting = {k: v for k, v in checked.to_dict().items()
                   if OWNER[k].fits(layer, context)}
        for action in {OWNER[k] for k in fitting}:  # e.g. bits=8: the int8 form that pays
            fitting = action.uniform_fields(fitting, layer)
        policy.layers[layer.name] = LayerAction(**fitting)
    return policy


def parse_uniform(spec: str) -> dict[str, Any]:
    """`sparsity=0.5,bits=8` → {"sparsity": 0.5, "bits": 8}, for baseline policies."""
    values: dict[str, Any] = {}
    known = {f.name: f for f in FIELDS}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or key not in known:
            hint = difflib.get_close_matches(key, list(known), 1)
            raise PolicyError(f"uniform policy term {part!r} is not FIELD=VALUE"
                              + (f"; did you mean {hint[0]}?" if hint else
                                 f" with FIELD in {', '.join(known)}"))
        values[key] = _parse_value(known[key], raw)
    if not values:
        raise PolicyError("uniform policy is empty; give e.g. sparsity=0.5,bits=8")
    return values


def _parse_value(spec, raw: str) -> Any:
    if spec.kind is str:
        return raw
    if spec.kind is bool:
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise PolicyError(f"uniform policy: {spec.name} needs true or false, got {raw!r}")
        return raw.lower() in ("1", "true", "yes")
    try:
        return float(raw) if spec.kind is float else int(float(raw)) \
            if float(raw).is_integer() else float(raw)
    except ValueError:
        raise PolicyError(f"uniform policy: {spec.name} needs a number, got {raw!r}") from None


__all__ = ["LayerAction", "Policy", "SCHEMA", "parse_uniform", "uniform_policy"]
