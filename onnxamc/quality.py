"""Quality metrics: how good a model's outputs are, by name, with a direction.

A metric scores the outputs of a model over a whole evaluation set against what it is
given as truth: the labels where the data has them, else the reference (original)
model's own outputs (fidelity). Built in: `top1` (with labels) and `agreement` (the
share of samples whose arg-max over the last axis equals the reference's: fidelity for
classifiers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from onnxamc.errors import DataError


@dataclass(frozen=True)
class Quality:
    """A named metric. `score(outputs, truth)` is one number; `truth(reference outputs,
    labels)` what candidates are scored against (computed once per evaluation set)."""

    name: str
    higher_is_better: bool = True
    description: str = ""

    def truth(self, reference: Sequence[np.ndarray], labels: np.ndarray | None) -> Any:
        raise NotImplementedError

    def score(self, outputs: Sequence[np.ndarray], truth: Any) -> float:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} ({self.description}; {'higher' if self.higher_is_better else 'lower'}" \
               " is better)"


class Top1(Quality):
    def __init__(self):
        super().__init__("top1", True, "top-1 accuracy against the labels")

    def truth(self, reference, labels):
        if labels is None:
            raise DataError("top1 needs labels in the data")
        return labels

    def score(self, outputs, truth) -> float:
        return _argmax_agreement(outputs[0], truth)


class Agreement(Quality):
    def __init__(self):
        super().__init__("agreement", True,
                         "share of samples whose arg-max equals the original model's")

    def truth(self, reference, labels):
        return reference[0].reshape(len(reference[0]), -1).argmax(axis=1)

    def score(self, outputs, truth) -> float:
        return _argmax_agreement(outputs[0], truth)


def _argmax_agreement(outputs: np.ndarray, targets: np.ndarray) -> float:
    predicted = outputs.reshape(len(outputs), -1).argmax(axis=1)
    return float(np.mean(predicted == targets))


def default_quality(labels: np.ndarray | None) -> Quality:
    """top1 with labels; without them, fidelity to the original."""
    return Top1() if labels is not None else Agreement()
