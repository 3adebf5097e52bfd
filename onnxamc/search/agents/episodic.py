"""The Optuna plumbing shared by the learning agents (DDPG, the RL controller).

Both plan a whole policy at a trial's first parameter (`propose`), answer every
`sample_independent` call from that plan, and learn from each finished trial once
(`learn`): in `after_trial` for their own trials, and in `before_trial` for finished
trials they have not seen (a resumed study, other workers on a shared storage).
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from onnxamc.search.space import SearchSpace


class EpisodeSampler(BaseSampler):
    violation_penalty = 1.0  # reward lost per unit of constraint violation

    def __init__(self, space: SearchSpace, seed: int | None):
        self.space = space
        self._random = RandomSampler(seed=seed)  # for parameters outside the space
        self._plans: dict[int, dict[str, Any]] = {}
        self._seen: set[int] = set()

    def propose(self) -> dict[str, Any]:
        """A value for every parameter of the space."""
        raise NotImplementedError

    def learn(self, study: optuna.Study, trial: FrozenTrial, reward: float) -> None:
        raise NotImplementedError

    @staticmethod
    def reward(study: optuna.Study, trial: FrozenTrial, values, penalty: float = 1.0) -> float:
        """The trial's value, larger is better, minus `penalty` × constraint violation."""
        sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
        return sign * float(values[0]) - penalty * sum(max(0.0, c)
                                                       for c in trial.constraints.values())

    # --- Optuna's sampler interface ----------------------------------------------
    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number not in self._seen and t.values is not None:
                self._learn_once(study, t, t.values)

    def sample_independent(self, study, trial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        param = self.space.param(param_name)
        if param is None or param.distribution != param_distribution:
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        if trial.number not in self._plans:
            self._plans[trial.number] = self.propose()
        return self._plans[trial.number][param_name]

    def after_trial(self, study, trial: FrozenTrial, state: TrialState, values) -> None:
        self._plans.pop(trial.number, None)
        if state == TrialState.COMPLETE and values is not None:
            self._learn_once(study, trial, values)

    def _learn_once(self, study: optuna.Study, trial: FrozenTrial, values) -> None:
        if trial.number in self._seen or not math.isfinite(values[0]):
            return
        self._seen.add(trial.number)
        self.learn(study, trial, self.reward(study, trial, values, self.violation_penalty))
