"""The pruners: the best-trial ROC AUC rule on in-memory studies with hand-written epoch rows,
and what builds each ``[pruner] name``."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from sklearn.metrics import roc_auc_score

from hpsearch import schema
from hpsearch.config import PrunerConfig, SearchConfig, load_config
from hpsearch.errors import ConfigError
from hpsearch.events import RunListener
from hpsearch.search.pruners import BestTrialPruner, build_pruner
from hpsearch.training.metrics import MetricsComputer, roc_auc, roc_auc_se

optuna.logging.set_verbosity(optuna.logging.WARNING)

# The validation split of the pruning benchmark: 32 spam messages, 224 ham.
SPLIT = np.array([1] * 32 + [0] * 224)


def _rows(steps_per_epoch: int, f1: list[float], auc: list[float]) -> list[dict]:
    """Epoch rows with ROC AUC standard errors on SPLIT, as the epoch callback stores them."""
    return [
        schema.make_row(
            epoch=e,
            step=e * steps_per_epoch,
            train_loss=None,
            eval_loss=0.5,
            scores={"f1": a, "roc_auc": b, "roc_auc_se": roc_auc_se(SPLIT, b)},
            confusion=[[1, 0], [0, 1]],
        )
        for e, (a, b) in enumerate(zip(f1, auc, strict=True), 1)
    ]


def _study(pruner: optuna.pruners.BasePruner, complete: list[list[dict]]) -> optuna.Study:
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for rows in complete:
        trial = study.ask()
        schema.record_rows(trial, rows)
        for row in rows:
            trial.report(row["f1"], row["epoch"])
        study.tell(trial, rows[-1]["f1"])
    return study


def _verdicts(study: optuna.Study, rows: list[dict]) -> list[bool]:
    """should_prune after each of the rows, as the epoch callback asks it."""
    trial = study.ask()
    out = []
    for i, row in enumerate(rows):
        schema.record_rows(trial, rows[: i + 1])
        trial.report(row["f1"], row["epoch"])
        out.append(trial.should_prune())
    return out


# Three batch-8 trials: 32 updates an epoch. Their ROC AUC after epoch 1 is 0.90, 0.96, 0.99.
DONE = [
    _rows(32, [0.0, 0.7, 0.9], [0.90, 0.98, 0.99]),
    _rows(32, [0.2, 0.9, 0.9], [0.96, 0.99, 1.0]),
    _rows(32, [0.5, 0.9, 0.9], [0.99, 1.0, 1.0]),
]


def test_a_trial_is_not_judged_before_any_complete_trial_made_as_few_updates():
    # Batch 32 on the same data: 8 updates an epoch, fewer than the 32 of anyone's first epoch.
    slow = _rows(8, [0.0, 0.0, 0.0], [0.5, 0.5, 0.5])
    assert _verdicts(_study(BestTrialPruner(), DONE), slow) == [False, False, False]


def test_each_complete_trial_is_read_at_its_last_epoch_within_as_many_updates():
    # 64 updates after two epochs at batch 16: the complete trials are read after their epoch 2.
    rows = _rows(32, [0.0, 0.0], [0.93, 0.993])
    verdict = BestTrialPruner().judge(_study(optuna.pruners.NopPruner(), DONE), rows)
    assert (verdict.best, verdict.best_trial, verdict.updates) == (1.0, 2, 64)
    assert BestTrialPruner().judge(_study(optuna.pruners.NopPruner(), DONE), rows[:1]).best == 0.99


def test_the_trials_best_value_so_far_is_what_is_compared():
    rows = _rows(32, [0.0, 0.0], [0.99, 0.5])
    assert _verdicts(_study(BestTrialPruner(), DONE), rows) == [False, False]


def test_the_best_complete_trial_is_the_reference_not_the_median():
    # Complete trials at 0.95, 0.96 and 0.9995 after 32 updates. A trial at 0.97 is above
    # their median but 0.0295 below the best: more than one standard error of the difference.
    done = [_rows(32, [0.5, 0.9], [a, 1.0]) for a in (0.95, 0.96, 0.9995)]
    worse = _rows(32, [0.3], [0.97])
    assert _verdicts(_study(BestTrialPruner(), done), worse) == [True]
    assert _verdicts(_study(BestTrialPruner(), done), _rows(32, [0.3], [0.99])) == [False]
    verdict = BestTrialPruner().judge(_study(optuna.pruners.NopPruner(), done), worse)
    assert (verdict.best, verdict.best_trial) == (0.9995, 2)
    assert verdict.margin == pytest.approx(math.hypot(roc_auc_se(SPLIT, 0.97), roc_auc_se(SPLIT, 0.9995)))


def test_a_margin_of_standard_errors_spares_gaps_the_split_cannot_resolve():
    # A trial at 0.989 is 0.010 below the best 0.9995: under one standard error of the
    # difference, so margin 1 spares it and margin 0.5 stops it. At 0.90 every margin stops it.
    done = [_rows(32, [0.5, 0.9], [a, 1.0]) for a in (0.998, 0.999, 0.9995)]
    close, far = _rows(32, [0.4, 0.9], [0.989, 0.99]), _rows(32, [0.0, 0.0], [0.90, 0.95])
    for margin, expected in ((0.0, True), (0.5, True), (1.0, False)):
        assert _verdicts(_study(BestTrialPruner(margin_se=margin), done), close)[0] is expected, margin
        assert _verdicts(_study(BestTrialPruner(margin_se=margin), done), far)[0] is True, margin


@pytest.mark.parametrize(
    ("startup", "warmup", "expected"), [(1, 0, [True, True]), (4, 0, [False, False]), (1, 1, [False, True])]
)
def test_startup_trials_and_warmup_epochs(startup, warmup, expected):
    pruner = BestTrialPruner(startup_trials=startup, warmup_epochs=warmup)
    assert _verdicts(_study(pruner, DONE), _rows(32, [0.0, 0.0], [0.5, 0.5])) == expected


def test_a_split_with_one_class_gives_no_roc_auc_and_judges_nothing():
    rows = _rows(32, [0.0], [math.nan])
    assert _verdicts(_study(BestTrialPruner(), DONE), rows) == [False]


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("best", BestTrialPruner),
        ("median", optuna.pruners.MedianPruner),
        ("halving", optuna.pruners.SuccessiveHalvingPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_each_pruner_name_builds_its_pruner(name, cls):
    assert isinstance(build_pruner(PrunerConfig(name=name), 5), cls)


def test_the_default_pruner_is_the_best_trial_rule_with_one_startup_trial_and_a_one_se_margin():
    pruner = build_pruner(SearchConfig().pruner, 5)
    assert (pruner.startup_trials, pruner.warmup_epochs, pruner.margin_se) == (1, 0, 1.0)
    assert PrunerConfig(name="median").startup_trials == 3


@pytest.mark.parametrize("key", ["metric", "align", "reference"])
def test_the_research_settings_are_not_user_settings(tmp_path, key):
    path = tmp_path / "c.toml"
    path.write_text(f'[pruner]\n{key} = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"unknown key 'pruner.{key}'"):
        load_config(path)


def test_margin_se_must_not_be_negative():
    with pytest.raises(ConfigError, match=r"pruner.margin_se: expected a number in \[0, inf\], got -1.0"):
        PrunerConfig(margin_se=-1.0)


def test_the_pruned_reason_puts_the_criterion_first():
    from hpsearch.training.objective import EpochCallback

    study = _study(BestTrialPruner(), DONE)
    trial = study.ask()
    callback = EpochCallback(trial, SearchConfig(), RunListener(), n_labels=2)
    callback.rows = _rows(32, [0.0], [0.7451])
    reason = callback._why_pruned(1, 0.0)
    margin = math.hypot(roc_auc_se(SPLIT, 0.7451), roc_auc_se(SPLIT, 0.99))
    assert reason == f"pruned at epoch 1: roc_auc 0.7451 < 0.9900 - {margin:.4f} (trial 2 at <=32 updates)"


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
    computer = MetricsComputer(2)
    out = computer(type("P", (), {"predictions": logits, "label_ids": labels})())
    assert out["f1"] == 0.0
    assert out["roc_auc"] == 1.0
    assert computer.last_confusion == [[4, 0], [2, 0]]  # both spam messages called ham


def test_roc_auc_se_is_hanley_and_mcneils_and_shrinks_as_the_auc_nears_one():
    # Hanley and McNeil's formula is exact where scores are exponential: positives with mean
    # A / (1 - A), negatives with mean 1 have AUC A. The spread of the AUC over 600 drawn
    # validation splits of 32 spam and 224 ham (class 1 the positives) is the formula's.
    rng = np.random.default_rng(0)
    for auc in (0.8, 0.99):
        drawn = [
            roc_auc_score(SPLIT, np.r_[rng.exponential(auc / (1 - auc), 32), rng.exponential(1.0, 224)])
            for _ in range(600)
        ]
        assert np.std(drawn) == pytest.approx(roc_auc_se(SPLIT, auc), rel=0.1), auc
    errors = [roc_auc_se(SPLIT, a) for a in (0.9, 0.989, 0.999, 1.0)]
    assert errors == sorted(errors, reverse=True) and errors[-1] == 0.0
    assert errors[1] == pytest.approx(0.01305, abs=1e-5)
    assert math.isnan(roc_auc_se(np.zeros(4, dtype=int), 0.5)) and math.isnan(roc_auc_se(SPLIT, math.nan))
    three = np.repeat([0, 1, 2], 20)
    one_vs_rest = roc_auc_se(np.array([1] * 20 + [0] * 40), 0.9)
    assert roc_auc_se(three, 0.9) == pytest.approx(one_vs_rest / math.sqrt(3))
