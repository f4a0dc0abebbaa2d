"""The stored schema: one module reads and writes storage, and what it writes reads back."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest

from hpsearch import schema
from hpsearch.bestmodel import MARKER_FILE
from hpsearch.errors import StorageError

PACKAGE = Path(schema.__file__).parent
# Attribute access that reads or writes what hpsearch stores: only hpsearch/schema.py may use it.
STORAGE_ACCESS = {"user_attrs", "set_user_attr", "system_attrs", "set_system_attr"}


def storage_access(source: str) -> list[str]:
    """Where ``source`` touches stored attributes or the best-model marker by hand."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in STORAGE_ACCESS:
            found.append(f"line {node.lineno}: .{node.attr}")
        if isinstance(node, ast.Constant) and node.value in (MARKER_FILE, schema.STUDY_KEY + ".json"):
            found.append(f"line {node.lineno}: {node.value!r}")
    return sorted(found)


def test_the_checker_finds_a_bare_attribute_read_and_write():
    assert storage_access('x = trial.user_attrs.get("shipped_epoch")\ntrial.set_user_attr("kept_model", True)\n') == [
        "line 1: .user_attrs",
        "line 2: .set_user_attr",
    ]
    assert storage_access('open(folder / "hpsearch.json")') == ["line 1: 'hpsearch.json'"]
    assert storage_access("schema.shipped_epoch(trial)") == []


@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "schema.py" or p.parent != PACKAGE
    ),
)
def test_every_module_but_the_schema_goes_through_the_schema(path):
    found = storage_access((PACKAGE / path).read_text(encoding="utf-8"))
    if path == "bestmodel.py":  # the marker's own module names its file
        found = [f for f in found if repr(MARKER_FILE) not in f]
    assert found == []


# Private attributes (``study._storage``, ``study._study_id``, ``frozen_trial._trial_id``), not
# the public storage methods whose names hold the same words (``get_study_id_from_name``).
PRIVATE_API = ("optuna_dashboard._", "._storage", "._study_id", "._trial_id", "fcntl")


def private_api(source: str) -> list[str]:
    return [n for n in PRIVATE_API if n in source]


def test_the_private_api_checker_tells_attributes_from_public_storage_methods():
    assert private_api("study._storage.get_trial(frozen._trial_id)") == ["._storage", "._trial_id"]
    assert private_api("storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(n), 0)") == []


def test_no_private_api_of_optuna_or_the_dashboard_and_no_fcntl():
    hits = [(p.name, n) for p in PACKAGE.rglob("*.py") for n in private_api(p.read_text(encoding="utf-8"))]
    assert hits == []


def _study_with(settings_value: object) -> optuna.Study:
    study = optuna.create_study(study_name="s")
    if settings_value is not None:
        study.set_user_attr(schema.STUDY_KEY, settings_value)
    return study


def _settings() -> schema.StudySettings:
    data = schema.DataFacts(
        name="d",
        hub_id=None,
        text_column="text",
        text_pair_column=None,
        label_names=["no", "yes"],
        sizes={"train": 10, "validation": 4},
        class_counts={"train": [5, 5], "validation": [3, 1]},
    )
    return schema.StudySettings(
        config={"objective": "f1"},
        data=data,
        base_model="m",
        versions={"Optuna": "5"},
        created="2020-01-01T00:00:00+00:00",
    )


def test_settings_round_trip_through_a_study():
    study = _study_with(None)
    schema.write_settings(study, _settings())
    assert schema.read_settings(study) == _settings()
    assert schema.objective_name(study) == "f1"
    assert schema.read_settings(study).data.positive_label == "yes"


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (
            None,
            r"^study 's' was not made by `hpsearch run` \(it has no 'hpsearch' attribute\); pass the --study that "
            r"`hpsearch run` made$",
        ),
        (
            {"config": {}},
            r"^study 's' was written in hpsearch schema 1, this hpsearch reads schema 3; start a new study",
        ),
        (
            {"schema": 4},
            r"^study 's' was written in hpsearch schema 4, this hpsearch reads schema 3; start a new study",
        ),
    ],
)
def test_a_study_without_settings_or_of_another_version_is_one_line(stored, message):
    with pytest.raises(StorageError, match=message):
        schema.read_settings(_study_with(stored))


def test_an_epoch_row_stores_integers_for_its_confusion_matrix():
    row = schema.make_row(
        epoch=1, step=4, train_loss=None, eval_loss=0.5, scores={"f1": 0.5}, confusion=[[3.0, 1], [0, 1]]
    )
    assert row["confusion"] == [[3, 1], [0, 1]] and all(type(n) is int for line in row["confusion"] for n in line)
    assert set(row) == set(schema.EpochRow.__annotations__)


def test_a_dead_workers_trial_names_the_worker_as_its_reason():
    study = _study_with(None)
    trial = study.ask()
    schema.claim(trial, "host:123")
    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    assert schema.fail_reason(study.trials[0]) == "worker host:123 died while the trial ran"
    assert schema.end_reason(study.trials[0]) == "worker host:123 died while the trial ran"


def test_best_and_recipe_trial_readers():
    study = _study_with(None)
    study.enqueue_trial({}, user_attrs=schema.recipe_attrs())
    for value in (0.5, 0.7, 0.7):
        study.tell(study.ask(), value)
    trials = study.get_trials()
    assert schema.best_trial(trials).number == 1  # the earliest of equal values
    assert schema.recipe_trial(trials).number == 0
    assert schema.count_finished(trials) == 3
