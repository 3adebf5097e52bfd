"""Picking one policy from a Pareto front (--pick): the rules on measured metrics, on a
toy study, and through the CLI on the tiny CNN."""

import json

import pytest

from onnxamc.metrics import Metrics
from onnxamc.search import MultiObjective, best_trial, make_sampler, open_study, run_search
from onnxamc.search.pick import PickRule, parse_pick
from search_toy import toy_evaluator, toy_space

# (accuracy, latency ratio, size ratio) of five measured policies
POINTS = [(0.90, 1.00, 1.0), (0.895, 0.60, 0.5), (0.885, 0.40, 0.3), (0.80, 0.30, 0.25),
          (0.60, 0.20, 0.2)]
METRICS = [Metrics(quality=a, quality_drop=0.9 - a, latency_ratio=l, size_ratio=s)
           for a, l, s in POINTS]


@pytest.mark.parametrize("spec,chosen,met", [
    (None, 1, True),  # the fastest within 1 point
    ("drop<=0.001", 0, True),
    ("drop<=0.2", 3, True),
    ("latency<=0.5", 2, True),  # the most accurate at ≤ half the latency
    ("latency<=0.1", 4, False),  # nothing that fast: the nearest, flagged
    ("size<=0.26", 3, True),
    ("knee", 2, True),
])
def test_pick_rules_choose_the_stated_policy(spec, chosen, met):
    assert parse_pick(spec).choose(METRICS) == (chosen, met)


def test_pick_rules_are_parsed_strictly():
    assert parse_pick(" Latency <= 0.5 ") == PickRule("latency", 0.5)
    assert parse_pick(None, 0.02) == PickRule("drop", 0.02)
    for bad, message in [("fastest", "unknown pick rule"), ("latency<=fast", "needs a number"),
                         ("drop<=-0.5", "out of range"), ("size<=-1", "out of range")]:
        with pytest.raises(ValueError, match=message):
            parse_pick(bad)
    assert parse_pick("knee").choose([]) is None


def test_toy_study_picks_by_rule_from_the_same_trials():
    """Changing the rule changes the policy chosen, not the trials."""
    space = toy_space()
    objective = MultiObjective()
    study = open_study(":memory:", "pick", objective, "toy",
                       sampler=make_sampler("nsga2", space, objective, seed=0, n_trials=40))
    run_search(study, space, objective, toy_evaluator(space), 40, progress=False, seeds=[])
    metrics = lambda t: Metrics.from_dict(t.user_attrs["metrics"])  # noqa: E731
    feasible = [metrics(t) for t in study.trials if t.values is not None]
    drop = sorted(m.quality_drop for m in feasible)[len(feasible) // 2]  # half fit
    latency = sorted(m.latency_ratio for m in feasible)[len(feasible) // 2]
    fastest_close, met = best_trial(study, MultiObjective(pick=parse_pick(f"drop<={drop}")))
    assert met and metrics(fastest_close).latency_ratio == min(
        m.latency_ratio for m in feasible if m.quality_drop <= drop)
    accurate_fast, met = best_trial(study, MultiObjective(pick=parse_pick(f"latency<={latency}")))
    assert met and metrics(accurate_fast).quality == max(
        m.quality for m in feasible if m.latency_ratio <= latency)
    assert fastest_close.number != accurate_fast.number

def test_cli_pick_rechooses_from_a_stored_front(tiny_cnn, tmp_path, capsys):
    from onnxamc.cli import main

    common = [str(tiny_cnn), "--data", "digits", "--calibration", "digits",
              "--calibration-samples", "32", "--eval-samples", "200", "--runs", "5",
              "--storage", str(tmp_path / "s.journal"), "-o", str(tmp_path / "c.onnx"),
              "--no-progress", "--trials", "8", "--agent", "nsga2", "--objective", "pareto",
              "--actions", "quant,sparsity=0:0.6:0.3", "--study", "front"]
    assert main(["search", *common, "--pick", "knee"]) == 0
    out = capsys.readouterr().out
    first = json.loads((tmp_path / "c.policy.json").read_text())["meta"]
    assert "pick knee" in first["objective"]
    front = out[out.index("Pareto front"):].split("(trials ")[1].split(")")[0].split(", ")
    assert str(first["trial"]) in front  # chosen from the re-measured front
    assert main(["search", *common, "--pick", "drop<=0.5"]) == 0
    out = capsys.readouterr().out
    assert "(0 new" in out  # the study was complete: only the choice changed
    second = json.loads((tmp_path / "c.policy.json").read_text())["meta"]
    assert "pick drop<=0.5" in second["objective"] and second["pick"] == "drop<=0.5"
    assert main(["search", *common, "--pick", "size<=0.0001"]) == 0  # nothing that small
    assert "no policy on the front meets --pick size<=0.0001" in capsys.readouterr().err
    assert main(["search", str(tiny_cnn), "--data", "digits", "--pick", "knee"]) == 2
    assert "use it with --objective pareto" in capsys.readouterr().err
    assert main(["search", *common, "--pick", "latency<0.5"]) == 2
    assert "unknown pick rule" in capsys.readouterr().err
