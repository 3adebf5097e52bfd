"""The action registry: one class per action declares its fields, checks, search space
and pass; LayerAction, the search space, the CLI help and the README come from it."""

from pathlib import Path

from onnxamc.actions import ACTIONS, FIELDS, OWNER, SEARCHABLE, field_table
from onnxamc.policy import LayerAction

README = Path(__file__).resolve().parent.parent / "README.md"


def test_layer_action_has_exactly_the_declared_fields():
    assert [f for f in LayerAction.__dataclass_fields__] == [f.name for f in FIELDS]
    assert LayerAction().is_identity and all(getattr(LayerAction(), f.name) == f.default
                                             for f in FIELDS)
    assert len(OWNER) == len(FIELDS)  # no field owned by two actions


def test_readme_field_table_is_the_registry_s():
    assert field_table() in README.read_text()


def test_every_searchable_action_names_one_of_its_own_fields():
    for name, action in SEARCHABLE.items():
        assert action.search.field in {f.name for f in action.fields}, name
        assert action.search.identity == next(f.default for f in action.fields
                                              if f.name == action.search.field)


def test_cli_help_lists_the_searchable_actions(capsys):
    import pytest

    from onnxamc.cli import main

    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in SEARCHABLE:
        assert f"{name}[=" in text
    assert [a.name for a in ACTIONS][:3] == ["remove", "prune", "low-rank"]  # apply order
