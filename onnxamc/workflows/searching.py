"""Search and confirm: propose policies, build and measure each candidate, re-measure
the best side by side with the original, write the chosen model and policy.

The search itself (search/) only sees policies and Metrics; this module gives it the
evaluator that builds and measures a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from optuna.trial import TrialState

from onnxamc.actions import SEARCHABLE
from onnxamc.config import SearchConfig
from onnxamc.errors import EvaluationError, OnnxAmcError, SearchError, warn
from onnxamc.graph.context import ModelContext
from onnxamc.graph.model import save_model
from onnxamc.metrics import Metrics
from onnxamc.policy import Policy
from onnxamc.search import (LayerSlot, SearchResult, SearchSpace, make_sampler, open_study,
                            parse_objective, run_search)
from onnxamc.search.results import candidates, choose, record_choice
from onnxamc.workflows import preflight
from onnxamc.workflows.run import Run


@dataclass
class SearchOutcome:
    result: SearchResult
    policy: Policy | None
    model_path: Path | None
    policy_path: Path | None
    storage: str
    study_name: str
    original: Metrics | None = None  # measured again beside the compressed model
    compressed: Metrics | None = None
    model: onnx.ModelProto | None = None  # the written model


def search_slots(context: ModelContext) -> list[LayerSlot]:
    """The layer table as the search sees it, with the actions each layer takes."""
    return [LayerSlot(layer.name, layer.op_type, int(layer.macs), int(layer.params),
                      int(layer.c_in), int(layer.c_out), layer.depthwise,
                      tuple(layer.features()),
                      frozenset(n for n, a in SEARCHABLE.items() if a.searched_on(layer, context)))
            for layer in context.info.layers]


def search(run: Run, config: SearchConfig, output: Path) -> SearchOutcome:
    """Search per-layer policies, confirm the best by measuring again, write the result."""
    try:
        goal = parse_objective(config.objective, config.latency, config.max_drop, config.pick)
        space = SearchSpace(search_slots(run.context), list(config.actions),
                            cost=run.context.cost)
        preflight.check_search(config, space)
        sampler = make_sampler(config.agent, space, goal, run.config.seed, config.trials)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    storage = str(config.storage or output.with_suffix(".journal"))
    preflight.check_outputs(output, output.with_suffix(".policy.json"),
                            preflight.journal_path(storage))
    name = config.study or f"{output.stem}-{goal.label}" + (
        "" if run.target.name == "cpu-ort" else f"-{run.target.name}")
    evaluator = run.evaluator(measure_energy=False)
    study = open_study(storage, name, goal, run.context.fingerprint, sampler,
                       settings={"objective": config.objective, "latency": config.latency,
                                 "max_drop": config.max_drop, "pick": config.pick})
    study.set_user_attr("reference_quality", evaluator.reference_metrics.quality)
    study.set_user_attr("metric", evaluator.quality.describe())

    def evaluate(policy: Policy) -> Metrics:
        return evaluator.evaluate(build_candidate(run, policy))

    result = run_search(study, space, goal, evaluate, config.trials, config.timeout,
                        run.config.progress, seeds=_seeds(run, config, space),
                        shaping=config.shaping, predictor=_predictor(config, space, run))
    outcome = SearchOutcome(result, result.policy, None, None, storage, name)
    if result.policy is None:
        return outcome
    _refuse_if_nothing_built(result.study, space)
    chosen, model, (outcome.original, outcome.compressed), result.feasible = \
        confirm(run, result, goal, space)
    record_choice(study, chosen, result.feasible, outcome.compressed)
    result.best, result.policy = chosen, space.policy_from_params(chosen.params)
    policy = result.policy
    policy.fingerprint, policy.model_name = run.context.fingerprint, run.context.name
    policy.meta = {"objective": goal.describe(), "metric": evaluator.quality.describe(),
                   "agent": config.agent, "feasible": result.feasible, "study": name,
                   "storage": storage, "trial": chosen.number,
                   "metrics": chosen.user_attrs["metrics"],
                   "confirmed": outcome.compressed.to_dict()}
    if getattr(goal, "pick", None) is not None:
        policy.meta["pick"] = goal.pick.describe()
    outcome.policy, outcome.model = policy, model
    outcome.model_path = save_model(model, output)
    outcome.policy_path = policy.save(output.with_suffix(".policy.json"))
    if not result.feasible:
        rule = policy.meta.get("pick")
        warn(f"no policy on the front meets --pick {rule}; wrote the closest one"
             if rule else f"no policy met the objective ({goal.describe()}); wrote the "
             "closest one")
    return outcome


def _refuse_if_nothing_built(study, space: SearchSpace) -> None:
    """The original is no result: when every candidate failed to build or run and only
    the original (the identity policy) was measured, stop with the first reason."""
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL and "error" in t.user_attrs]
    built = [t for t in trials if t.state == TrialState.COMPLETE
             and not space.policy_from_params(t.params).is_identity]
    if failed and not built:
        raise SearchError(f"every candidate failed to build or run ({len(failed)} of "
                          f"{len(trials)} trials; only the original was measured); the "
                          f"first: {failed[0].user_attrs['error']}")


def build_candidate(run: Run, policy: Policy) -> onnx.ModelProto:
    """The compressed model of one candidate; what goes wrong in onnxruntime or the
    quantizer on this candidate becomes an EvaluationError (the trial fails, the
    search goes on)."""
    try:
        return run.apply(policy, check=False)
    except OnnxAmcError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise EvaluationError(f"{type(exc).__name__}: {first}") from exc


def confirm(run: Run, result: SearchResult, goal, space: SearchSpace):
    """Re-measure the best candidates side by side with the original, choose by these
    numbers (search.results), and return (trial, model, (original, its metrics),
    whether it meets the goal)."""
    trials = candidates(result.study, goal, result.best)
    models = [build_candidate(run, space.policy_from_params(t.params)) for t in trials]
    evaluator = run.evaluator(runs=run.config.verify_runs)
    original, *measured = evaluator.compare(models)
    for trial, metrics in zip(trials, measured):  # the cost model's figures, as in the trials
        metrics.effective_macs = space.macs(trial.params)
        metrics.effective_macs_ratio = metrics.effective_macs / max(space.total_macs, 1)
    best, feasible = choose(goal, measured)
    from onnxamc.runtime.check import check_compressed

    check_compressed(run.model, models[best])  # the written model passes what every result does
    return trials[best], models[best], (original, measured[best]), feasible


def _seeds(run: Run, config: SearchConfig, space: SearchSpace) -> list[Policy]:
    from onnxamc.search.priors import load_sensitivity, prior_policies

    seeds = space.seeds()
    if config.sensitivity is not None:
        seeds = prior_policies(space, load_sensitivity(config.sensitivity)) + seeds
    if config.warm_start is not None:
        first = _warm_start(run, config)
        first.validate(run.context.layer_ops)
        seeds = [first] + seeds
    return seeds


def _warm_start(run: Run, config: SearchConfig) -> Policy:
    policy = config.warm_start if isinstance(config.warm_start, Policy) \
        else Policy.load(config.warm_start)
    if config.warm_start_from is None:
        return policy
    from onnxamc.search.transfer import transfer_policy
    from onnxamc.workflows.run import load_context

    source = load_context(config.warm_start_from)
    return transfer_policy(policy, search_slots(source), search_slots(run.context))


def _predictor(config: SearchConfig, space: SearchSpace, run: Run):
    if not config.predictor:
        return None
    from onnxamc.search.predictor import AccuracyPredictor

    return AccuracyPredictor(space, seed=run.config.seed)
