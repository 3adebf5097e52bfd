"""Search: Optuna studies over per-layer policies, scored by an evaluator callable.

Knows Optuna, Policy, the action declarations and the layer table and cost model as
data; never edits or runs a model.
"""

from onnxamc.search.agents import AGENTS, make_sampler
from onnxamc.search.objective import (OBJECTIVES, AccuracyBound, AmcReward, LatencyBudget,
                                      MultiObjective, Objective, Shaping, Weighted,
                                      make_objective, parse_objective)
from onnxamc.search.results import best_trial, chosen_trial, pareto_front
from onnxamc.search.space import DEFAULT_ACTIONS, LayerSlot, SearchSpace
from onnxamc.search.storage import open_storage
from onnxamc.search.study import SearchResult, open_study, run_search

__all__ = ["AGENTS", "AccuracyBound", "AmcReward", "DEFAULT_ACTIONS", "LatencyBudget",
           "LayerSlot", "MultiObjective", "OBJECTIVES", "Objective", "SearchResult",
           "SearchSpace", "Shaping", "Weighted", "best_trial", "chosen_trial",
           "make_objective", "make_sampler", "open_storage", "open_study", "pareto_front",
           "parse_objective", "run_search"]
