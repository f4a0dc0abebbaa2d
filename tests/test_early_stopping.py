"""Early stopping inside a trial: the rule on hand-written rows, then a real run that stops."""

from __future__ import annotations

import optuna
import pytest
import torch
from conftest import tiny_run_args, validation_f1_of
from transformers import TrainerControl, TrainerState, TrainingArguments

from hpsearch import schema
from hpsearch.config import PrunerConfig, SearchConfig
from hpsearch.events import RunListener
from hpsearch.training.objective import EpochCallback

optuna.logging.set_verbosity(optuna.logging.WARNING)

# 100 validation examples, 40 positive. All-negative: recall 0, precision 0, accuracy 0.6,
# and the confusion matrix has one column.
ONE_CLASS = {"f1": 0.0, "precision": 0.0, "recall": 0.0, "accuracy": 0.6, "confusion": [[60, 0], [40, 0]]}


def _learned(f1: float) -> dict[str, float]:
    return {"f1": f1, "precision": f1, "recall": f1, "accuracy": 0.5 + f1 / 2, "confusion": [[50, 10], [10, 30]]}


def _epochs(
    rows: list[dict[str, float]],
    patience: int,
    epochs: int = 10,
    objective: str = "f1",
    model=None,
    checkpoint: str = "last",
) -> tuple[list[bool], EpochCallback]:
    """Feed the rows to the callback as the Trainer's evaluations, up to a stop; whether it stopped after each.

    With a ``model``, its weights are set to the epoch number before each evaluation, so a
    snapshot of them says which epoch it was taken at.
    """
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    config = SearchConfig(
        early_stopping_patience=patience, objective=objective, checkpoint=checkpoint, pruner=PrunerConfig(name="none")
    )
    callback = EpochCallback(trial, config, RunListener(), n_labels=2)
    args = TrainingArguments(output_dir="unused", num_train_epochs=epochs, report_to="none")
    state, stops = TrainerState(), []
    for epoch, row in enumerate(rows, 1):
        state.epoch, state.global_step = float(epoch), 10 * epoch
        control = TrainerControl()
        metrics = {"eval_loss": 0.5, **{f"eval_{k}": v for k, v in row.items() if k != "confusion"}}
        callback.metrics.last_confusion = row["confusion"]  # what compute_metrics keeps aside
        if model is not None:
            with torch.no_grad():
                model.weight.fill_(epoch)
        callback.on_evaluate(args, state, control, metrics=metrics, model=model)
        stops.append(control.should_training_stop)
        if control.should_training_stop:
            break  # as the Trainer does
    return stops, callback


def test_patience_counts_epochs_without_a_new_best():
    stops, callback = _epochs([_learned(0.5), _learned(0.7), _learned(0.6), _learned(0.7), _learned(0.65)], patience=2)
    # 0.6 and then 0.7 (a tie is not a new best) after the 0.7 of epoch 2: stop after epoch 4.
    assert stops == [False, False, False, True]
    assert callback.stopped_reason == "stopped early after epoch 4: f1 had not beaten 0.7000 for 2 epochs"


def test_a_new_best_restarts_the_count():
    stops, _ = _epochs(
        [_learned(0.5), _learned(0.4), _learned(0.6), _learned(0.5), _learned(0.7), _learned(0.6)], patience=2
    )
    assert stops == [False] * 6


def test_a_slow_starter_is_not_a_plateau():
    # Three epochs calling every example negative, then learning: none of them count.
    stops, callback = _epochs([ONE_CLASS, ONE_CLASS, ONE_CLASS, _learned(0.8), _learned(0.9)], patience=1)
    assert stops == [False] * 5
    assert callback.stopped_reason is None
    # Once it has learned, a fall back to one class does count.
    stops, _ = _epochs([_learned(0.3), ONE_CLASS], patience=1)
    assert stops == [False, True]


def test_accuracy_of_a_constant_model_does_not_start_the_count():
    # A constant predictor's accuracy is the class balance, not 0: still not learning.
    stops, _ = _epochs([ONE_CLASS, ONE_CLASS, _learned(0.8)], patience=1, objective="accuracy")
    assert stops == [False, False, False]


def test_a_model_calling_one_class_is_told_by_its_confusion_matrix_not_its_scores():
    # Scores that look like learning, from a matrix with one column: still a slow starter.
    fooled = {**_learned(0.3), "confusion": [[60, 0], [40, 0]]}
    stops, _ = _epochs([_learned(0.5), fooled, fooled], patience=1)
    assert stops == [False, True]  # learning had begun at epoch 1, so epoch 2 counts
    stops, _ = _epochs([fooled, fooled, _learned(0.8)], patience=1)
    assert stops == [False, False, False]


