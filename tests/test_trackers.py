"""The Trainer's trackers: every trial is its own run, its eval metrics readable by TensorBoard."""

from __future__ import annotations

import re

import optuna
import pytest
from conftest import tiny_run_args

from hpsearch import schema


def test_report_to_tensorboard_writes_a_run_per_trial_with_its_eval_metrics(workdir, tiny_model, cli):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, err = cli(
        *tiny_run_args(tiny_model, "--trials", "2", "--epochs", "2", "--pruner", "none", "--report-to", "tensorboard")
    )
    assert code == 0, err
    study = optuna.load_study(study_name="hpsearch", storage="sqlite:///studies/hpsearch.db")
    for trial in study.trials:
        events = EventAccumulator(str(workdir / "studies" / "hpsearch" / "runs" / f"trial-{trial.number}"))
        events.Reload()
        for key in ("f1", "accuracy", "loss"):
            logged = [e.value for e in events.Scalars(f"eval/{key}")]
            stored = [row["eval_loss" if key == "loss" else key] for row in schema.rows(trial)]
            assert logged == pytest.approx(stored, rel=1e-6), key
        assert (
            f'"run_name": "hpsearch/trial-{trial.number}"'
            in events.Tensors("args/text_summary")[0].tensor_proto.string_val[0].decode()
        )


def test_report_to_may_change_when_a_study_resumes(workdir, tiny_model, cli):
    code, _, err = cli(*tiny_run_args(tiny_model, "--trials", "1", "--epochs", "1"))
    assert code == 0, err
    code, _, err = cli(*tiny_run_args(tiny_model, "--trials", "2", "--epochs", "1", "--report-to", "tensorboard"))
    assert code == 0, err
    assert (workdir / "studies" / "hpsearch" / "runs" / "trial-1").is_dir()
    assert not (workdir / "studies" / "hpsearch" / "runs" / "trial-0").exists()


def test_the_card_names_the_tracker_and_where_its_runs_are(workdir, tiny_model, cli):
    code, _, err = cli(*tiny_run_args(tiny_model, "--trials", "1", "--epochs", "1", "--report-to", "tensorboard"))
    assert code == 0, err
    code, _, err = cli("card", "best")
    assert code == 0, err
    text = (workdir / "studies" / "hpsearch" / "best-model" / "README.md").read_text(encoding="utf-8")
    assert (
        "- Trackers: every trial was logged to tensorboard as a run named `hpsearch/trial-<N>`; TensorBoard's runs "
        "are in `studies/hpsearch/runs/`" in text
    )


@pytest.mark.parametrize(
    ("tracker", "message"),
    [
        (
            "nonsense",
            r"^hpsearch: error: report_to: expected trackers the Trainer knows \(.*tensorboard.*\), got 'nonsense'\n$",
        ),
        (
            "none tensorboard",
            r"^hpsearch: error: report_to: \"none\" and \"all\" stand alone, got \['none', 'tensorboard'\]\n$",
        ),
    ],
)
def test_a_tracker_the_trainer_cannot_use_is_one_line_before_anything_is_made(
    workdir, tiny_model, cli, tracker, message
):
    flags = [f for name in tracker.split() for f in ("--report-to", name)]
    code, out, err = cli(*tiny_run_args(tiny_model, *flags))
    assert code == 2 and re.match(message, err), err
    assert list(workdir.iterdir()) == []
