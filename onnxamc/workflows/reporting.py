"""The report of a stored study, made again from the storage alone: the policy charted
is the one the search chose (search.results), never one that broke the objective."""

from __future__ import annotations

from pathlib import Path

import optuna

from onnxamc.errors import SearchError
from onnxamc.metrics import Metrics
from onnxamc.policy import Policy
from onnxamc.search import open_storage, parse_objective
from onnxamc.search.results import chosen_trial
from onnxamc.search.space import SearchSpace
from onnxamc.workflows import preflight
from onnxamc.workflows.run import Run
from onnxamc.workflows.searching import search_slots


def report(storage: str | Path, directory: str | Path, run: Run, study: str | None = None,
           policy: Policy | None = None):
    """Pareto plot, history, policy chart and importances of a stored study."""
    from onnxamc.report import write_report

    preflight.check_report_folder(directory)
    preflight.require("the report", ["matplotlib"], "report")
    if "://" not in str(storage) and not Path(storage).is_file():
        raise SearchError(f"no study storage at {str(storage)!r}")
    store = open_storage(storage, create=False)
    names = [s.study_name for s in optuna.get_all_study_summaries(store)
             if s.user_attrs.get("kind") != "recovery"]  # the trainings that chose lr, distill
    if study is None:
        if len(names) != 1:
            raise SearchError(f"{storage} holds {len(names)} studies ({', '.join(names)}): "
                              "give --study")
        study = names[0]
    if study not in names:
        raise SearchError(f"no study {study!r} in {storage} (studies: {', '.join(names) or 'none'})")
    loaded = optuna.load_study(study_name=study, storage=store)
    if loaded.user_attrs.get("fingerprint") not in (None, run.context.fingerprint):
        raise SearchError(f"study {study!r} was made for another model than "
                          f"{run.context.name}: give the searched model with --model")
    chosen = chosen_trial(loaded, _objective(loaded))
    before_after = None
    if policy is None and chosen is not None:
        space = SearchSpace(search_slots(run.context), _actions(chosen[0]))
        policy = space.policy_from_params(chosen[0].params)
        recorded = loaded.user_attrs.get("chosen_trial")
        if recorded is not None:
            before_after = {"chosen": Metrics.from_dict(recorded["confirmed"])}
    return write_report(directory, loaded, policy, run.context.info.layers, before_after,
                        title=f"onnxamc: study {study}",
                        chosen_trial=chosen[0].number if chosen else None)


def _objective(study: optuna.Study):
    """The study's objective, rebuilt from the settings it stored (None if it has none)."""
    settings = study.user_attrs.get("objective_settings")
    if settings is None:
        return None
    try:
        return parse_objective(settings.get("objective"), settings.get("latency"),
                               settings.get("max_drop"), settings.get("pick"))
    except ValueError:
        return None


def _actions(trial: optuna.trial.FrozenTrial) -> list[str]:
    """The searched actions, read off the trial's parameter names (layer:field)."""
    from onnxamc.actions import SEARCHABLE

    names = {name.rpartition(":")[2] for name in trial.params}
    return [n for n, a in SEARCHABLE.items() if a.search.name in names]
