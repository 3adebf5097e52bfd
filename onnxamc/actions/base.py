"""What an action is: the policy fields it owns, how they are checked, how the search
proposes them and which pass carries them out.

An action is one class (one file under actions/). Adding an action is writing that
file and listing it in `actions/__init__.py`: the policy's LayerAction, its validation,
the search space, the CLI help and the README's field table all read the registry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping

import numpy as np

if TYPE_CHECKING:  # the passes' world; imported where an action runs
    import onnx

    from onnxamc.graph.context import ModelContext
    from onnxamc.graph.layers import Layer

CalibrationFeeds = Callable[[], Iterable[dict[str, np.ndarray]]]


@dataclass(frozen=True)
class Field:
    """One policy field: its type, identity default, valid values and what it does."""

    name: str
    kind: type  # float | int | bool | str
    default: Any
    values: str  # the valid values, for people: "(0, 1]"
    help: str  # what the field does, one sentence
    valid: Callable[[Any], bool] = lambda v: True
    expect: str = ""  # the valid values in an error message ("one of 32, 16, 8, 4")

    @property
    def expected(self) -> str:
        return self.expect or self.values

    def normalize(self, value: Any) -> Any:
        """The value in the field's type; ValueError (with a reason) if it has none:
        8.0 is the integer 8, but 8.5 and "8" are refused, and so is true for a number."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise ValueError(f"must be {self.expected}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or (self.kind is int and float(value) != int(value)):
            raise ValueError(f"must be {self.expected}")
        return int(value) if self.kind is int else float(value)

    def check(self, value: Any) -> str | None:
        """Why `value` (already normalized) is not valid, or None."""
        return None if self.valid(value) else f"must be {self.expected}, got {value!r}"


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    step: float | None = None


@dataclass(frozen=True)
class SearchSpec:
    """How the search proposes an action on a layer: one parameter on `field`.

    `identity` leaves the layer as it is, `seed` is a moderate value for the uniform
    starting policies; agents that think in "how much to compress" map [0, 1] onto the
    segment from the identity to the most compressed value. `cost` says how the value
    enters the cost model: "keep" (a channel keep ratio, for the whole group), "factor"
    (multiplies the layer's own MACs by `macs_factor(value)`) or None (MACs unchanged)."""

    field: str
    values: FloatRange | tuple
    identity: Any
    seed: Any
    cost: str | None = None
    macs_factor: Callable[[Any], float] | None = None
    param: str = ""  # the parameter's name after `layer:` (default: the field's)

    @property
    def name(self) -> str:
        return self.param or self.field


class Action:
    """Base class: subclasses set the class attributes and override what they need."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line: what the action does to a layer
    fields: ClassVar[tuple[Field, ...]]
    search: ClassVar[SearchSpec | None] = None

    def is_active(self, action: Any) -> bool:
        """Whether a LayerAction asks anything of this action (a field off its default)."""
        return any(getattr(action, f.name) != f.default for f in self.fields)

    def check(self, action: Any, op_type: str | None) -> str | None:
        """Why this action's fields do not fit together or fit the layer's op, or None.
        Field ranges are checked before this is called."""
        return None

    def fits(self, layer: "Layer", context: "ModelContext") -> bool:
        """Whether the layer can take this action (uniform policies skip those that
        cannot; the search offers it only where it fits)."""
        return True

    def uniform_fields(self, fields: dict[str, Any], layer: "Layer") -> dict[str, Any]:
        """The fields a uniform policy gives this layer (default: as asked)."""
        return fields

    def unfit_reason(self, layer: "Layer", context: "ModelContext") -> str:
        """Why the layer cannot take this action (for the one-line error)."""
        return f"{self.name} does not apply to {layer.op_type} layers here"

    def searched_on(self, layer: "Layer", context: "ModelContext") -> bool:
        """Where the search proposes it (default: wherever it fits)."""
        return self.fits(layer, context)

    def search_choices(self, layer: "Layer", runtime: str) -> tuple | None:
        """The values the search offers on this layer (None: the spec's values)."""
        return None

    def decode(self, value: Any) -> dict[str, Any]:
        """The LayerAction fields a searched value stands for."""
        return {} if value == self.search.identity else {self.search.field: value}

    def encode(self, action: Any, choices: tuple) -> Any:
        """The searched value that stands for a LayerAction's fields of this action."""
        return getattr(action, self.search.field)

    def apply(self, context: "ModelContext", layers: Mapping[str, Any],
              job: "PassJob") -> "onnx.ModelProto":
        """The model with this action applied to `layers` ({name: LayerAction})."""
        return context.model


@dataclass
class PassCache:
    """What passes may keep between candidates of one model and one calibration set (a
    search builds hundreds): the original's side of the reconstruction, and a folder of
    activation ranges by float model (quantize_static's calibration cache)."""

    model: Any = None  # the ModelProto the reference rows belong to
    reference_rows: Any = None  # passes.reconstruct.ReferenceRows
    ranges_dir: str | None = None

    def rows_for(self, model, calibration) -> Any:
        """ReferenceRows for `model` (kept if it is the cache's model), or None."""
        if model is not self.model:
            return None
        if self.reference_rows is None:
            from onnxamc.passes.reconstruct import ReferenceRows

            self.reference_rows = ReferenceRows(model, calibration)
        return self.reference_rows


@dataclass(frozen=True)
class PassJob:
    """What the passes of one `apply_policy` share besides the model and the policy."""

    calibration: CalibrationFeeds | None = None  # called when calibration data is needed
    calibration_method: str = "minmax"
    reconstruct: bool = False  # refit pruned layers by least squares on calibration data
    channel_multiple: int = 8
    importance: str = "l1"
    runtime: str = "onnxruntime"  # whose fusions place static int8 (passes/quant_patterns)
    # MACs per converted element an int8 region must do: 0 quantizes every layer asked,
    # None takes the runtime's bar (the latency guard's candidates)
    int8_threshold: float | None = 0.0
    cache: PassCache | None = None

    def feeds(self, why: str) -> Iterable[dict[str, np.ndarray]]:
        from onnxamc.errors import PolicyError

        if self.calibration is None:
            raise PolicyError(f"{why} needs calibration data (--calibration)")
        return self.calibration()


def in_range(low: float, high: float, low_open: bool = False, high_open: bool = False):
    """A range check for Field.valid."""
    def valid(v) -> bool:
        return (low < v if low_open else low <= v) and (v < high if high_open else v <= high)
    return valid
