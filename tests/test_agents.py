"""Agents, objectives and the action table on a synthetic model (fast, deterministic),
plus one search through api.search on the tiny CNN."""

from dataclasses import replace
import json

import optuna
import pytest

from onnxamc.metrics import Metrics
from onnxamc.runtime.latency import LatencyStats
from onnxamc.actions import SEARCHABLE
from onnxamc.search import (AmcReward, LatencyBudget, MultiObjective, SearchSpace,
                            Weighted, make_sampler, open_study, parse_objective, run_search)
from onnxamc.search.pareto import dominates, hypervolume, pareto_indices
from search_toy import toy_evaluator, toy_layers, toy_space

# gp fits a Gaussian process and optimises its acquisition over the grid every trial
# (about 2 s on 2 shared cores with a 0.05 sparsity step): fewer trials, a coarser grid.
BUDGET = {"tpe": 40, "random": 40, "qmc": 40, "cmaes": 40, "gp": 12, "nsga2": 40, "ddpg": 40,
          "rl": 40}
ACTIONS = {"gp": ["quant", "sparsity=0:0.9:0.15"]}


def _run(agent, objective, trials, tmp_path, space=None, **kw):
    space = space or toy_space()
    study = open_study(":memory:", agent, objective, "toy",
                       sampler=make_sampler(agent, space, objective, seed=0, n_trials=trials))
    result = run_search(study, space, objective, toy_evaluator(space), trials,
                        progress=False, seeds=kw.pop("seeds", []), **kw)
    values = [t.values[0] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return result, values


@pytest.mark.parametrize("agent", list(BUDGET))
def test_agent_learns_and_beats_random_search(agent, tmp_path):
    """With the same budget, actions and seed, a learning agent's later trials are better
    on average than its first ones, and its best is at least random search's best."""
    space = toy_space(ACTIONS.get(agent, ["quant", "sparsity"]))
    result, values = _run(agent, Weighted(0.3), BUDGET[agent], tmp_path, space=space)
    assert len(values) == BUDGET[agent]
    if agent in ("random", "qmc"):  # the baselines: they explore, and cover both choices
        assert len({t.params["l1:quant"] for t in result.study.trials}) == 2
        return
    quarter = len(values) // 4
    assert sum(values[-quarter:]) > sum(values[:quarter])
    _, random_values = _run("random", Weighted(0.3), BUDGET[agent], tmp_path, space=space)
    assert max(values) >= max(random_values)


@pytest.mark.parametrize("target", [0.5, 0.3])
def test_ddpg_action_wall_keeps_every_policy_within_the_target(target):
    """Channel pruning (keep, which also shrinks the next layer) and sparsity: every
    policy DDPG proposes, random warm-up included, meets the MACs target."""
    space = toy_space(["sparsity", "prune"])
    objective = AmcReward("macs", target)
    sampler = make_sampler("ddpg", space, objective, seed=1, n_trials=30)
    study = open_study(":memory:", "wall", objective, "toy", sampler=sampler)
    run_search(study, space, objective, toy_evaluator(space), 30, progress=False, seeds=[])
    ratios = [space.macs_ratio(t.params) for t in study.trials]
    assert len(ratios) == 30 and max(ratios) <= target + 1e-9
    assert min(ratios) < target  # it does not merely sit on the wall
    assert all(t.constraints["objective"] <= 1e-9 for t in study.trials)
    assert sampler.unreachable == 0 and sampler.sigma < 0.5  # noise decayed


def test_ddpg_wall_reports_an_unreachable_target():
    from onnxamc.search.agents.ddpg import DdpgSampler

    space = toy_space(["sparsity=0:0.5"])
    sampler = DdpgSampler(space, target=0.2, seed=0)
    policy = sampler.propose()
    assert sampler.unreachable == 1
    assert all(v == 0.5 for v in policy.values())  # as compressed as the range allows


def test_action_table_is_one_entry_per_action():
    space = toy_space(["quant", "sparsity=0:0.5:0.1", "prune=0.5:1"])
    names = [p.name for p in space.params()]
    assert names[:3] == ["l0:keep", "l0:sparsity", "l0:quant"]  # registry order
    assert "l5:keep" not in names  # the logits layer's group is not prunable
    assert space.param("l1:sparsity").distribution.high == 0.5
    policy = space.policy_from_params({"l1:keep": 0.5, "l2:quant": 8})
    assert policy.action("l1").keep == 0.5 and policy.action("l2").bits == 8
    assert space.params_of(policy)["l1:keep"] == 0.5
    # keep shrinks the layer and the one reading its channels
    expected = 1 - (0.5 * 1_200_000 + 0.5 * 900_000) / sum(s.macs for s in toy_layers())
    assert space.macs_ratio(policy) == pytest.approx(expected)
    unprunable = [replace(slot, takes=slot.takes - {"prune"}) if slot.name == "l1" else slot
                  for slot in toy_layers()]
    assert "l1:keep" not in {p.name for p in SearchSpace(unprunable, ["prune"]).params()}
    with pytest.raises(ValueError, match="LOW:HIGH"):
        toy_space(["sparsity=0.8:0.1"])
    assert set(SEARCHABLE) >= {"sparsity", "quant", "prune"}


def test_objectives_parse_and_score():
    m = Metrics(quality=0.8, quality_drop=0.02, latency_ratio=0.5, size_ratio=0.25,
                effective_macs=1e6, effective_macs_ratio=0.4,
                latency=LatencyStats(1.0, 1.0, 0.0, 1))
    amc = parse_objective("amc", latency=0.5)
    assert amc == AmcReward("macs", 0.5) and amc.constraint(m) < 0
    assert amc.value(m) == pytest.approx(-0.2 * 13.8155, rel=1e-4)
    assert parse_objective("amc-latency", max_drop=0.01).constraint(m) > 0
    assert parse_objective("weighted:0.2").value(m) == pytest.approx(0.8 - 0.2 * 0.75)
    assert parse_objective("pareto").values(m) == [0.8, 0.5, 0.25]
    assert parse_objective(None, latency=0.6) == LatencyBudget(0.6)
    with pytest.raises(ValueError, match="unknown objective"):
        parse_objective("fastest")


def test_pareto_front_is_non_dominated(tmp_path):
    objective = MultiObjective()
    result, _ = _run("nsga2", objective, 30, tmp_path)
    front = result.pareto
    assert len(front) >= 3
    directions = list(objective.directions)
    everyone = [t.values for t in result.study.trials if t.values is not None]
    for t in front:
        assert not any(dominates(v, t.values, directions) for v in everyone)
    assert pareto_indices([[0.9, 1.0], [0.8, 0.5], [0.7, 0.6]], ["maximize", "minimize"]) == [0, 1]
    # hypervolume: two boxes of (accuracy above 0, latency below 1)
    hv = hypervolume([[0.9, 1.0], [0.8, 0.5]], ["maximize", "minimize"], [0.0, 1.0])
    assert hv == pytest.approx(0.8 * 0.5)
    assert result.best in front


def test_nsga2_archive_keeps_distant_policies(tmp_path):
    from onnxamc.search.agents.nsga2 import DiverseElites

    space = toy_space()
    result, _ = _run("nsga2", Weighted(0.3), 24, tmp_path, space=space)
    archive = DiverseElites(space, 8, 4).archive(result.study, [])
    vectors = [space.vector(t.params) for t in archive]
    assert len(archive) == 4 and len({tuple(v) for v in vectors}) == 4


def test_cached_policy_is_not_evaluated_again(tmp_path):
    space = SearchSpace(toy_layers()[:2], ["quant"])  # 4 possible policies
    objective = Weighted(0.3)
    calls = []
    study = open_study(str(tmp_path / "c.journal"), "c", objective, "toy",
                       sampler=make_sampler("random", space, objective, 0))
    result = run_search(study, space, objective, toy_evaluator(space, calls), 10,
                        progress=False, seeds=[])
    keys = [json.dumps(p.to_dict()["layers"], sort_keys=True) for p in calls]
    assert len(keys) == len(set(keys)) <= 4  # every evaluation was a new policy
    assert result.cache_hits == 10 - len(calls) >= 6


def test_without_the_cache_every_trial_is_evaluated(tmp_path):
    """use_cache=False (which exists to measure what the cache saves) evaluates each of
    the 12 trials; with the cache, the 2 distinct policies of one layer are evaluated
    once each and the same trials store the same metrics."""
    space = SearchSpace(toy_layers()[:1], ["quant"])
    objective = Weighted(0.3)
    stored = {}
    for cache in (True, False):
        calls = []
        study = open_study(str(tmp_path / f"{cache}.journal"), "c", objective, "toy",
                           sampler=make_sampler("random", space, objective, 0))
        run_search(study, space, objective, toy_evaluator(space, calls), 12, progress=False,
                   seeds=[], use_cache=cache)
        assert len(calls) == (2 if cache else 12)
        stored[cache] = [t.values for t in study.trials]
    assert stored[True] == stored[False]


def test_unknown_agent_and_multi_objective_ddpg_are_refused():
    space = toy_space()
    with pytest.raises(ValueError, match="unknown agent"):
        make_sampler("hillclimb", space, Weighted(), 0)
    for agent in ("ddpg", "rl", "cmaes"):
        with pytest.raises(ValueError, match="optimises one value"):
            make_sampler(agent, space, MultiObjective(), 0)


@pytest.mark.parametrize("agent,objective", [("nsga2", "pareto"), ("ddpg", "amc")])
def test_search_through_the_api_with_an_agent(agent, objective, tiny_cnn, tmp_path):
    from onnxamc import api

    outcome = api.search(tiny_cnn, data="digits", calibration="digits", eval_samples=200,
                         calibration_samples=32, runs=5, verify_runs=10,
                         progress=False, trials=6, agent=agent, objective=objective,
                         latency=0.7 if objective == "amc" else None,
                         actions=["quant", "sparsity=0:0.6:0.2"], output=tmp_path / "o.onnx")
    study = outcome.result.study
    assert outcome.model_path.exists()
    assert json.loads(outcome.policy_path.read_text())["meta"]["agent"] == agent
    assert all(t.params.get(f"{n}:sparsity", 0) <= 0.6 for t in study.trials
               for n in api.analyze(tiny_cnn).layer_names)
    files = api.report(outcome.storage, tmp_path / "report", study=outcome.study_name,
                       model=tiny_cnn)
    assert files.html.exists()
    if objective == "pareto":
        assert len(study.directions) == 3 and outcome.result.pareto
    else:
        from onnxamc.search.results import metrics_of

        proposed = [t for t in study.trials if "baseline" not in t.user_attrs]
        assert proposed and all(metrics_of(t).effective_macs_ratio <= 0.7 + 1e-9
                                for t in proposed)  # DDPG's action wall: every proposal fits
        assert outcome.result.best.value < 0  # -error * log(MACs)


def test_predictor_skips_bad_candidates_and_reports_its_errors(tmp_path):
    from onnxamc.search.predictor import AccuracyPredictor

    space = toy_space()
    objective = Weighted(0.3)
    calls = []
    predictor = AccuracyPredictor(space, margin=0.02, min_trials=10, audit=0.3)
    study = open_study(":memory:", "p", objective, "toy",
                       sampler=make_sampler("random", space, objective, 0))
    result = run_search(study, space, objective, toy_evaluator(space, calls), 30,
                        progress=False, seeds=[], predictor=predictor)
    report = result.predictor
    evaluated = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(evaluated) == 30 == len(calls)  # skips do not use the budget
    assert report["evaluations_saved"] >= 3
    assert report["audited"] >= 1 and report["wrong"] <= report["audited"]
    assert report["mean_abs_error"] < 0.1
    skipped = [t for t in study.trials if "skipped" in t.user_attrs]
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in skipped)
    assert all(t.user_attrs["skipped"]["predicted"] < t.user_attrs["skipped"]["threshold"]
               for t in skipped)


