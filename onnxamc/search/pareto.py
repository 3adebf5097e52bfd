"""Pareto fronts and hypervolume, for multi-objective studies and for benchmarks.

Points are value vectors with one direction each ("maximize" / "minimize"); both
functions turn them into minimisation first, so one rule serves all objectives.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _as_minimized(points, directions: Sequence[str]) -> np.ndarray:
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.asarray(points, dtype=float).reshape(-1, len(directions)) * signs


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True if `a` is no worse than `b` everywhere and better somewhere."""
    x, y = _as_minimized([a, b], directions)
    return bool(np.all(x <= y) and np.any(x < y))


def pareto_indices(points, directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (duplicates keep their first occurrence)."""
    values = _as_minimized(points, directions)
    front = []
    for i, p in enumerate(values):
        dominated = np.any(np.all(values <= p, axis=1) & np.any(values < p, axis=1))
        duplicate = any(np.array_equal(values[j], p) for j in front)
        if not dominated and not duplicate:
            front.append(i)
    return front


def hypervolume(points, directions: Sequence[str], reference: Sequence[float]) -> float:
    """The volume dominated by `points` and bounded by `reference` (a point worse than
    all that matter in every direction). Exact, by recursive slicing: fine for the few
    hundred points of a search."""
    values = _as_minimized(points, directions)
    ref = _as_minimized([reference], directions)[0]
    values = values[np.all(values < ref, axis=1)]
    if len(values) == 0:
        return 0.0
    values = values[pareto_indices(values, ["minimize"] * len(ref))]
    return float(_slice_volume(values, ref))


def _slice_volume(values: np.ndarray, ref: np.ndarray) -> float:
    if values.shape[1] == 1:
        return float(ref[0] - values[:, 0].min())
    order = np.argsort(values[:, 0])
    values = values[order]
    volume = 0.0
    for i in range(len(values)):
        upper = values[i + 1, 0] if i + 1 < len(values) else ref[0]
        width = upper - values[i, 0]
        if width <= 0:
            continue
        rest = values[: i + 1, 1:]
        rest = rest[pareto_indices(rest, ["minimize"] * rest.shape[1])]
        volume += width * _slice_volume(rest, ref[1:])
    return volume
