"""What every quality metric is: a name, a direction, what it scores against, and a
tally that takes the evaluation set batch by batch.

A metric never sees the whole evaluation set at once (a data set larger than memory
must work): the evaluator runs a model batch by batch, gives each batch's outputs and
that batch's truth to the metric's `Tally`, and asks the tally for one number at the
end. `truth(reference, labels)` is what a batch is scored against: the labels, or what
the original (reference) model output for that batch, reduced to what the metric needs
(an arg-max, a mask) so that the evaluator can keep it between candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

LABELS, ORIGINAL, USER = "labels", "original", "user"


@dataclass(frozen=True)
class OutputSpec:
    """One model output: its position, name, shape (None: dynamic) and the op that
    produces it (what the default metric is chosen from)."""

    index: int
    name: str
    shape: tuple[int | None, ...] = ()
    producer: str | None = None

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass
class Score:
    """One model's quality on one evaluation set."""

    value: float
    per_output: dict[str, dict[str, Any]]  # {output: {"metric": name, "quality": value}}
    samples: int = 0


class Tally:
    """Takes one batch at a time; `value()` is the metric over all batches seen."""

    def add(self, outputs: Sequence[np.ndarray], truth: Any) -> None:
        raise NotImplementedError

    def value(self) -> float:
        raise NotImplementedError

    def per_output(self) -> dict[str, dict[str, Any]]:
        return {}


class Quality:
    """A named metric with a direction.

    `against` says what it scores against (labels, the original's outputs, or whatever
    a user's function decides); `reads_reference` whether the truth of a batch needs
    the original's outputs; `span` the largest drop that means anything (1 for a share,
    2 for a cosine, None when unbounded) and `unit` the unit of its values."""

    name: str = "quality"
    higher_is_better: bool = True
    description: str = ""
    against: str = ORIGINAL
    span: float | None = 1.0
    unit: str = ""
    runs_session: bool = False  # a user metric that runs the model itself

    @property
    def reads_reference(self) -> bool:
        return self.against == ORIGINAL

    def truth(self, reference: Sequence[np.ndarray] | None, labels: np.ndarray | None) -> Any:
        raise NotImplementedError

    def start(self) -> Tally:
        raise NotImplementedError

    def label(self) -> str:
        """`cosine on 'sentence_embedding'`: the metric and what it reads."""
        return self.name

    def describe(self) -> str:
        """The metric, what it reads, against what, and its direction (for reports)."""
        against = {LABELS: "against the labels", ORIGINAL: "against the original's outputs",
                   USER: "the user's function"}[self.against]
        what = f"; {self.description}" if self.description else ""
        return (f"{self.label()} ({against}{what}; "
                f"{'higher' if self.higher_is_better else 'lower'} is better)")

    def headline(self) -> str:
        """What the commands print first: `fidelity: cosine on 'sentence_embedding'`."""
        kind = "fidelity" if self.against == ORIGINAL else "quality"
        return f"{kind}: {self.label()} ({'higher' if self.higher_is_better else 'lower'} " \
               "is better)"

    def error(self, value: float | None) -> float | None:
        """AMC's error term (1 - accuracy, or this metric's equivalent in [0, 1]); None
        where the metric has none."""
        return None

    def goodness(self, value: float) -> float:
        return value if self.higher_is_better else -value

    def drop(self, reference: float, value: float) -> float:
        """How much worse `value` is than `reference`, in the metric's units."""
        return self.goodness(reference) - self.goodness(value)

    def score_all(self, outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None = None,
                  labels: np.ndarray | None = None) -> float:
        """The metric over whole arrays held in memory (benchmarks and tests)."""
        tally = self.start()
        tally.add(list(outputs), self.truth(reference, labels))
        return tally.value()


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
