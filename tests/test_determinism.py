"""The same trial configuration, run twice, gives the same per-epoch metrics to the last bit.

Every speed setting (evaluation batch, length-sorted evaluation, the optimiser, threads,
data-loader workers) must keep this true, so the benchmarks can compare runs and users can
reproduce a trial from its stored parameters.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from hpsearch import load_config, run_search


def _rows(tiny_model: Path, folder: Path, recipe: str = "") -> list[dict]:
    folder.mkdir()
    (folder / "hpsearch.toml").write_text(f"[recipe]\n{recipe}\n", encoding="utf-8")
    config = load_config(
        folder / "hpsearch.toml",
        overrides={
            "model": str(tiny_model),
            "max_length": 32,
            "trials": 1,
            "epochs": 2,
            "pruner": "none",
            "storage": f"sqlite:///{folder / 'hpsearch.db'}",
            "workdir": str(folder / "studies"),
        },
    )
    study = run_search(config).study
    (trial,) = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return trial.user_attrs["epochs"]


def test_two_runs_of_the_same_trial_give_identical_epoch_rows(tiny_model, tmp_path):
    first = _rows(tiny_model, tmp_path / "a")
    second = _rows(tiny_model, tmp_path / "b")
    assert [r["epoch"] for r in first] == [1, 2]
    assert first == second  # exact float equality: losses and every metric, every epoch


def test_length_grouped_batches_change_the_rows_and_stay_reproducible(tiny_model, tmp_path):
    # The README's advice for texts of mixed lengths: the Trainer's length-grouped sampler.
    # It must reach the Trainer (other batches, so other losses for the same seed) and keep
    # a trial reproducible from its stored parameters.
    grouped = "train_sampling_strategy = 'group_by_length'"
    first = _rows(tiny_model, tmp_path / "a", grouped)
    second = _rows(tiny_model, tmp_path / "b", grouped)
    plain = _rows(tiny_model, tmp_path / "c")
    assert first == second
    assert [r["train_loss"] for r in first] != [r["train_loss"] for r in plain]
