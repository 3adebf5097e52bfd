"""Agents: every one is an Optuna sampler, so all share the study, its storage and the
reports. `make_sampler(name, ...)` builds the one `--agent` names.

- tpe, random, qmc, cmaes, gp: Optuna's own (cmaes needs the `cmaes` package, gp and
  qmc need scipy, gp also torch);
- nsga2: NSGA-II with a large population, elitism and an archive of diverse seeds;
- ddpg: the AMC agent (actor-critic over the per-layer state, with the action wall);
- rl: an LSTM controller trained by REINFORCE (NAS style).
"""

from __future__ import annotations

import warnings

import optuna

from onnxamc.search.objective import AmcReward, Objective
from onnxamc.search.space import SearchSpace

AGENTS = ("tpe", "random", "qmc", "cmaes", "gp", "nsga2", "ddpg", "rl")


def startup_trials(n_trials: int | None) -> int:
    """Random trials before a model-based agent starts learning: about a fifth of the
    budget, between 4 and 10 (after the enqueued seeds)."""
    return max(4, min(10, (n_trials or 50) // 5))


def make_sampler(name: str, space: SearchSpace, objective: Objective, seed: int | None = 0,
                 n_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """The sampler for agent `name`, sized for a budget of `n_trials`."""
    startup = startup_trials(n_trials)
    with warnings.catch_warnings():  # QMC, GP options and NSGA-II strategies are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make(name, space, objective, seed, n_trials, startup)


def _make(name, space, objective, seed, n_trials, startup) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True,
                                          warn_independent_sampling=False)
    if name == "cmaes":
        _single(name, objective)
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ValueError("agent cmaes needs the `cmaes` package (pip install cmaes)") from None
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup,
                                            with_margin=True, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup,
                                         deterministic_objective=True,
                                         warn_independent_sampling=False)
    if name == "nsga2":
        from onnxamc.search.agents.nsga2 import make_nsga2

        return make_nsga2(space, seed, n_trials)
    if name == "ddpg":
        from onnxamc.search.agents.ddpg import DdpgSampler

        _single(name, objective)
        target = objective.target if isinstance(objective, AmcReward) and \
            objective.resource == "macs" else None
        return DdpgSampler(space, target=target, seed=seed, warmup=startup)
    if name == "rl":
        from onnxamc.search.agents.rl import ControllerSampler

        _single(name, objective)
        return ControllerSampler(space, seed=seed)
    raise ValueError(f"unknown agent {name!r}; use one of {', '.join(AGENTS)}")


def _single(name: str, objective: Objective) -> None:
    if len(objective.directions) > 1:
        raise ValueError(f"agent {name} optimises one value; use nsga2, tpe, gp, qmc or "
                         "random for a Pareto front")
