"""`hpsearch trials`: the table and `--json`, on a study written by hand in the run's shapes.

:func:`handmade_study` is shared with the dashboard and report tests: no ML is needed to
show trials, only a storage holding what `hpsearch run` writes.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpsearch.config import SearchConfig
from hpsearch.search.study import STUDY_ATTR

URL = "sqlite:///studies/hpsearch.db"
SPACE = {
    "learning_rate": FloatDistribution(1e-05, 1e-04, log=True),
    "per_device_train_batch_size": CategoricalDistribution((8, 16, 32)),
    "warmup_ratio": FloatDistribution(0.0, 0.2),
    "weight_decay": FloatDistribution(0.0, 0.1),
}
PRUNED_REASON = "pruned after epoch 1: validation f1 0.4000 below the median 0.6500"
FAIL_REASON = "training loss became NaN at epoch 2"


def rows(*f1: float) -> list[dict]:
    """`epochs` rows as the objective writes them, one per F1 value."""
    return [
        {"epoch": i, "step": 13 * i, "train_loss": 0.7 - 0.05 * i, "eval_loss": 0.69 - 0.04 * i,
         "f1": v, "accuracy": v + 0.01, "precision": v + 0.02, "recall": v - 0.01}
        for i, v in enumerate(f1, start=1)
    ]


def handmade_study(url: str = URL, name: str = "hpsearch", *, running: bool = True) -> optuna.Study:
    """Trial 0 the recipe (complete, 0.70), 1 the best (0.82), 2 pruned, 3 failed, 4 running."""
    config = SearchConfig(study=name, storage=url)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_metric_names(["validation f1"])
    study.set_user_attr(STUDY_ATTR, {
        "config": config.to_dict(),
        "data": {"name": "hpsearch built-in reviews (synthetic)", "sizes": {"train": 100, "validation": 40}},
        "base_model": "tiny-bert",
        "versions": {},
        "created": "2026-01-01T00:00:00+00:00",
    })
    start = datetime.datetime(2026, 1, 1, 12, 0, 0)

    def add(number: int, state: TrialState, params: dict, f1: list[float], seconds: float | None, **attrs) -> None:
        study.add_trial(FrozenTrial(
            number=number,
            state=state,
            value=f1[-1] if state == TrialState.COMPLETE else None,
            datetime_start=start + datetime.timedelta(minutes=number),
            datetime_complete=None if seconds is None else start + datetime.timedelta(minutes=number, seconds=seconds),
            params=params,
            distributions=SPACE,
            user_attrs={"epochs": rows(*f1), **attrs},
            system_attrs={},
            intermediate_values={i: v for i, v in enumerate(f1, start=1)},
            trial_id=number,
        ))

    recipe = {"learning_rate": 5e-05, "per_device_train_batch_size": 8, "warmup_ratio": 0.0, "weight_decay": 0.0}
    add(0, TrialState.COMPLETE, recipe, [0.6, 0.7], 30.0, recipe=True, shipped_epoch=2, checkpoint_rule="last")
    add(1, TrialState.COMPLETE, {**recipe, "learning_rate": 8e-05, "per_device_train_batch_size": 16, "warmup_ratio": 0.1},
        [0.65, 0.82], 28.5, shipped_epoch=2, checkpoint_rule="last", kept_model=True)
    add(2, TrialState.PRUNED, {**recipe, "learning_rate": 1.2e-05, "weight_decay": 0.05}, [0.4], 14.0, pruned_reason=PRUNED_REASON)
    add(3, TrialState.FAIL, {**recipe, "learning_rate": 9.9e-05, "per_device_train_batch_size": 32}, [0.5], 20.0, fail_reason=FAIL_REASON)
    if running:
        add(4, TrialState.RUNNING, {**recipe, "learning_rate": 3e-05, "weight_decay": 0.02}, [0.55], None)
    return study


# --------------------------------------------------------------------------- --json


def test_json_round_trips_the_storage_values(workdir, cli):
    handmade_study()
    code, out, err = cli("trials", "--json")
    assert code == 0, err
    records = json.loads(out)
    stored = optuna.load_study(study_name="hpsearch", storage=URL).trials
    assert [r["number"] for r in records] == [t.number for t in stored]
    for record, trial in zip(records, stored, strict=True):
        assert record["state"] == {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}[trial.state.name]
        assert record["value"] == trial.value
        assert record["params"] == trial.params
        assert record["epochs"] == trial.user_attrs["epochs"]
        assert record["epoch"] == trial.user_attrs["epochs"][-1]["epoch"]
        assert record["intermediate_values"] == {str(k): v for k, v in trial.intermediate_values.items()}
        assert record["recipe"] == bool(trial.user_attrs.get("recipe"))


def test_json_marks_the_best_and_gives_each_reason(workdir, cli):
    handmade_study()
    records = json.loads(cli("trials", "--json")[1])
    assert [r["number"] for r in records if r["best"]] == [1]
    assert [r["number"] for r in records if r["recipe"]] == [0]
    assert records[2]["reason"] == PRUNED_REASON
    assert records[3]["reason"] == FAIL_REASON
    assert records[1]["duration_s"] == 28.5
    assert records[4]["duration_s"] is None and records[4]["datetime_complete"] is None


def test_json_is_strict_json_when_a_metric_is_not_finite(workdir, cli):
    study = handmade_study(running=False)
    nan_rows = rows(0.5)
    nan_rows[0]["eval_loss"] = math.nan
    study.add_trial(create_trial(state=TrialState.FAIL, params={}, distributions={}, user_attrs={"epochs": nan_rows, "fail_reason": "NaN loss"}))
    code, out, err = cli("trials", "--json")
    assert code == 0, err
    records = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in output"))
    assert records[-1]["epochs"][0]["eval_loss"] is None


# --------------------------------------------------------------------------- table


def _table(cli) -> dict[str, str]:
    code, out, err = cli("trials")
    assert code == 0, err
    lines = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")]
        if len(cells) > 2 and cells[1]:
            lines[cells[1]] = line
    return lines


def test_table_marks_the_best_with_a_star_and_the_recipe(workdir, cli):
    handmade_study()
    lines = _table(cli)
    assert "★ best" in lines["1 ★"]
    assert "recipe" in lines["0 R"]
    assert not any("★" in line for key, line in lines.items() if key != "1 ★")


def test_table_shows_state_reasons_epoch_and_duration(workdir, cli):
    handmade_study()
    lines = _table(cli)
    assert "pruned" in lines["2"] and PRUNED_REASON in lines["2"]
    assert "failed" in lines["3"] and FAIL_REASON in lines["3"]
    assert "running" in lines["4"]
    assert "0.8200" in lines["1 ★"] and "28.5s" in lines["1 ★"]


def test_table_has_a_column_per_searched_parameter(workdir, cli):
    handmade_study()
    header = next(line for line in cli("trials")[1].splitlines() if "state" in line)
    for column in ("validation f1", "epoch", "lr", "batch", "warmup_ratio", "weight_decay", "time", "note"):
        assert column in header


def test_a_missing_study_is_one_line_naming_the_studies_there(workdir, cli):
    handmade_study()
    code, out, err = cli("trials", "--study", "nope")
    assert code == 2
    assert err.strip().splitlines() == ["hpsearch: error: no study named 'nope' in sqlite:///studies/hpsearch.db (studies there: hpsearch); pass --study"]
