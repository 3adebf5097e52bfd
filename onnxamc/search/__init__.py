"""Search: Optuna studies over per-layer policies, scored by an evaluator callable.

Knows Optuna, Policy and the layer table as data; never edits or runs a model.
"""

from onnxamc.search.objective import AccuracyBound, LatencyBudget, Objective, make_objective
from onnxamc.search.space import ACTIONS, LayerSlot, SearchSpace
from onnxamc.search.storage import open_storage
from onnxamc.search.study import SearchResult, best_trial, open_study, run_search

__all__ = ["ACTIONS", "AccuracyBound", "LatencyBudget", "LayerSlot", "Objective",
           "SearchResult", "SearchSpace", "best_trial", "make_objective", "open_storage",
           "open_study", "run_search"]
