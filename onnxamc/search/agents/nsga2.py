"""NSGA-II with a kept archive of diverse policy seeds.

Optuna's NSGA-II already keeps the elites (the best fronts, crowding distance within
the last one). On a few dozen trials a population collapses onto one strategy (say
"quantize everything"); the archive keeps a handful of good but mutually distant
policies and puts them back among the parents every generation.
"""

from __future__ import annotations

import optuna
# Optuna's default elite selection; public as an argument, its class is not exported.
from optuna.samplers.nsgaii._elite_population_selection_strategy import (
    NSGAIIElitePopulationSelectionStrategy)

from onnxamc.search.space import SearchSpace


def population_for(n_trials: int | None) -> int:
    """A third of a short budget (at least two generations), Optuna's default 50 up to
    150 trials; beyond, a quarter of the budget up to 300: a large population of diverse
    policies that parallel workers evaluate at once ("seed shattering")."""
    if n_trials is None:
        return 50
    if n_trials <= 150:
        return max(6, min(50, n_trials // 3))
    return min(300, n_trials // 4)


class DiverseElites:
    """Elite selection = NSGA-II's elites, with the last places given to archive members:
    among the better half of all completed feasible trials, the ones farthest apart
    (greedy max-min L1 distance over the policy vectors)."""

    def __init__(self, space: SearchSpace, population_size: int, archive_size: int):
        self.space = space
        self.population_size = population_size
        self.archive_size = archive_size
        self._elites = NSGAIIElitePopulationSelectionStrategy(population_size=population_size)

    def __call__(self, study: optuna.Study, population: list) -> list:
        elites = self._elites(study, population)
        archive = self.archive(study, elites)
        chosen = {t.number for t in elites}
        extra = [t for t in archive if t.number not in chosen]
        keep = max(1, len(elites) - len(extra))
        return elites[:keep] + extra[: self.population_size - keep]

    def archive(self, study: optuna.Study, elites: list) -> list:
        trials = [t for t in study.get_trials(deepcopy=False,
                                              states=(optuna.trial.TrialState.COMPLETE,))
                  if t.values is not None and all(v <= 0 for v in t.constraints.values())]
        if not trials:
            return []
        signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]
        ranked = sorted(trials, key=lambda t: -sum(s * v for s, v in zip(signs, t.values)))
        pool = ranked[: max(self.archive_size, len(ranked) // 2)]
        vectors = {t.number: self.space.vector(t.params) for t in pool}
        picked = [pool[0]]
        while len(picked) < min(self.archive_size, len(pool)):
            best = max((t for t in pool if t not in picked),
                       key=lambda t: min(_l1(vectors[t.number], vectors[p.number]) for p in picked))
            picked.append(best)
        return picked


def _l1(a: list[float], b: list[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b))


def make_nsga2(space: SearchSpace, seed: int | None, n_trials: int | None,
               archive_size: int | None = None) -> optuna.samplers.NSGAIISampler:
    size = population_for(n_trials)
    archive = archive_size if archive_size is not None else max(2, size // 5)
    return optuna.samplers.NSGAIISampler(
        population_size=size, seed=seed,
        elite_population_selection_strategy=DiverseElites(space, size, archive))
