"""Issue 15's corpus as a test: every mistaken or hostile input of the issue's table (and
the cases added around them, tests/corpus/cases.py) through a real `onnxamc` process.

Each must end as the case says: exit 2 with exactly one line on stderr naming the input,
no traceback, no file left behind (neither where the command ran nor beside its inputs);
or, for an input onnxamc should accept (an opset-7 model, `"bits": 8.0`), exit 0 with a
correct result. Ctrl-C on a search prints one line and exits 130.

`python tests/corpus` runs the same cases and prints the counts per class (clean,
traceback, hang, silent, untidy).
"""

from __future__ import annotations

import os

import pytest
from corpus.cases import CASES
from corpus.inputs import build_inputs
from corpus.runner import run_case


def _params():
    for case in CASES:
        marks = []
        if not case.root_ok:
            marks.append(pytest.mark.skipif(os.geteuid() == 0,
                                            reason="permission bits mean nothing to root"))
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.fixture(scope="session")
def corpus_inputs(tmp_path_factory) -> dict[str, str]:
    return build_inputs(tmp_path_factory.mktemp("corpus-inputs"))


@pytest.mark.parametrize("case", list(_params()))
def test_corpus_case(case, corpus_inputs, tmp_path):
    outcome = run_case(case, corpus_inputs, tmp_path / "cwd")
    assert outcome.kind == "clean", outcome.describe()


def test_case_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids)


# --- what misled without an error (issue 15) ----------------------------------------------
def _help(command: str) -> str:
    import argparse

    from onnxamc.cli.parser import build_parser

    commands = next(a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction))
    return commands.choices[command].format_help()


def test_search_help_names_every_agent():
    from onnxamc.search import AGENTS

    text = " ".join(_help("search").split())  # argparse wraps lines
    assert all(agent in text for agent in AGENTS) and "with Optuna TPE" not in text


def test_help_says_what_each_command_takes():
    assert "--data" not in _help("apply").split("--calibration CALIBRATION", 2)[2]
    bench = _help("bench")
    assert "--eval-samples" in bench and "--limit" not in bench


def test_an_unmet_objective_is_a_warning_in_the_api(tiny_cnn, tmp_path):
    from onnxamc import api
    from onnxamc.errors import OnnxAmcWarning

    with pytest.warns(OnnxAmcWarning, match="no policy met the objective"):
        outcome = api.search(tiny_cnn, "digits", tmp_path / "s.onnx", latency=0.01, trials=3,
                             runs=3, eval_samples=100, calibration_samples=32, progress=False)
    assert outcome.policy.meta["feasible"] is False and outcome.model_path.is_file()
