"""Several outputs, one number: a metric per output and the combination that drives the
search.

When every output has the same metric, the worst output counts (no output may be given
up for another); when they differ (units differ), the first one listed drives and the
others are reported beside it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from onnxamc.quality.base import ORIGINAL, Quality, Tally
from onnxamc.quality.builtin import OutputMetric


class Combined(Quality):
    def __init__(self, parts: Sequence[OutputMetric]):
        self.parts = list(parts)
        first = self.parts[0]
        self.name, self.higher_is_better = first.name, first.higher_is_better
        self.description, self.span, self.unit = first.description, first.span, first.unit
        self.same = all(p.name == first.name and p.higher_is_better == first.higher_is_better
                        for p in self.parts)
        self.against = first.against if all(p.against == first.against for p in self.parts) \
            else ORIGINAL

    @property
    def reads_reference(self) -> bool:
        return any(p.reads_reference for p in self.parts)

    def truth(self, reference, labels) -> tuple:
        return tuple(p.truth(reference, labels) for p in self.parts)

    def start(self) -> Tally:
        return _CombinedTally(self)

    def label(self) -> str:
        if self.same:
            names = ", ".join(repr(p.output.name) for p in self.parts)
            return f"{self.parts[0].label().split(' on ')[0]} on the worst of {names}"
        return (f"{self.parts[0].label()} (chooses); also reported: "
                + ", ".join(p.label() for p in self.parts[1:]))

    def error(self, value):
        return self.parts[0].error(value)

    def combine(self, values: Sequence[float]) -> float:
        if not self.same:
            return values[0]
        goodness = [self.goodness(v) for v in values]
        return values[int(np.argmin(goodness))]


class _CombinedTally(Tally):
    def __init__(self, combined: Combined):
        self.combined = combined
        self.tallies = [p.start() for p in combined.parts]

    def add(self, outputs, truth) -> None:
        for tally, part_truth in zip(self.tallies, truth):
            tally.add(outputs, part_truth)

    def value(self) -> float:
        return self.combined.combine([t.value() for t in self.tallies])

    def per_output(self) -> dict[str, dict[str, Any]]:
        return {p.output.name: {"metric": p.name, "quality": t.value()}
                for p, t in zip(self.combined.parts, self.tallies)}
