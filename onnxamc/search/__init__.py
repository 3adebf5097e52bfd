"""Search: Optuna studies over per-layer policies, scored by an evaluator callable.

Knows Optuna, Policy and the layer table as data; never edits or runs a model.
"""

from onnxamc.search.agents import AGENTS, make_sampler
from onnxamc.search.objective import (OBJECTIVES, AccuracyBound, AmcReward, LatencyBudget,
                                      MultiObjective, Objective, Shaping, Weighted,
                                      make_objective, parse_objective)
from onnxamc.search.space import (ACTION_TABLE, ACTIONS, ActionSpec, LayerSlot, SearchSpace,
                                  slots_from_layers)
from onnxamc.search.storage import open_storage
from onnxamc.search.study import SearchResult, best_trial, open_study, run_search

__all__ = ["ACTIONS", "ACTION_TABLE", "AGENTS", "AccuracyBound", "ActionSpec", "AmcReward",
           "LatencyBudget", "LayerSlot", "MultiObjective", "OBJECTIVES", "Objective",
           "SearchResult", "SearchSpace", "Shaping", "Weighted", "best_trial", "make_objective",
           "make_sampler", "open_storage", "open_study", "parse_objective", "run_search",
           "slots_from_layers"]
