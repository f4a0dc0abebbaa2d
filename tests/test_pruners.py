"""The aligned median rule, on in-memory studies with hand-written epoch rows."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import optuna
import pytest
from sklearn.metrics import roc_auc_score

from hpsearch.config import PrunerConfig
from hpsearch.errors import ConfigError
from hpsearch.training.metrics import compute_metrics_for, roc_auc, roc_auc_se
from hpsearch.search.pruners import AlignedMedianPruner
from hpsearch.card.search_section import describe_pruner
from hpsearch.search.study import build_pruner

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _rows(steps_per_epoch: int, f1: list[float], auc: list[float]) -> list[dict]:
    return [{"epoch": e, "step": e * steps_per_epoch, "f1": a, "roc_auc": b} for e, (a, b) in enumerate(zip(f1, auc, strict=True), 1)]


def _study(pruner: optuna.pruners.BasePruner, complete: list[list[dict]]) -> optuna.Study:
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for rows in complete:
        trial = study.ask()
        trial.set_user_attr("epochs", rows)
        for row in rows:
            trial.report(row["f1"], row["epoch"])
        study.tell(trial, rows[-1]["f1"])
    return study


def _verdicts(study: optuna.Study, rows: list[dict]) -> list[bool]:
    """should_prune after each of the rows, as the epoch callback asks it."""
    trial = study.ask()
    out = []
    for i, row in enumerate(rows):
        trial.set_user_attr("epochs", rows[: i + 1])
        trial.report(row["f1"], row["epoch"])
        out.append(trial.should_prune())
    return out


# Three batch-8 trials: 32 updates an epoch. Their ROC AUC after epoch 1 is 0.90, 0.96, 0.99.
DONE = [_rows(32, [0.0, 0.7, 0.9], [0.90, 0.98, 0.99]), _rows(32, [0.2, 0.9, 0.9], [0.96, 0.99, 1.0]), _rows(32, [0.5, 0.9, 0.9], [0.99, 1.0, 1.0])]


def test_a_trial_is_not_judged_before_any_complete_trial_made_as_few_updates():
    # Batch 32 on the same data: 8 updates an epoch; epochs 1-3 are 8, 16, 24 updates, all
    # fewer than the 32 of anyone's first epoch. The epoch-aligned rule prunes it at once.
    slow = _rows(8, [0.0, 0.0, 0.0], [0.5, 0.5, 0.5])
    assert _verdicts(_study(AlignedMedianPruner(metric="roc_auc", align="updates"), DONE), slow) == [False, False, False]
    assert _verdicts(_study(AlignedMedianPruner(metric="roc_auc", align="epochs"), DONE), slow)[0] is True


def test_updates_align_reads_each_complete_trial_at_its_last_epoch_within_as_many_updates():
    # Batch 16: 16 updates an epoch. At epoch 2 (32 updates) the median is of the others'
    # epoch-1 AUC (0.96); at epoch 3 (48 updates) still of epoch 1; at 64, of epoch 2 (0.99).
    pruner = AlignedMedianPruner(metric="roc_auc", align="updates")
    study = _study(pruner, DONE)
    assert _verdicts(study, _rows(16, [0.0, 0.0, 0.0, 0.0], [0.5, 0.97, 0.98, 0.985])) == [False, False, False, True]
    assert _verdicts(study, _rows(16, [0.0, 0.0], [0.5, 0.95])) == [False, True]


def _lr_rows(lr_per_epoch: float, auc: list[float]) -> list[dict]:
    """Batch-8 rows (32 updates an epoch) of a trial whose updates sum to lr_per_epoch each epoch."""
    return [{**row, "lr_sum": e * lr_per_epoch} for e, row in enumerate(_rows(32, [0.0] * len(auc), auc), 1)]


def test_lr_sum_align_reads_each_complete_trial_within_as_large_a_sum_of_learning_rates():
    # The complete trials sum 1.6e-3 of learning rate an epoch (5e-5 x 32 updates). A trial
    # at 2e-5 (6.4e-4 an epoch) is behind them after as many updates; by summed learning
    # rate it is not judged before its epoch 3 (1.92e-3), and then against their epoch 1
    # (median 0.97) until its epoch 5 (3.2e-3) reaches their epoch 2 (median 0.99).
    done = [_lr_rows(1.6e-3, auc) for auc in ([0.96, 0.99, 1.0], [0.97, 0.99, 1.0], [0.98, 1.0, 1.0])]
    slow = _lr_rows(6.4e-4, [0.6, 0.8, 0.975, 0.975, 0.975])
    assert _verdicts(_study(AlignedMedianPruner(metric="roc_auc", align="lr_sum"), done), slow) == [False, False, False, False, True]
    assert _verdicts(_study(AlignedMedianPruner(metric="roc_auc", align="updates"), done), slow)[0] is True


def test_rows_without_the_aligned_key_are_not_judged():
    # Studies made before rows stored lr_sum: neither the judged trial nor an old complete
    # trial can be placed on that axis, so the rule stays silent rather than guess.
    done = [_lr_rows(1.6e-3, [0.99, 1.0]) for _ in range(3)]
    old = _rows(32, [0.0, 0.0], [0.5, 0.5])
    assert _verdicts(_study(AlignedMedianPruner(metric="roc_auc", align="lr_sum"), done), old) == [False, False]
    assert _verdicts(_study(AlignedMedianPruner(metric="roc_auc", align="lr_sum"), [old] * 3), _lr_rows(1.6e-3, [0.5, 0.5])) == [False, False]


def test_the_metric_is_read_from_the_rows_not_the_reported_value():
    # F1 0.0 after epoch 1 is below every complete trial's median F1 (0.2), yet its AUC is not.
    rows = _rows(32, [0.0, 0.95], [0.97, 1.0])
    assert _verdicts(_study(AlignedMedianPruner(metric="roc_auc", align="epochs"), DONE), rows) == [False, False]
    assert _verdicts(_study(AlignedMedianPruner(metric="f1", align="epochs"), DONE), rows)[0] is True


def test_the_trials_best_value_so_far_is_what_is_compared():
    # As in MedianPruner, a worse epoch is judged by the best so far: 0.99 is not below the
    # median 0.99 of the others' epoch 2, although this epoch's 0.5 is.
    rows = _rows(32, [0.5, 0.4], [0.99, 0.5])
    assert _verdicts(_study(AlignedMedianPruner(metric="roc_auc", align="epochs"), DONE), rows) == [False, False]


@pytest.mark.parametrize(("startup", "warmup", "expected"), [
    (3, 0, [True]),   # 3 complete trials, judged from epoch 1
    (4, 0, [False]),  # only 3 complete: not judged yet
    (3, 1, [False]),  # epoch 1 is inside the warm-up
])
def test_startup_trials_and_warmup_epochs(startup, warmup, expected):
    pruner = AlignedMedianPruner(metric="roc_auc", align="updates", startup_trials=startup, warmup_epochs=warmup)
    assert _verdicts(_study(pruner, DONE), _rows(32, [0.0], [0.5])) == expected


def test_a_trial_without_the_metric_is_not_judged():
    rows = [{"epoch": 1, "step": 32, "f1": 0.0, "roc_auc": math.nan}]
    assert _verdicts(_study(AlignedMedianPruner(metric="roc_auc"), DONE), rows) == [False]
    old = [{"epoch": 1, "step": 32, "f1": 0.0}]  # rows written before the metric existed
    assert _verdicts(_study(AlignedMedianPruner(metric="roc_auc"), DONE), old) == [False]


@pytest.mark.parametrize("f1", [[0.0, 0.0, 0.0], [0.2, 0.9, 0.9], [0.3, 0.8, 0.95], [0.1, 0.9, 0.7], [0.6, 0.6, 0.6]])
def test_objective_at_equal_epochs_decides_as_optunas_median_pruner(f1):
    rows = _rows(32, f1, [0.5] * 3)
    ours = _verdicts(_study(AlignedMedianPruner(metric="f1", align="epochs"), DONE), rows)
    theirs = _verdicts(_study(optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1), DONE), rows)
    assert ours == theirs


def test_build_pruner_uses_optunas_class_for_the_plain_median_rule():
    assert type(build_pruner(PrunerConfig(name="median"), 5)) is optuna.pruners.MedianPruner
    pruner = build_pruner(PrunerConfig(name="median", metric="roc_auc", align="updates", startup_trials=2), 5)
    assert isinstance(pruner, AlignedMedianPruner)
    assert (pruner.metric, pruner.align, pruner.startup_trials, pruner.reference) == ("roc_auc", "updates", 2, "median")
    assert build_pruner(PrunerConfig(name="median", align="updates"), 5, "accuracy").metric == "accuracy"


def test_the_default_pruner_is_the_best_trial_rule_on_roc_auc_with_a_one_se_margin():
    pruner = build_pruner(PrunerConfig(), 5)
    assert isinstance(pruner, AlignedMedianPruner)
    settings = (pruner.metric, pruner.align, pruner.margin_se, pruner.reference, pruner.startup_trials, pruner.warmup_epochs)
    assert settings == ("roc_auc", "updates", 1.0, "best", 1, 0)
    # Its settings may be changed one at a time; those that would make it another rule
    # are refused with the key and the way to that rule.
    assert build_pruner(PrunerConfig(margin_se=2.0, startup_trials=3), 5).margin_se == 2.0
    with pytest.raises(ConfigError, match=r"pruner.metric: name = \"best\" compares \"roc_auc\".*use name = \"median\""):
        PrunerConfig(metric="objective")
    with pytest.raises(ConfigError, match=r"pruner.reference: 'median' contradicts name = \"best\""):
        PrunerConfig(reference="median")
    with pytest.raises(ConfigError, match=r"pruner.reference: \"best\" needs margin_se > 0"):
        PrunerConfig(margin_se=0.0)


def test_roc_auc_is_sklearns_for_two_classes_and_the_mean_one_vs_rest_for_more():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 2)), rng.integers(0, 2, 50)
    z = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert roc_auc(labels, logits) == pytest.approx(roc_auc_score(labels, z[:, 1]))
    logits3, labels3 = rng.normal(size=(60, 3)), np.repeat([0, 1, 2], 20)
    z3 = np.exp(logits3) / np.exp(logits3).sum(axis=1, keepdims=True)
    assert roc_auc(labels3, logits3) == pytest.approx(roc_auc_score(labels3, z3, multi_class="ovr", average="macro"))
    assert math.isnan(roc_auc(np.zeros(5, dtype=int), logits[:5]))


def test_a_model_that_predicts_one_class_scores_f1_zero_but_its_ranking_counts():
    # "ham" (0) for every message, yet the two spam messages get the highest spam scores.
    labels = np.array([0, 0, 0, 0, 1, 1])
    logits = np.array([[3.0, 0.0], [2.9, 0.0], [2.8, 0.0], [2.7, 0.0], [2.0, 0.0], [1.9, 0.0]])
    out = compute_metrics_for("binary")(type("P", (), {"predictions": logits, "label_ids": labels})())
    assert out["f1"] == 0.0
    assert out["roc_auc"] == 1.0


def test_the_card_says_what_the_aligned_rule_compares():
    config = {"name": "median", "metric": "roc_auc", "align": "updates", "startup_trials": 3, "warmup_epochs": 0}
    assert describe_pruner(config, "f1", 5) == (
        "median rule on validation ROC AUC (3 startup trials, warm-up 0 epochs): from epoch 1 on, a trial stops when "
        "its best validation ROC AUC so far is below the median of the complete trials after at most as many optimiser updates"
    )
    by_lr = {**config, "align": "lr_sum"}
    assert describe_pruner(by_lr, "f1", 5).endswith("after at most as large a sum of the learning rates of their optimiser updates")
    plain = {"name": "median", "metric": "objective", "align": "epochs", "startup_trials": 3, "warmup_epochs": 0}
    assert describe_pruner(plain, "f1", 5).startswith("MedianPruner (3 startup trials, warm-up 0 epochs)")
    # The default, as a new study stores it.
    assert describe_pruner(asdict(PrunerConfig()), "f1", 5) == (
        "best-trial rule on validation ROC AUC (1 startup trial, warm-up 0 epochs): from epoch 1 on, a trial stops when its best "
        "validation ROC AUC so far is below the best of the complete trials after at most as many optimiser updates "
        "by more than 1 standard error of the difference (Hanley and McNeil)"
    )


def _with_se(rows: list[dict], labels: np.ndarray) -> list[dict]:
    return [{**row, "roc_auc_se": roc_auc_se(labels, row["roc_auc"])} for row in rows]


# The validation split of the pruning benchmark: 32 spam messages, 224 ham.
SPLIT = np.array([1] * 32 + [0] * 224)


def test_roc_auc_se_is_hanley_and_mcneils_and_shrinks_as_the_auc_nears_one():
    # Hanley and McNeil's formula is exact where scores are exponential: positives with mean
    # A / (1 - A), negatives with mean 1 have AUC A. The spread of the AUC over 600 drawn
    # validation splits of 32 spam and 224 ham (class 1 the positives) is the formula's.
    rng = np.random.default_rng(0)
    for auc in (0.8, 0.99):
        drawn = [roc_auc_score(SPLIT, np.r_[rng.exponential(auc / (1 - auc), 32), rng.exponential(1.0, 224)]) for _ in range(600)]
        assert np.std(drawn) == pytest.approx(roc_auc_se(SPLIT, auc), rel=0.1), auc
    errors = [roc_auc_se(SPLIT, a) for a in (0.9, 0.989, 0.999, 1.0)]
    assert errors == sorted(errors, reverse=True) and errors[-1] == 0.0
    assert errors[1] == pytest.approx(0.01305, abs=1e-5)
    assert math.isnan(roc_auc_se(np.zeros(4, dtype=int), 0.5)) and math.isnan(roc_auc_se(SPLIT, math.nan))
    three = np.repeat([0, 1, 2], 20)
    one_vs_rest = roc_auc_se(np.array([1] * 20 + [0] * 40), 0.9)
    assert roc_auc_se(three, 0.9) == pytest.approx(one_vs_rest / math.sqrt(3))


def test_a_margin_of_standard_errors_spares_gaps_the_split_cannot_resolve():
    # Complete trials near AUC 0.999 after 32 updates; a trial at 0.989 is 0.010 below
    # their median: 0.8 standard errors of the difference, so margin 1 spares it, margin 0.5
    # and the plain rule stop it. A trial at 0.90 is 2.6 standard errors below: all stop it.
    done = [_with_se(_rows(32, [0.5, 0.9], [a, 1.0]), SPLIT) for a in (0.998, 0.999, 0.9995)]
    close = _with_se(_rows(32, [0.4, 0.9], [0.989, 0.99]), SPLIT)
    far = _with_se(_rows(32, [0.0, 0.0], [0.90, 0.95]), SPLIT)
    for margin, expected in ((0.0, True), (0.5, True), (1.0, False)):
        pruner = AlignedMedianPruner(metric="roc_auc", align="updates", margin_se=margin)
        assert _verdicts(_study(pruner, done), close)[0] is expected, margin
        assert _verdicts(_study(pruner, done), far)[0] is True, margin
    verdict = AlignedMedianPruner(metric="roc_auc", margin_se=1.0).judge(_study(optuna.pruners.NopPruner(), done), close[:1])
    assert verdict.margin == pytest.approx(math.hypot(roc_auc_se(SPLIT, 0.989), roc_auc_se(SPLIT, 0.999)))
    # Rows without standard errors (a study from before they were stored) are not judged.
    pruner = AlignedMedianPruner(metric="roc_auc", margin_se=1.0)
    assert _verdicts(_study(pruner, [_rows(32, [0.5], [0.999])] * 3), _rows(32, [0.0], [0.5])) == [False]


def test_margin_se_needs_the_roc_auc_and_the_card_names_it():
    pruner = build_pruner(PrunerConfig(name="median", metric="roc_auc", align="updates", margin_se=1.0), 5)
    assert isinstance(pruner, AlignedMedianPruner) and pruner.margin_se == 1.0
    with pytest.raises(ConfigError, match=r"pruner.margin_se: needs metric = \"roc_auc\""):
        PrunerConfig(name="median", margin_se=1.0)
    with pytest.raises(ConfigError, match="pruner.margin_se"):
        PrunerConfig(name="median", metric="roc_auc", margin_se=-1.0)
    config = {"name": "median", "metric": "roc_auc", "align": "updates", "startup_trials": 3, "warmup_epochs": 0, "margin_se": 1.0}
    assert describe_pruner(config, "f1", 5).endswith(
        "below the median of the complete trials after at most as many optimiser updates by more than 1 standard error of the difference (Hanley and McNeil)"
    )
    assert describe_pruner({**config, "margin_se": 0.5}, "f1", 5).endswith("by more than 0.5 standard errors of the difference (Hanley and McNeil)")


def test_reference_best_stops_a_trial_clearly_worse_than_the_best_even_above_the_median():
    # Complete trials at 0.95, 0.96 and 0.9995 after 32 updates. A trial at 0.97 is above
    # their median, but 0.0295 below the best: more than one standard error of the
    # difference (0.022). A trial at 0.99 is within it and goes on.
    done = [_with_se(_rows(32, [0.5, 0.9], [a, 1.0]), SPLIT) for a in (0.95, 0.96, 0.9995)]
    best_rule = AlignedMedianPruner(metric="roc_auc", align="updates", margin_se=1.0, reference="best")
    median_rule = AlignedMedianPruner(metric="roc_auc", align="updates", margin_se=1.0)
    worse = _with_se(_rows(32, [0.3], [0.97]), SPLIT)
    assert _verdicts(_study(best_rule, done), worse) == [True]
    assert _verdicts(_study(median_rule, done), worse) == [False]
    assert _verdicts(_study(best_rule, done), _with_se(_rows(32, [0.3], [0.99]), SPLIT)) == [False]
    verdict = best_rule.judge(_study(optuna.pruners.NopPruner(), done), worse)
    assert verdict.against == 0.9995
    assert verdict.margin == pytest.approx(math.hypot(roc_auc_se(SPLIT, 0.97), roc_auc_se(SPLIT, 0.9995)))
    with pytest.raises(ConfigError, match=r"pruner.reference: \"best\" needs margin_se > 0"):
        PrunerConfig(name="median", metric="roc_auc", reference="best")
    assert build_pruner(PrunerConfig(name="median", metric="roc_auc", margin_se=1.0, reference="best"), 5).reference == "best"
    config = {"name": "median", "metric": "roc_auc", "align": "updates", "startup_trials": 3, "warmup_epochs": 0, "margin_se": 1.0, "reference": "best"}
    assert "is below the best of the complete trials after at most as many optimiser updates by more than 1" in describe_pruner(config, "f1", 5)
