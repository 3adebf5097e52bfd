"""Search and confirm: propose policies, build and measure each candidate, re-measure
the best side by side with the original, write the chosen model and policy.

The search itself (search/) only sees policies and Metrics; this module gives it the
evaluator that builds and measures a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from onnxamc.actions import SEARCHABLE
from onnxamc.config import SearchConfig
from onnxamc.errors import EvaluationError, OnnxAmcError, SearchError
from onnxamc.files import check_writable
from onnxamc.graph.context import ModelContext
from onnxamc.graph.model import save_model
from onnxamc.metrics import Metrics
from onnxamc.policy import Policy
from onnxamc.search import (LayerSlot, SearchResult, SearchSpace, make_sampler, open_study,
                            parse_objective, run_search)
from onnxamc.search.results import candidates, choose, record_choice
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
    quality: str = ""  # `fidelity: cosine on 'sentence_embedding' (higher is better)`
    bound: str | None = None  # what the drop bound means in the metric's units
    held_out: tuple[Metrics, Metrics] | None = None  # (original, compressed) on held-out data


def search_slots(context: ModelContext) -> list[LayerSlot]:
    """The layer table as the search sees it, with the actions each layer takes."""
    return [LayerSlot(layer.name, layer.op_type, int(layer.macs), int(layer.params),
                      int(layer.c_in), int(layer.c_out), layer.depthwise,
                      tuple(layer.features()),
                      frozenset(n for n, a in SEARCHABLE.items() if a.searched_on(layer, context)))
            for layer in context.info.layers]


def search(run: Run, config: SearchConfig, output: Path) -> SearchOutcome:
    """Search per-layer policies, confirm the best by measuring again, write the result."""
    first, _ = _objective(config)  # what can be refused is refused before any measurement
    try:
        space = SearchSpace(search_slots(run.context), list(config.actions),
                            cost=run.context.cost)
        sampler = make_sampler(config.agent, space, first, run.config.seed, config.trials)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    check_writable(output)
    evaluator = run.evaluator(measure_energy=False)
    reference = evaluator.reference_metrics
    goal, bound = _objective(config, evaluator.quality, reference.quality)
    if goal != first:  # the bound in the metric's units
        sampler = make_sampler(config.agent, space, goal, run.config.seed, config.trials)
    storage = str(config.storage or output.with_suffix(".journal"))
    name = config.study or f"{output.stem}-{goal.label}" + (
        "" if run.target.name == "cpu-ort" else f"-{run.target.name}")
    study = open_study(storage, name, goal, run.context.fingerprint, sampler,
                       settings={"objective": config.objective, "latency": config.latency,
                                 "max_drop": config.max_drop, "pick": config.pick,
                                 "min_quality": config.min_quality})
    _check_metric(study, reference, storage)
    study.set_user_attr("reference_quality", reference.quality)
    study.set_user_attr("metric", evaluator.quality.describe())
    study.set_user_attr("metric_name", reference.metric)

    def evaluate(policy: Policy) -> Metrics:
        return evaluator.evaluate(build_candidate(run, policy))

    result = run_search(study, space, goal, evaluate, config.trials, config.timeout,
                        run.config.progress, seeds=_seeds(run, config, space),
                        shaping=config.shaping, predictor=_predictor(config, space, run))
    outcome = SearchOutcome(result, result.policy, None, None, storage, name,
                            quality=evaluator.quality.headline(),
                            bound=bound.text if bound else None)
    if result.policy is None:
        return outcome
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
    if bound is not None:
        policy.meta["bound"] = bound.text
    policy.meta["data"] = run.select_data.name
    if run.held_out is not None:
        outcome.held_out = held_out_metrics(run, model)
        policy.meta["held_out"] = {"data": run.held_out.name,
                                   "original": outcome.held_out[0].quality,
                                   "compressed": outcome.held_out[1].quality,
                                   "drop": outcome.held_out[1].quality_drop}
    outcome.policy, outcome.model = policy, model
    outcome.model_path = save_model(model, output)
    outcome.policy_path = policy.save(output.with_suffix(".policy.json"))
    return outcome


def _objective(config: SearchConfig, quality=None, reference: float | None = None):
    """(objective, Bound or None). With the run's metric and the original's quality, a
    bound given as --max-drop or --min-quality (or the metric's default, where the
    objective needs one) becomes a drop in the metric's units (quality.bounds)."""
    from onnxamc.quality.bounds import DEFAULT_DROP, drop_bound

    kind = (config.objective or "constrained").partition(":")[0]
    max_drop, pick, bound = config.max_drop, config.pick, None
    if quality is not None:
        given = config.max_drop is not None or config.min_quality is not None
        needed = given or (kind == "constrained" and config.latency is None)
        if needed or (kind == "pareto" and pick is None):
            bound = drop_bound(quality, reference, config.max_drop, config.min_quality)
            if needed:
                max_drop = bound.max_drop
            elif bound.max_drop != DEFAULT_DROP:
                pick = f"drop<={bound.max_drop!r}"
    try:
        goal = parse_objective(config.objective, config.latency, max_drop, pick)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    rule = getattr(goal, "pick", None)
    if quality is not None and rule is not None and rule.kind == "drop":
        drop_bound(quality, reference, max_drop=rule.bound)  # within the metric's range
    if kind.startswith("amc") and quality is not None and quality.error(reference) is None:
        raise SearchError(f"the {kind} objective needs an error rate (1 - accuracy); "
                          f"{quality.label()} has none: use the constrained or weighted "
                          "objective")
    return goal, bound


def _check_metric(study, reference: Metrics, storage: str) -> None:
    """A study's stored trials are comparable only under the metric that measured them."""
    stored = study.user_attrs.get("metric_name")
    if stored is not None and stored != reference.metric and study.trials:
        raise SearchError(f"study {study.study_name!r} in {storage} was measured with "
                          f"{stored}; this run scores {reference.metric}: choose another "
                          "--study name or output")


def held_out_metrics(run: Run, model: onnx.ModelProto) -> tuple[Metrics, Metrics]:
    """(original, compressed) quality on the held-out data: figures nothing chose by."""
    evaluator = run.evaluator(run.held_out, measure_energy=False)
    original = evaluator.reference_metrics
    return original, evaluator.score(model).relate_to(original)


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
