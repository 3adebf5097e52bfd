"""The sensitivity table as data: the accuracy drop when one layer alone takes an action.

Measured by `onnxamc.api.sensitivity` (which runs models); here it is only read, written
and used: JSON in and out, a readable print, and a warm-start policy for the search
(the cheapest action per layer whose measured drop stays within a budget). Imports
policy and quant_actions only, so search/ can load it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxamc.errors import PolicyError
from onnxamc.policy import LayerAction, Policy

SCHEMA = "onnxamc.sensitivity/1"

# Candidate actions measured by default: label → LayerAction fields.
DEFAULT_ACTIONS: dict[str, dict[str, Any]] = {
    "fp16": {"bits": 16},
    "int8": {"bits": 8},
    "int8-per-tensor": {"bits": 8, "granularity": "per-tensor"},
    "int4": {"bits": 4},
    "int4-per-block32": {"bits": 4, "granularity": "per-block", "block_size": 32},
    "nbits4": {"bits": 4, "weight_only": True, "block_size": 32, "accuracy_level": 4},
    "mixed8/4": {"bits": 8, "mixed_low_bits_ratio": 0.5},
    "shared4": {"share_bits": 4},
}


@dataclass
class SensitivityTable:
    """drops[layer][action] = reference accuracy - accuracy with only that layer changed
    (None where the action does not fit the layer); bits[layer][action] = the layer's
    effective stored bits per weight under that action."""

    fingerprint: str | None
    reference_accuracy: float
    accuracy_kind: str
    actions: dict[str, dict[str, Any]]
    drops: dict[str, dict[str, float | None]] = field(default_factory=dict)
    bits: dict[str, dict[str, float | None]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def action(self, label: str) -> LayerAction:
        return LayerAction(**self.actions[label])

    def warm_start(self, max_drop_per_layer: float) -> Policy:
        """Per layer, the action with the fewest bits whose drop is within the budget
        (float when none is): a starting policy for the search."""
        policy = Policy(fingerprint=self.fingerprint)
        for layer, drops in self.drops.items():
            fitting = [(self.bits[layer][label], label) for label, drop in drops.items()
                       if drop is not None and drop <= max_drop_per_layer]
            if fitting:
                policy.layers[layer] = self.action(min(fitting)[1])
        return policy

    # --- JSON ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "fingerprint": self.fingerprint,
                "reference_accuracy": self.reference_accuracy,
                "accuracy_kind": self.accuracy_kind, "actions": self.actions,
                "drops": self.drops, "bits": self.bits, "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        from onnxamc.files import write_text

        return write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: Any) -> "SensitivityTable":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise PolicyError(f"not a sensitivity table (expected schema {SCHEMA!r})")
        try:
            table = cls(data.get("fingerprint"), float(data["reference_accuracy"]),
                        str(data["accuracy_kind"]), dict(data["actions"]),
                        dict(data["drops"]), dict(data.get("bits", {})), dict(data.get("meta", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"sensitivity table is missing or has a bad field: {exc}") from None
        for label, fields in table.actions.items():
            LayerAction.from_dict(fields, f"action {label}")
        return table

    @classmethod
    def load(cls, path: str | Path) -> "SensitivityTable":
        path = Path(path)
        if not path.exists():
            raise PolicyError(f"sensitivity table {str(path)!r} does not exist")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except PolicyError as exc:
            raise PolicyError(f"{path}: {exc}") from None

    # --- print --------------------------------------------------------------------
    def format(self) -> str:
        """Layers down, actions across: the quality drop in the metric's units (bits per
        weight)."""
        from onnxamc.metrics import PERCENT_METRICS, format_drop, format_quality

        scale = "points" if self.accuracy_kind in PERCENT_METRICS else "its units"
        labels = list(self.actions)
        head = ["layer", *labels]
        rows = []
        for layer, drops in self.drops.items():
            cells = [layer]
            for label in labels:
                drop, bits = drops.get(label), self.bits.get(layer, {}).get(label)
                shown = format_drop(self.accuracy_kind, drop).replace(" points", "")
                cells.append("-" if drop is None else f"{shown} ({bits:.1f}b)")
            rows.append(cells)
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths))) for r in [head] + rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"\n{self.accuracy_kind} drop in {scale} from the original's "
                     f"{format_quality(self.accuracy_kind, self.reference_accuracy)} when only "
                     "that layer takes the action (effective bits per weight in brackets); "
                     "- = does not apply")
        return "\n".join(lines)
