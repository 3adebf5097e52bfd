"""Search and confirm: propose policies, build and measure each candidate, re-measure
the best side by side with the original, write the chosen model and policy.

The search itself (search/) only sees policies and Metrics; this module gives it the
evaluator that builds and measures a candidate (workflows/candidates.py), starts the
extra workers of `--workers N` (workflows/parallel.py) and keeps the whole run within
`--timeout`: the search stops early enough to leave the confirmation its share, and
the confirmation re-measures only while time is left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import onnx
from optuna.trial import TrialState

from onnxamc.actions import SEARCHABLE
from onnxamc.config import SearchConfig
from onnxamc.errors import OnnxAmcError, SearchError, warn
from onnxamc.graph.context import ModelContext
from onnxamc.graph.model import save_model
from onnxamc.metrics import Metrics
from onnxamc.policy import Policy
from onnxamc.profiling import Profile, clock, phase
from onnxamc.search import (LayerSlot, SearchResult, SearchSpace, make_sampler, open_study,
                            parse_objective, run_search)
from onnxamc.search.fidelity import make_pruner
from onnxamc.search.results import candidates, choose, record_choice
from onnxamc.workflows import preflight
from onnxamc.workflows.candidates import TrialEvaluator
from onnxamc.workflows.run import Run

CONFIRM_SHARE = 0.2  # of --timeout kept for re-measuring the best and writing them
MIN_CONFIRM_RUNS = 20


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
    profile: str | None = None  # search --profile: where a trial's time went
    quality: str = ""  # `fidelity: cosine on 'sentence_embedding' (higher is better)`
    bound: str | None = None  # what the drop bound means in the metric's units
    held_out: tuple[Metrics, Metrics] | None = None  # (original, compressed) on held-out data


def search_slots(context: ModelContext, runtime: str = "onnxruntime") -> list[LayerSlot]:
    """The layer table as the search sees it: the actions each layer takes and, where an
    action offers per-layer values (quantization forms that pay on `runtime`), those."""
    slots = []
    for layer in context.info.layers:
        takes = frozenset(n for n, a in SEARCHABLE.items() if a.searched_on(layer, context))
        choices = tuple((n, values) for n, a in SEARCHABLE.items()
                        if (values := a.search_choices(layer, runtime)) is not None)
        slots.append(LayerSlot(layer.name, layer.op_type, int(layer.macs), int(layer.params),
                               int(layer.c_in), int(layer.c_out), layer.depthwise,
                               tuple(layer.features()), takes, choices))
    return slots


@dataclass
class Plan:
    """What every worker of one search shares."""

    goal: object
    space: SearchSpace
    storage: str
    name: str
    bound: object | None = None  # quality.bounds.Bound: the drop bound in the metric's units


def plan_search(run: Run, config: SearchConfig, output: Path, evaluator=None,
                space: SearchSpace | None = None) -> Plan:
    """The objective, space, storage and study name. With the run's evaluator, a drop
    bound is read in the metric's units (its quality and the original's); a `space`
    already built for this run is taken as it is."""
    quality = reference = None
    if evaluator is not None:
        quality, reference = evaluator.quality, evaluator.reference_metrics.quality
    goal, bound = _objective(config, quality, reference)
    if space is None:
        try:
            space = SearchSpace(search_slots(run.context, run.target.runtime),
                                list(config.actions), cost=run.context.cost)
        except ValueError as exc:
            raise SearchError(str(exc)) from None
    storage = str(config.storage or output.with_suffix(".journal"))
    name = config.study or f"{output.stem}-{goal.label}" + (
        "" if run.target.name == "cpu-ort" else f"-{run.target.name}")
    return Plan(goal, space, storage, name, bound)


def search(run: Run, config: SearchConfig, output: Path) -> SearchOutcome:
    """Search per-layer policies, confirm the best by measuring again, write the result."""
    start = time.monotonic()
    plan = plan_search(run, config, output)  # what can be refused, before any measurement
    preflight.check_search(config, plan.space)
    preflight.check_outputs(output, output.with_suffix(".policy.json"),
                            preflight.journal_path(plan.storage))
    seeds = _seeds(run, config, plan.space)  # a rejected seed fails before any storage exists
    evaluator = run.evaluator(measure_energy=False, allow_emulated=config.allow_emulated)
    reference = evaluator.reference_metrics
    plan = plan_search(run, config, output, evaluator, plan.space)  # bound in metric units
    with _removed_if_unused(plan.storage):
        study = _open(run, config, plan)
        _check_metric(study, reference, plan.storage)
        study.set_user_attr("reference_quality", reference.quality)
        study.set_user_attr("metric", evaluator.quality.describe())
        study.set_user_attr("metric_name", reference.metric)
    trial_evaluator = TrialEvaluator(run, evaluator)
    search_seconds = None if config.timeout is None else config.timeout * (1 - CONFIRM_SHARE) \
        - (time.monotonic() - start)
    profile = Profile() if config.profile else None
    result, profile_text = _run_workers(run, config, plan, study, trial_evaluator, seeds,
                                        search_seconds, profile, output)
    outcome = SearchOutcome(result, result.policy, None, None, plan.storage, plan.name,
                            profile=profile_text, quality=evaluator.quality.headline(),
                            bound=plan.bound.text if plan.bound else None)
    if result.policy is None:
        return outcome
    _refuse_if_nothing_built(result.study, plan.space)
    deadline = None if config.timeout is None else start + config.timeout
    chosen, model, (outcome.original, outcome.compressed), result.feasible = \
        confirm(run, result, plan.goal, plan.space, trial_evaluator, deadline)
    record_choice(study, chosen, result.feasible, outcome.compressed)
    result.best, result.policy = chosen, plan.space.policy_from_params(chosen.params)
    if run.held_out is not None:
        outcome.held_out = held_out_metrics(run, model)
    outcome.policy, outcome.model = _described(result, run, config, plan, evaluator,
                                               chosen, outcome), model
    outcome.model_path = save_model(model, output)
    outcome.policy_path = outcome.policy.save(output.with_suffix(".policy.json"))
    if not result.feasible:
        rule = outcome.policy.meta.get("pick")
        warn(f"no policy on the front meets --pick {rule}; wrote the closest one"
             if rule else f"no policy met the objective ({plan.goal.describe()}); wrote the "
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


def _open(run: Run, config: SearchConfig, plan: Plan):
    sampler = _sampler(run, config, plan, worker=0)
    pruner = make_pruner(config.pruner)
    return open_study(plan.storage, plan.name, plan.goal, run.context.fingerprint, sampler,
                      settings={"objective": config.objective, "latency": config.latency,
                                "max_drop": config.max_drop, "pick": config.pick,
                                "min_quality": config.min_quality},
                      pruner=pruner)


def _sampler(run: Run, config: SearchConfig, plan: Plan, worker: int):
    """Worker n samples with seed + n: workers of one study never propose in lockstep."""
    seed = None if run.config.seed is None else run.config.seed + worker
    try:
        return make_sampler(config.agent, plan.space, plan.goal, seed, config.trials)
    except ValueError as exc:
        raise SearchError(str(exc)) from None


def _run_workers(run, config, plan, study, trial_evaluator, seeds, seconds, profile, output):
    """This process's search, beside the extra workers of --workers N."""
    from onnxamc.workflows.parallel import Workers

    if seconds is not None and seconds <= 0:
        raise SearchError("--timeout leaves no time to search after loading the model and "
                          "data; give more seconds")
    with Workers(run, config, plan, output, seconds,
                 trial_evaluator.evaluator) as workers:
        wall, cpu = clock()
        with (profile or _NoProfile()):
            result = run_search(study, plan.space, plan.goal, trial_evaluator, config.trials,
                                seconds, run.config.progress and workers.count == 1,
                                seeds=seeds, shaping=config.shaping,
                                predictor=_predictor(config, plan.space, run),
                                use_pruner=config.pruner != "none",
                                make_sampler=lambda n: _sampler(run, config, plan, n))
        wall, cpu = clock()[0] - wall, clock()[1] - cpu
    text = profile.table(max(len(_mine(study, result)), 1), wall, cpu) if profile else None
    return workers.refreshed(result, study, plan), text


