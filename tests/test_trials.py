"""`hpsearch trials`: the table and `--json`, on a study written by hand in the run's shapes.

:func:`handmade_study` is shared with the dashboard and report tests: no ML is needed to
show trials, only a storage holding what `hpsearch run` writes, through hpsearch.schema.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpsearch import schema
from hpsearch.config import SearchConfig

URL = "sqlite:///studies/hpsearch.db"
SPACE = {
    "learning_rate": FloatDistribution(1e-05, 1e-04, log=True),
    "per_device_train_batch_size": CategoricalDistribution((8, 16, 32)),
    "warmup_ratio": FloatDistribution(0.0, 0.2),
    "weight_decay": FloatDistribution(0.0, 0.1),
}
PRUNED_REASON = "pruned at epoch 1: f1 0.4000 < median 0.6500 of 2 complete trials"
FAIL_REASON = "training loss became NaN at epoch 2"
LONG_PRUNED_REASON = (
    "pruned at epoch 1: roc_auc 0.7450 < 0.8850 - 0.0600 (trial 0 at <=38 updates, 1.5 standard errors of its 0.0400)"
)


def rows(*f1: float) -> list[schema.EpochRow]:
    """Epoch rows as the run stores them, one per F1 value, on 40 validation examples."""
    return [
        schema.make_row(
            epoch=i,
            step=13 * i,
            train_loss=0.7 - 0.05 * i,
            eval_loss=0.69 - 0.04 * i,
            scores={
                "f1": v,
                "accuracy": v + 0.01,
                "precision": v + 0.02,
                "recall": v - 0.01,
                "roc_auc": v + 0.05,
                "roc_auc_se": 0.04,
            },
            confusion=[[15, 5], [6, 14]],
        )
        for i, v in enumerate(f1, start=1)
    ]


def settings(config: SearchConfig) -> schema.StudySettings:
    data = schema.DataFacts(
        name="hpsearch built-in reviews (synthetic)",
        hub_id=None,
        text_column="text",
        text_pair_column=None,
        label_names=["negative", "positive"],
        sizes={"train": 100, "validation": 40},
        class_counts={"train": [50, 50], "validation": [20, 20]},
    )
    return schema.StudySettings(
        config=config.to_dict(), data=data, base_model="tiny-bert", versions={}, created="2026-01-01T00:00:00+00:00"
    )


def new_study(url: str | None = URL, name: str = "hpsearch", objective: str = "f1") -> optuna.Study:
    """An empty study as `hpsearch run` makes it: named objective, stored settings (in memory for None)."""
    config = SearchConfig(study=name, storage=url or URL, objective=objective)
    if url and url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    with warnings.catch_warnings():  # set_metric_names is experimental; `hpsearch run` calls it too
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([schema.objective_metric_name(objective)])
    schema.write_settings(study, settings(config))
    return study


def handmade_study(url: str = URL, name: str = "hpsearch", *, running: bool = True) -> optuna.Study:
    """Trial 0 the recipe (complete, 0.70), 1 the best (0.82), 2 pruned, 3 failed, 4 running."""
    study = new_study(url, name)
    start = datetime.datetime(2026, 1, 1, 12, 0, 0)

    def add(number: int, state: TrialState, params: dict, f1: list[float], seconds: float | None, **attrs) -> None:
        study.add_trial(
            FrozenTrial(
                number=number,
                state=state,
                value=f1[-1] if state == TrialState.COMPLETE else None,
                datetime_start=start + datetime.timedelta(minutes=number),
                datetime_complete=None
                if seconds is None
                else start + datetime.timedelta(minutes=number, seconds=seconds),
                params=params,
                distributions=SPACE,
                user_attrs={schema.EPOCHS: rows(*f1), **attrs},
                system_attrs={},
                intermediate_values={i: v for i, v in enumerate(f1, start=1)},
                trial_id=number,
            )
        )

    recipe = {"learning_rate": 5e-05, "per_device_train_batch_size": 8, "warmup_ratio": 0.0, "weight_decay": 0.0}
    shipped = {schema.SHIPPED_EPOCH: 2, schema.CHECKPOINT_RULE: "last"}
    add(0, TrialState.COMPLETE, recipe, [0.6, 0.7], 30.0, **schema.recipe_attrs(), **shipped)
    add(
        1,
        TrialState.COMPLETE,
        {**recipe, "learning_rate": 8e-05, "per_device_train_batch_size": 16, "warmup_ratio": 0.1},
        [0.65, 0.82],
        28.5,
        **shipped,
        **{schema.KEPT_MODEL: True},
    )
    add(
        2,
        TrialState.PRUNED,
        {**recipe, "learning_rate": 1.2e-05, "weight_decay": 0.05},
        [0.4],
        14.0,
        **{schema.PRUNED_REASON: PRUNED_REASON},
    )
    add(
        3,
        TrialState.FAIL,
        {**recipe, "learning_rate": 9.9e-05, "per_device_train_batch_size": 32},
        [0.5],
        20.0,
        **{schema.FAIL_REASON: FAIL_REASON},
    )
    if running:
        add(4, TrialState.RUNNING, {**recipe, "learning_rate": 3e-05, "weight_decay": 0.02}, [0.55], None)
    return study


def output_lines(cli, *args: str) -> list[str]:
    code, out, err = cli("trials", *args)
    assert code == 0, err
    return out.splitlines()


# --------------------------------------------------------------------------- --json


def test_json_round_trips_the_storage_values(workdir, cli):
    handmade_study()
    code, out, err = cli("trials", "--json")
    assert code == 0, err
    records = json.loads(out)
    stored = optuna.load_study(study_name="hpsearch", storage=URL).trials
    assert [r["number"] for r in records] == [t.number for t in stored]
    for record, trial in zip(records, stored, strict=True):
        assert (
            record["state"]
            == {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}[trial.state.name]
        )
        assert record["value"] == trial.value
        assert record["params"] == trial.params
        assert record["epochs"] == schema.rows(trial)
        assert record["epoch"] == schema.rows(trial)[-1]["epoch"]
        assert record["shipped_epoch"] == schema.shipped_epoch(trial)
        assert record["intermediate_values"] == {str(k): v for k, v in trial.intermediate_values.items()}
        assert record["recipe"] == schema.is_recipe(trial)


def test_json_keeps_its_keys(workdir, cli):
    handmade_study()
    records = json.loads(cli("trials", "--json")[1])
    assert list(records[0]) == [
        "number",
        "state",
        "value",
        "epoch",
        "shipped_epoch",
        "params",
        "intermediate_values",
        "duration_s",
        "recipe",
        "best",
        "reason",
        "device",
        "cost",
        "training_args",
        "datetime_start",
        "datetime_complete",
        "epochs",
        "confirmation",
    ]


def test_json_marks_the_best_and_gives_each_reason_in_full(workdir, cli):
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
    study.add_trial(
        create_trial(
            state=TrialState.FAIL,
            params={},
            distributions={},
            user_attrs={schema.EPOCHS: nan_rows, schema.FAIL_REASON: "NaN loss"},
        )
    )
    code, out, err = cli("trials", "--json")
    assert code == 0, err
    records = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in output"))
    assert records[-1]["epochs"][0]["eval_loss"] is None


# --------------------------------------------------------------------------- table


def _table(cli) -> dict[str, str]:
    """Table rows by trial number."""
    return {line.split()[0]: line for line in output_lines(cli) if line.split() and line.split()[0].isdigit()}


def _header(cli) -> list[str]:
    return next(line for line in output_lines(cli) if "state" in line).split()


def test_table_marks_the_best_with_one_star_and_the_recipe(workdir, cli):
    handmade_study()
    lines = _table(cli)
    assert "★" in lines["1"] and "★ best" in " ".join(_header(cli))  # the header says what ★ means
    assert "recipe" in lines["0"]
    assert "\n".join(lines.values()).count("★") == 1


def test_table_notes_give_short_reasons_and_the_json_the_full_ones(workdir, cli):
    handmade_study()
    lines = _table(cli)
    assert lines["2"].split()[1] == "pruned" and lines["2"].rstrip().endswith("pruned at epoch 1")
    assert lines["3"].split()[1] == "failed" and lines["3"].rstrip().endswith("failed: training loss…")
    assert PRUNED_REASON not in "\n".join(output_lines(cli))
    assert lines["4"].split()[1] == "running"
    assert "0.8200" in lines["1"] and "28.5s" in lines["1"]


def test_table_has_a_column_per_searched_parameter_named_as_progress_names_it(workdir, cli):
    handmade_study()
    assert _header(cli) == [
        "#",
        "state",
        "f1",
        "epochs",
        "shipped",
        "lr",
        "batch",
        "warmup",
        "decay",
        "time",
        "note",
        "(★",
        "best)",
    ]


@pytest.mark.parametrize("energy", [False, True], ids=["no-energy", "energy"])
def test_table_fits_120_columns_with_a_long_pruned_reason(workdir, cli, energy):
    study = handmade_study()
    cost = {schema.COST: {"wall_seconds": 3.5, "device_seconds": 6.1, "energy_kwh": 0.0123456, "co2_g": 4.5}}
    params = {
        "learning_rate": 1.234e-05,
        "per_device_train_batch_size": 32,
        "warmup_ratio": 0.1234,
        "weight_decay": 0.0567,
    }
    for _ in range(96):  # three-digit trial numbers
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED,
                params=params,
                distributions=SPACE,
                intermediate_values={1: 0.4},
                user_attrs={
                    schema.EPOCHS: rows(0.4),
                    schema.PRUNED_REASON: LONG_PRUNED_REASON,
                    **schema.recipe_attrs(),
                    **(cost if energy else {}),
                },
            )
        )
    lines = output_lines(cli)
    assert "recipe; pruned at epoch 1" in _table(cli)["100"]
    assert max(len(line) for line in lines) <= 120, "\n".join(lines)


def test_table_says_how_many_epochs_a_trial_trained_and_which_it_shipped(workdir, cli):
    study = handmade_study(running=False)
    stopped = "stopped early after epoch 4: f1 had not beaten 0.8000 for 2 epochs"
    study.add_trial(
        create_trial(
            value=0.8,
            params={},
            distributions={},
            intermediate_values={1: 0.6, 2: 0.8, 3: 0.7, 4: 0.75},
            user_attrs={
                schema.EPOCHS: rows(0.6, 0.8, 0.7, 0.75),
                schema.SHIPPED_EPOCH: 2,
                schema.CHECKPOINT_RULE: "best",
                schema.STOPPED_EARLY: stopped,
            },
        )
    )
    cells = _table(cli)["4"].split()
    assert cells[:5] == ["4", "complete", "0.8000", "4", "2"]
    assert _table(cli)["4"].rstrip().endswith("stopped early")


@pytest.mark.parametrize(
    ("state", "reason", "short"),
    [
        ("pruned", PRUNED_REASON, "pruned at epoch 1"),
        ("pruned", LONG_PRUNED_REASON, "pruned at epoch 1"),
        ("complete", "stopped early after epoch 4: f1 had not beaten 0.9388 for 2 epochs", "stopped early"),
        ("failed", "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB", "failed: out of memory"),
        ("failed", "RuntimeError: expected scalar type Float", "failed: RuntimeError"),
        ("failed", "worker host:1234 died while the trial ran", "failed: worker host:1234…"),
        ("failed", "interrupted", "failed: interrupted"),
        ("complete", None, ""),
    ],
)
def test_short_reasons_keep_what_ended_the_trial(state, reason, short):
    from hpsearch.views.trials import NOTE_WIDTH, short_reason

    assert short_reason(state, reason) == short
    assert len(short) <= NOTE_WIDTH


def test_a_missing_study_is_one_line_naming_the_studies_there(workdir, cli):
    handmade_study()
    code, out, err = cli("trials", "--study", "nope")
    assert code == 2
    assert err.strip().splitlines() == [
        "hpsearch: error: no study named 'nope' in sqlite:///studies/hpsearch.db (studies there: hpsearch); "
        "pass --study"
    ]


def test_a_study_of_another_schema_is_refused_in_one_line(workdir, cli):
    study = handmade_study()
    study.set_user_attr(schema.STUDY_KEY, {**schema.read_settings(study).to_dict(), "schema": 1})
    code, out, err = cli("trials", "--json")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith(
        "hpsearch: error: study 'hpsearch' was written in hpsearch schema 1, this hpsearch reads schema 3;"
    )


# --------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize(
    ("command", "module", "function"),
    [
        (["trials"], "hpsearch.views.summary", "print_trials"),
        (["report"], "hpsearch.views.report", "write_report"),
        (["dashboard"], "hpsearch.views.dashboard", "serve"),
        (["card", "best"], "hpsearch.card.render", "write_card"),
    ],
)
def test_ctrl_c_outside_a_run_says_only_interrupted(workdir, cli, monkeypatch, command, module, function):
    import importlib

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    handmade_study()
    monkeypatch.setattr(importlib.import_module(module), function, interrupted)
    code, out, err = cli(*command)
    assert code == 130
    assert err == "hpsearch: interrupted\n"


def test_ctrl_c_in_a_run_says_the_running_trial_is_recorded(workdir, cli, monkeypatch):
    import hpsearch.search.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hpsearch.search.run, "run_search", interrupted)
    code, _, err = cli("run")
    assert code == 130
    assert err.startswith("hpsearch: interrupted; the running trial is recorded as failed and the study is intact.")


# --------------------------------------------------------------------------- progress


class Live:
    """What the listener reads of a live trial: its number, study and attributes."""

    def __init__(self, study: optuna.Study, number: int, recipe: bool = False) -> None:
        self.number, self.study = number, study
        self.user_attrs = schema.recipe_attrs() if recipe else {}


def reporter(study: optuna.Study):
    """A ConsoleReporter on a recording console, told that a run of 20 trials of 5 epochs started."""
    from contextlib import nullcontext
    from io import StringIO

    from rich.console import Console

    from hpsearch.events import RunInfo
    from hpsearch.views.progress import ConsoleReporter

    console = Console(file=StringIO(), width=200, highlight=False, color_system=None)
    listener = ConsoleReporter(console)
    settings = schema.read_settings(study)
    config = SearchConfig(study=study.study_name, trials=20)
    listener.run_start(RunInfo(study=study, config=config, data=settings.data, finished=0, lock=nullcontext))
    return listener, console


def printed(console) -> list[str]:
    return console.file.getvalue().splitlines()


def _prior(study: optuna.Study) -> None:
    """Trial 0 the recipe (0.70), trial 1 the best (0.82)."""
    study.add_trial(
        create_trial(
            value=0.7, user_attrs={schema.EPOCHS: rows(0.6, 0.7), schema.SHIPPED_EPOCH: 2, **schema.recipe_attrs()}
        )
    )
    study.add_trial(create_trial(value=0.82, user_attrs={schema.EPOCHS: rows(0.65, 0.82), schema.SHIPPED_EPOCH: 2}))


def test_progress_says_pruned_once_on_one_line_with_the_criterion_first(workdir):
    study = new_study(None)
    _prior(study)
    listener, console = reporter(study)
    live = Live(study, 2)
    listener.trial_start(live, {"learning_rate": 1.2e-05, "per_device_train_batch_size": 8})
    listener.epoch(live, rows(0.4)[0], pruned=LONG_PRUNED_REASON, stopped=None)
    frozen = create_trial(
        state=TrialState.PRUNED,
        params={},
        distributions={},
        user_attrs={schema.EPOCHS: rows(0.4), schema.PRUNED_REASON: LONG_PRUNED_REASON},
    )
    study.add_trial(frozen)
    listener.trial_end(live, study.trials[2])
    lines = printed(console)[-3:]
    assert lines[0] == "trial 2 (1/20)  lr=1.2e-05  batch=8"
    assert (
        lines[1].startswith("  epoch 1/5  loss 0.6500  val_loss 0.6500  f1 0.4000  acc 0.4100")
        and "pruned" not in lines[1]
    )
    assert re.fullmatch(rf"trial 2 {re.escape(LONG_PRUNED_REASON)}  \d+\.\ds   best: trial 1, f1 0.8200", lines[2])
    assert "\n".join(printed(console)).count("pruned") == 1


def test_progress_names_the_shipped_epoch_and_the_epochs_trained(workdir):
    study = new_study(None)
    _prior(study)
    listener, console = reporter(study)
    stopped = "stopped early after epoch 4: f1 had not beaten 0.9388 for 2 epochs"
    study.add_trial(
        create_trial(
            value=0.9388,
            user_attrs={
                schema.EPOCHS: rows(0.8, 0.9388, 0.9, 0.91),
                schema.SHIPPED_EPOCH: 2,
                schema.STOPPED_EARLY: stopped,
                schema.KEPT_MODEL: True,
            },
        )
    )
    listener.trial_end(Live(study, 2), study.trials[2])
    lines = printed(console)[-2:]
    assert re.fullmatch(
        r"trial 2 complete: f1 0\.9388, shipped epoch 2 of 4 trained  \d+\.\ds  ★ new best, model kept", lines[0]
    )
    assert lines[1] == f"  {stopped}"


def test_progress_says_why_a_trial_failed_once(workdir):
    study = new_study(None)
    listener, console = reporter(study)
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={schema.FAIL_REASON: FAIL_REASON}))
    listener.trial_end(Live(study, 0), study.trials[0])
    assert re.fullmatch(rf"trial 0 failed: {FAIL_REASON}  \d+\.\ds   no complete trial yet", printed(console)[-1])


def test_progress_starts_with_the_study_model_and_data(workdir):
    _, console = reporter(new_study(None))
    assert printed(console)[:2] == [
        "study hpsearch in sqlite:///studies/hpsearch.db: 0 of 20 trials finished",
        "model sentence-transformers/all-MiniLM-L6-v2   data hpsearch built-in reviews (synthetic) (100 train / 40 "
        "validation; 2 classes, binary f1)",
    ]


def test_progress_marks_the_recipe_trial_when_it_starts(workdir):
    listener, console = reporter(new_study(None))
    listener.trial_start(Live(new_study(None), 0, recipe=True), {"learning_rate": 5e-05})
    assert printed(console)[-1] == "trial 0 (1/20)  lr=5e-05  the recipe"
