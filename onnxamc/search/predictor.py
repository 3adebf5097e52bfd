"""An accuracy predictor that skips candidates before they are evaluated.

A ridge regression from the policy (each parameter's compression amount in [0, 1],
and its square) to the measured accuracy, refit whenever new trials finished. A
candidate predicted to lose more than `margin` below the least accurate of the good
trials (the best quarter by objective) is skipped: the trial is pruned, costs no
evaluation and does not use the budget. A share `audit` of would-be skips is evaluated
anyway, which tells how often the predictor was wrong (the candidate was in fact
accurate enough). Everything it decides is stored on the trials, so the report also
covers earlier runs of the study.
"""

from __future__ import annotations

import numpy as np
import optuna

from onnxamc.metrics import Metrics
from onnxamc.search.objective import goodness

from onnxamc.search.space import SearchSpace

COMPLETE = optuna.trial.TrialState.COMPLETE


class AccuracyPredictor:
    def __init__(self, space: SearchSpace, margin: float = 0.05, min_trials: int = 10,
                 audit: float = 0.2, ridge: float = 1e-2, seed: int | None = 0):
        self.space, self.margin, self.min_trials = space, margin, min_trials
        self.audit, self.ridge = audit, ridge
        self._rng = np.random.RandomState(seed)
        self._weights: np.ndarray | None = None
        self._fitted_on = -1
        self._threshold = -np.inf

    @staticmethod
    def _design(vectors) -> np.ndarray:
        x = np.asarray(vectors, dtype=float).reshape(len(vectors), -1)
        return np.hstack([np.ones((len(x), 1)), x, x ** 2])

    def _measured(self, study: optuna.Study) -> list:
        return [t for t in study.get_trials(deepcopy=False, states=(COMPLETE,))
                if "metrics" in t.user_attrs and "cached_from" not in t.user_attrs
                and _goodness(t) is not None]

    def fit(self, study: optuna.Study) -> bool:
        trials = self._measured(study)
        if len(trials) < self.min_trials:
            return False
        if len(trials) != self._fitted_on:
            x = self._design([self.space.vector(t.params) for t in trials])
            y = np.array([_goodness(t) for t in trials])
            a = x.T @ x + self.ridge * np.eye(x.shape[1])
            self._weights = np.linalg.solve(a, x.T @ y)
            self._fitted_on = len(trials)
            self._threshold = self._good_accuracy(study, trials) - self.margin
        return True

    def _good_accuracy(self, study: optuna.Study, trials: list) -> float:
        sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
        feasible = [t for t in trials if all(v <= 0 for v in t.constraints.values())] or trials
        ranked = sorted(feasible, key=lambda t: -sign * t.values[0])
        good = ranked[: max(3, len(ranked) // 4)]
        return min(_goodness(t) for t in good)

    def predict(self, vector) -> float:
        return float((self._design([vector]) @ self._weights)[0])

    def should_skip(self, study: optuna.Study, trial: optuna.Trial, vector) -> bool:
        if not self.fit(study):
            return False
        predicted = self.predict(vector)
        if predicted >= self._threshold:
            return False
        note = {"predicted": predicted, "threshold": self._threshold}
        if self._rng.uniform() < self.audit:
            trial.set_user_attr("audit", note)  # evaluate it anyway, to check the call
            return False
        trial.set_user_attr("skipped", note)
        return True

    def record(self, study: optuna.Study, trial: optuna.Trial, vector, metrics) -> None:
        """After an evaluation: the prediction error, and whether an audited skip would
        have been wrong."""
        if self._weights is None or metrics.quality is None:
            return
        trial.set_user_attr("predicted_accuracy", self.predict(vector))
        audit = trial.user_attrs.get("audit")
        if audit is not None:
            trial.set_user_attr("audit_wrong", goodness(metrics) >= audit["threshold"])

    @staticmethod
    def report(study: optuna.Study) -> dict:
        """Evaluations saved, audits and how often a skip would have been wrong."""
        trials = study.get_trials(deepcopy=False)
        skipped = sum("skipped" in t.user_attrs for t in trials)
        audits = [t for t in trials if "audit_wrong" in t.user_attrs]
        wrong = sum(bool(t.user_attrs["audit_wrong"]) for t in audits)
        errors = [abs(t.user_attrs["predicted_accuracy"] - _goodness(t))
                  for t in trials if "predicted_accuracy" in t.user_attrs]
        return {"evaluations_saved": skipped, "audited": len(audits), "wrong": wrong,
                "wrong_rate": wrong / len(audits) if audits else None,
                "mean_abs_error": float(np.mean(errors)) if errors else None}


def _goodness(trial) -> float | None:
    """The trial's quality where higher is better (None when it has none)."""
    metrics = Metrics.from_dict(trial.user_attrs["metrics"])
    return None if metrics.quality is None else goodness(metrics)