def test_sensitivity_table_seeds_first_policies(tmp_path):
    from onnxamc.errors import SearchError
    from onnxamc.search.priors import load_sensitivity, prior_policies

    path = tmp_path / "sens.json"
    path.write_text(json.dumps({"layers": {
        "l0": {"bits=8": 0.02, "sparsity=0.5": 0.05},
        "l1": {"bits=8": 0.0005, "sparsity=0.5": 0.002, "sparsity=0.8": 0.008, "keep=0.5": 0.01},
        "l3": {"bits=8": 0.0, "bits=4": 0.001, "sparsity=0.9": 0.0009},
        "gone": {"bits=8": 0.0}}}))
    space = toy_space()
    policies = prior_policies(space, load_sensitivity(path))
    first = policies[0]  # tolerance 0.001
    assert first.action("l1").bits == 8 and first.action("l1").sparsity == 0
    assert first.action("l3").sparsity == 0.9 and first.action("l3").bits == 8  # 4 not in space
    assert first.action("l0").is_identity
    assert any(p.action("l1").sparsity == 0.8 for p in policies)
    objective = Weighted(0.3)
    study = open_study(":memory:", "s", objective, "toy",
                       sampler=make_sampler("tpe", space, objective, 0, 10))
    run_search(study, space, objective, toy_evaluator(space), 5, progress=False,
               seeds=policies)
    assert study.trials[0].params == space.params_of(first)
    path.write_text(json.dumps({"layers": {"l0": {"bits": 8}}}))
    with pytest.raises(SearchError, match="field=value"):
        load_sensitivity(path)