def _mine(study, result) -> list:
    from onnxamc.search.workers import WORKER, WorkerId

    me = WorkerId.this().to_dict()
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(WORKER) == me]


class _NoProfile:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def confirm(run: Run, result: SearchResult, goal, space: SearchSpace,
            trial_evaluator: TrialEvaluator | None = None, deadline: float | None = None):
    """Re-measure the best candidates side by side with the original, choose by these
    numbers (search.results), and return (trial, model, (original, its metrics),
    whether it meets the goal). With a deadline (time.monotonic), fewer candidates and
    runs fit in what is left, and nothing is re-measured after it."""
    trial_evaluator = trial_evaluator or TrialEvaluator(run, run.evaluator())
    evaluator = trial_evaluator.evaluator
    trials = candidates(result.study, goal, result.best)
    models = []
    with phase("confirm"):
        for trial in trials:
            if models and deadline is not None and time.monotonic() >= deadline:
                break
            models.append(trial_evaluator.model_for(space.policy_from_params(trial.params)))
        trials = trials[:len(models)]
        runs = run.config.verify_runs
        if deadline is not None and time.monotonic() >= deadline:
            runs = min(runs, MIN_CONFIRM_RUNS)
        evaluator.deadline = deadline
        original, *measured = evaluator.compare(models, runs=runs)
    for trial, metrics in zip(trials, measured):  # the cost model's figures, as in the trials
        metrics.effective_macs = space.macs(trial.params)
        metrics.effective_macs_ratio = metrics.effective_macs / max(space.total_macs, 1)
    best, feasible = choose(goal, measured)
    from onnxamc.runtime.check import check_compressed

    check_compressed(run.model, models[best])  # the written model passes what every result does
    return trials[best], models[best], (original, measured[best]), feasible


