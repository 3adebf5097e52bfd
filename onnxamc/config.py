"""The settings of a run, typed, each default written once.

`RunConfig` holds what every command shares (data, calibration, target, measurement),
`SearchConfig` the search, `RecoveryConfig` training recovery. The API takes them as
keyword arguments (`api.search(model, trials=50, max_drop=0.005)`) and the CLI reads its
defaults from here, so the two cannot drift. Values are checked when a config is made:
a bad one is a one-line error before any work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from onnxamc.errors import DataError, OnnxAmcError

DEFAULT_DATA = "fashion-mnist"
DEFAULT_CALIBRATION = "fashion-mnist:calib"
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
IMPORTANCE = ("l1", "l2")
PRUNERS = ("halving", "hyperband", "none")  # search.fidelity.PRUNERS
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds in [0, 2**32)


class ConfigError(OnnxAmcError):
    """A setting out of its range, or one that does not exist."""


@dataclass(frozen=True)
class RunConfig:
    """What every command shares: data, calibration, where and how latency is measured."""

    data: Any = DEFAULT_DATA  # any form onnxamc.data.load_data reads
    calibration: Any = None  # None: the user's data, or the bundled calibration subset
    calibration_samples: int = 256
    calibration_method: str = "minmax"
    eval_samples: int | None = None  # evaluate on the first N samples only
    metric: Any = None  # a built-in name, OUTPUT=NAME,..., pkg.mod:function or a function
    preprocess: Any = None  # image folders: "resize=256,crop=224,mean=...,std=..."
    validation_split: float | None = None  # hold this share of `data` out of every choice
    select_data: Any = None  # choose on this data instead; `data` is then held out
    target: Any = None  # shipped target name, TOML path or Target; None: cpu-ort
    threads: int | None = None  # overrides the target's thread count
    runs: int = 50  # timed runs per model (per trial in a search)
    warmup: int = 10
    verify_runs: int = 200  # runs when the result is measured again, side by side
    seed: int | None = 0
    progress: bool = True
    channel_multiple: int = 8
    importance: str = "l1"
    reconstruct: bool = True  # refit pruned layers by least squares on calibration data
    max_spread: float = 0.05  # a latency ratio's interval wider than ±5%: measured again, flagged
    input_shapes: Any = None  # {input: dims} or ["NAME:D1,D2,..."]: dynamic dims fixed at load

    def __post_init__(self):
        for name, what in (("calibration_samples", "calibration data"),
                           ("eval_samples", "evaluation data")):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise DataError(f"{name.replace('_', '-')} must be an integer >= 1, got "
                                f"{value!r}: {what} of no samples measures nothing")
        if self.validation_split is not None and not 0 < self.validation_split < 1:
            raise ConfigError(f"validation-split must be a share in (0, 1), got "
                              f"{self.validation_split}")
        if self.validation_split is not None and self.select_data is not None:
            raise ConfigError("give validation-split or select-data, not both")
        _at_least(self, "threads", 1, optional=True)
        _at_least(self, "runs", 1)
        _at_least(self, "warmup", 0)
        _at_least(self, "verify_runs", 1)
        _at_least(self, "channel_multiple", 1)
        _one_of(self, "calibration_method", CALIBRATION_METHODS)
        _one_of(self, "importance", IMPORTANCE)
        if not (_is_number(self.max_spread) and 0 < self.max_spread < 1):
            raise ConfigError(f"max-spread must be a number in (0, 1), got {self.max_spread!r}")
        _at_least(self, "seed", 0, optional=True, high=MAX_SEED)


@dataclass(frozen=True)
class SearchConfig:
    """The search: its goal, budget, storage, actions and agent."""

    latency: float | None = None  # best quality within latency <= ratio x original
    max_drop: float | None = None  # lowest latency within this quality drop, metric units
    min_quality: float | None = None  # ... within this quality (snr: dB), instead of a drop
    trials: int = 30  # the study's total of evaluated trials
    timeout: float | None = None  # seconds for the whole run, re-measurement included
    storage: str | None = None  # journal file or database URL; default OUTPUT.journal
    study: str | None = None  # default: from the output name and the objective
    actions: tuple[str, ...] = ("prune", "quant")
    agent: str = "tpe"
    objective: str | None = None  # constrained | amc | amc-latency | weighted[:L] | pareto
    pick: str | None = None  # with pareto: drop<=D | latency<=R | size<=R | knee
    sensitivity: Any = None  # a sensitivity table: its policies are tried first
    predictor: bool = False  # skip candidates an accuracy predictor expects far worse
    warm_start: Any = None  # a policy tried first
    warm_start_from: Any = None  # the model warm_start was found for (transfer it)
    shaping: Any = None  # search.Shaping
    allow_emulated: bool = False  # search on an emulated board (its latency means nothing)
    pruner: str = "halving"  # multi-fidelity: halving | hyperband | none
    workers: int = 1  # processes on this machine evaluating the study's trials
    profile: bool = False  # time the phases of each trial (search --profile)

    def __post_init__(self):
        _at_least(self, "trials", 1)
        _at_least(self, "workers", 1)
        _one_of(self, "pruner", PRUNERS)
        _positive(self, "timeout", optional=True)
        if isinstance(self.actions, str):
            object.__setattr__(self, "actions", tuple(
                a.strip() for a in self.actions.split(",") if a.strip()))
        if not self.actions:
            raise ConfigError("actions: give at least one action to search")
        if self.min_quality is not None and (self.max_drop is not None
                                             or self.latency is not None):
            raise ConfigError("give one bound: min-quality, max-drop or latency")


@dataclass(frozen=True)
class RecoveryConfig:
    """Training recovery after compression (needs labelled training data)."""

    train_data: Any = None
    epochs: float = 1.0
    train_seconds: float | None = None
    lr: float | str = "auto"  # a rate, or "auto": short trainings choose it
    distill: float = 0.5  # weight of distillation from the original, 0..1
    feature_distill: float = 0.0  # per-layer output matching weight for every layer
    distill_trials: int = 0  # also search per-layer distillation rates (N trainings)
    trial_steps: int = 200  # steps of each short training
    qat: bool = True  # fake-quantize the layers that will be int8 while training

    def __post_init__(self):
        _positive(self, "epochs")
        _positive(self, "train_seconds", optional=True)
        if not (_is_number(self.feature_distill) and 0 <= self.feature_distill < math.inf):
            raise ConfigError(f"feature-distill must be a number >= 0, got "
                              f"{self.feature_distill!r}")
        if self.lr != "auto" and (isinstance(self.lr, (str, bool)) or not 0 < self.lr < 10):
            raise ConfigError(f"learning rate must be a positive number or 'auto', got "
                              f"{self.lr!r}")
        if not (_is_number(self.distill) and 0 <= self.distill <= 1):
            raise ConfigError(f"distill must be in [0, 1], got {self.distill!r}")
        _at_least(self, "distill_trials", 0)
        _at_least(self, "trial_steps", 1)
        if self.distill_trials and self.train_data is None:
            raise ConfigError("distill-trials needs train-data: labelled training data to "
                              "search the distillation rates on")


def split_options(options: dict[str, Any], *kinds: type) -> list:
    """Configs of the given kinds from keyword options; an unknown name is an error
    that lists the known ones."""
    known = {f.name: kind for kind in kinds for f in fields(kind)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        import difflib

        hint = difflib.get_close_matches(unknown[0], list(known), 1)
        raise ConfigError(f"unknown setting {unknown[0]!r}"
                          + (f"; did you mean {hint[0]!r}?" if hint else
                             f" (settings: {', '.join(sorted(known))})"))
    return [kind(**{k: v for k, v in options.items() if known[k] is kind}) for kind in kinds]


def default_output(model: Any) -> Path:
    """MODEL-compressed.onnx in the current folder (resnet20 for the bundled model)."""
    stem = Path(model).stem if isinstance(model, (str, Path)) else "resnet20"
    return Path(f"{stem}-compressed.onnx")


def _at_least(config, name: str, low: int, optional: bool = False,
              high: int | None = None) -> None:
    value = getattr(config, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        within = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name.replace('_', '-')} must be an integer {within}, got {value!r}")


def _positive(config, name: str, optional: bool = False) -> None:
    value = getattr(config, name)
    if value is None and optional:
        return
    if not (_is_number(value) and 0 < value < math.inf):
        raise ConfigError(f"{name.replace('_', '-')} must be a positive number, got {value!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _one_of(config, name: str, allowed: tuple[str, ...]) -> None:
    if getattr(config, name) not in allowed:
        raise ConfigError(f"{name.replace('_', '-')} must be one of {', '.join(allowed)}, "
                          f"got {getattr(config, name)!r}")