def test_patience_zero_trains_every_epoch_and_the_last_epoch_is_never_a_stop():
    rows = [_learned(0.8)] + [_learned(0.5)] * 4
    assert _epochs(rows, patience=0)[0] == [False] * 5
    # The plateau is spent at the last planned epoch: nothing is left to stop.
    stops, callback = _epochs(rows[:3], patience=2, epochs=3)
    assert stops == [False] * 3 and callback.stopped_reason is None


def _snapshot_epoch(callback: EpochCallback) -> float | None:
    return None if callback.best_state is None else float(callback.best_state["weight"][0, 0])


def test_the_weights_are_copied_only_where_a_stop_could_ship_them():
    rising = [_learned(f) for f in (0.5, 0.6, 0.7, 0.8, 0.9)]
    # Patience 2 over 5 epochs: a best after epoch 2 cannot be followed by a stop (the
    # last epoch is never cut short), so the last copy is epoch 2's.
    _, callback = _epochs(rising, patience=2, epochs=5, model=torch.nn.Linear(2, 2))
    assert _snapshot_epoch(callback) == 2.0
    # No early stopping and the last epoch shipped: never a copy.
    _, callback = _epochs(rising, patience=0, epochs=5, model=torch.nn.Linear(2, 2))
    assert callback.best_state is None
    # checkpoint = "best" copies every new best.
    _, callback = _epochs(rising, patience=0, epochs=5, model=torch.nn.Linear(2, 2), checkpoint="best")
    assert _snapshot_epoch(callback) == 5.0
    # A stop after epoch 4 holds the weights of epoch 2, its best.
    _, callback = _epochs(
        [_learned(f) for f in (0.5, 0.8, 0.7, 0.7)], patience=2, epochs=5, model=torch.nn.Linear(2, 2)
    )
    assert callback.stopped_reason is not None and _snapshot_epoch(callback) == 2.0


@pytest.mark.slow
def test_a_run_that_plateaus_stops_complete_and_says_why(workdir, tiny_model, cli):
    # A learning rate at which the tiny model learns within a few epochs, and 8 epochs for
    # it to stall in: patience 1 stops it at the first epoch without a new best.
    config = workdir / "c.toml"
    config.write_text("[recipe]\nlearning_rate = 3e-3\n", encoding="utf-8")
    code, out, err = cli(
        *tiny_run_args(
            tiny_model,
            "--config",
            config,
            "--trials",
            "1",
            "--epochs",
            "8",
            "--pruner",
            "none",
            "--early-stopping-patience",
            "1",
            "--checkpoint",
            "last",
        )
    )
    assert code == 0, err
    trial = optuna.load_study(study_name="hpsearch", storage="sqlite:///studies/hpsearch.db").trials[0]
    rows = trial.user_attrs["epochs"]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert len(rows) < 8, [r["f1"] for r in rows]
    assert rows[-1]["f1"] <= max(r["f1"] for r in rows[:-1])  # the stopping epoch set no new best
    assert schema.stopped_early(trial).startswith(f"stopped early after epoch {len(rows)}: f1 had not beaten")
    # It ships its best epoch, not the one it stopped at, even under checkpoint = "last".
    best = max(rows, key=lambda r: r["f1"])
    assert best["epoch"] < len(rows)
    assert trial.value == best["f1"] and trial.user_attrs["shipped_epoch"] == best["epoch"]
    folder = workdir / "studies" / "hpsearch" / "best-model"
    assert validation_f1_of(folder) == pytest.approx(best["f1"], abs=1e-9)  # the weights of that epoch
    assert "stopped early" in out  # the table's short note
    assert f"stopped early after epoch {len(rows)}: f1 had not beaten" in err  # the progress line's full reason
    code, _, err = cli("card", "best")
    assert code == 0, err
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert f"Trial 0 stopped early after epoch {len(rows)}" in card
    assert (
        f"The model is the checkpoint of epoch {best['epoch']}, "
        "the epoch with the best validation F1: a trial stopped early ships its best epoch" in card
    )
    assert "- Early stopping: a trial stops once its validation F1 has not beaten its own best for 1 epoch" in card
    assert "it stopped 1 of the complete trials (trial 0); a trial it stops ships its best epoch" in card