def _described(result, run, config, plan, evaluator, chosen, outcome) -> Policy:
    policy = result.policy
    policy.fingerprint, policy.model_name = run.context.fingerprint, run.context.name
    policy.meta = {"objective": plan.goal.describe(), "metric": evaluator.quality.describe(),
                   "agent": config.agent, "feasible": result.feasible, "study": plan.name,
                   "storage": plan.storage, "trial": chosen.number,
                   "metrics": chosen.user_attrs["metrics"],
                   "confirmed": outcome.compressed.to_dict()}
    if outcome.compressed.latency_flags:
        policy.meta["latency_flags"] = outcome.compressed.latency_flags
    if getattr(plan.goal, "pick", None) is not None:
        policy.meta["pick"] = plan.goal.pick.describe()
    if plan.bound is not None:
        policy.meta["bound"] = plan.bound.text
    policy.meta["data"] = run.select_data.name
    if outcome.held_out is not None:
        original, compressed = outcome.held_out
        policy.meta["held_out"] = {"data": run.held_out.name, "original": original.quality,
                                   "compressed": compressed.quality,
                                   "drop": compressed.quality_drop}
    return policy


class _removed_if_unused:
    """A journal this search created is removed again if it fails before any trial
    (a rejected option must not leave an empty study file behind)."""

    def __init__(self, storage: str):
        path = Path(storage)
        self.path = path if "://" not in storage and storage != ":memory:" and \
            not path.exists() else None

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and self.path is not None and self.path.exists() \
                and issubclass(kind, (OnnxAmcError, KeyboardInterrupt)):
            _remove_if_no_trials(self.path)
        return False


def _remove_if_no_trials(path: Path) -> None:
    try:
        text = path.read_text()
    except OSError:
        return
    if '"op_code":4' not in text.replace(" ", ""):
        path.unlink(missing_ok=True)
        for extra in (path.with_name(path.name + ".lock"),
                      path.with_name(path.name + ".onnxamc-lock")):
            extra.unlink(missing_ok=True)


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


__all__ = ["SearchOutcome", "confirm", "search", "search_slots"]