def test_diversity_bonus_and_removal_penalty_shape_the_value():
    from onnxamc.search import Shaping

    slots = [replace(s, takes=s.takes | {"remove"}) if s.name == "l1" else s
             for s in toy_layers()]
    space = SearchSpace(slots, ["sparsity", "remove"])
    objective = Weighted(0.3)
    study = open_study(":memory:", "d", objective, "toy",
                       sampler=make_sampler("random", space, objective, 0))
    seeds = space.seeds()[:2]
    removing = space.policy_from_params({"l1:remove": True})
    run_search(study, space, objective, toy_evaluator(space), 3, progress=False,
               seeds=seeds + [removing], shaping=Shaping(diversity=0.5, removal_penalty=0.1))
    raw = [objective.value(Metrics.from_dict(t.user_attrs["metrics"])) for t in study.trials]
    bonus = [t.value - r for t, r in zip(study.trials, raw)]
    assert bonus[0] == pytest.approx(0.5)  # the first policy is new in every way
    assert 0 < bonus[1] < 0.5  # the second is near the first
    assert bonus[2] < bonus[1] and bonus[2] <= 0.5 - 0.1 + 1e-9  # one layer removed


def test_cli_search_takes_agent_objective_and_ranges(tiny_cnn, tmp_path, capsys):
    from onnxamc.cli import main

    common = [str(tiny_cnn), "--data", "digits", "--calibration", "digits",
              "--calibration-samples", "32", "--eval-samples", "200", "--runs", "5",
              "--storage", str(tmp_path / "s.journal"), "-o", str(tmp_path / "c.onnx"),
              "--no-progress"]
    assert main(["search", *common, "--trials", "4", "--agent", "random", "--objective",
                 "weighted:0.3", "--actions", "quant,sparsity=0:0.5:0.25", "--study", "w"]) == 0
    assert "trials/min" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["search", *common, "--agent", "hillclimb"])
    assert exit_.value.code == 2 and "invalid choice: 'hillclimb'" in capsys.readouterr().err
    assert main(["search", *common, "--agent", "ddpg", "--objective", "pareto"]) == 2
    assert main(["search", *common, "--actions", "sparsity=0.9:0.1"]) == 2
    assert "LOW:HIGH" in capsys.readouterr().err


@pytest.mark.parametrize("dims", [2, 3])
def test_pareto_indices_and_hypervolume_properties(dims):
    from hypothesis import given, settings, strategies as st

    directions = ["maximize"] + ["minimize"] * (dims - 1)
    point = st.lists(st.floats(0, 1, allow_nan=False), min_size=dims, max_size=dims)

    @settings(max_examples=60, deadline=None)
    @given(st.lists(point, min_size=1, max_size=12))
    def check(points):
        front = pareto_indices(points, directions)
        assert front
        for i in front:  # nobody dominates a front member
            assert not any(dominates(q, points[i], directions) for q in points)
        for j, p in enumerate(points):  # everyone else is dominated or equals a member
            if j not in front:
                assert any(dominates(points[i], p, directions) or points[i] == p for i in front)
        reference = [0.0] + [1.0] * (dims - 1)
        whole = hypervolume(points, directions, reference)
        assert whole == pytest.approx(hypervolume([points[i] for i in front], directions,
                                                  reference))
        assert whole >= max(hypervolume([p], directions, reference) for p in points) - 1e-12

    check()
