"""`hpsearch card`: the model card from storage alone.

Most tests use a hand-made study whose golden trial carries the per-epoch rows of a
published bert-base-cased Trainer card (685 steps per epoch, 5 epochs, a balanced
validation split of 1368 examples). Every row holds the confusion matrix of its epoch and
metrics computed, unrounded, from it, which reproduce the published 4-decimal values; the
study's settings and rows are built through :mod:`hpsearch.schema`, as `hpsearch run`
builds them. The end-to-end tests run a real tiny-model search through the CLI. PNG export
is switched off (as on a machine without Chrome) except in the tests of the PNG path, so
the cards are deterministic.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from conftest import chrome_binary, tiny_run_args
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

import hpsearch.views.plots as plots
from hpsearch import schema
from hpsearch.analysis.scores import classification_metrics
from hpsearch.bestmodel import MARKER_FILE, Marker
from hpsearch.card.facts import CardFacts, gather
from hpsearch.card.markdown import RESULTS_HEADER, md_cell, md_inline, md_text
from hpsearch.card.render import MARKER, write_card
from hpsearch.config import PrunerConfig, Recipe, SearchConfig
from hpsearch.data import Task
from hpsearch.errors import CardError, StorageError
from hpsearch.formatting import fmt_metric
from hpsearch.schema import StudySettings
from hpsearch.search.storage import redact
from hpsearch.training.space import recipe_params, training_values

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "card_golden.md"
REGEN = os.environ.get("HPSEARCH_REGEN_GOLDEN") == "1"

GOLDEN_ROWS = [
    "| 1 | 685 | 0.6956 | 0.6018 | 0.5365 | 0.5275 | 0.7003 |",
    "| 2 | 1370 | 0.6986 | 0.6667 | 0.5 | 0.5 | 1.0 |",
    "| 3 | 2055 | 0.6983 | 0.6667 | 0.5 | 0.5 | 1.0 |",
    "| 4 | 2740 | 0.6830 | 0.5235 | 0.5636 | 0.5764 | 0.4795 |",
    "| 5 | 3425 | 0.6806 | 0.6088 | 0.5914 | 0.5839 | 0.6360 |",
]
GOLDEN_SUMMARY = ["- Loss: 0.6806", "- F1: 0.6088", "- Accuracy: 0.5914", "- Precision: 0.5839", "- Recall: 0.6360"]

# --------------------------------------------------------------------------- the hand-made study

STORAGE = "sqlite:///studies/hpsearch.db"  # relative: every test runs in its own folder
VERSIONS = {
    "Transformers": "4.40.0",
    "Pytorch": "2.2.1+cu121",
    "Datasets": "2.18.0",
    "Tokenizers": "0.15.2",
    "Optuna": "3.6.0",
    "hpsearch": "0.1.0",
}
CREATED = "2024-04-02T10:00:00+00:00"
VALIDATION, POSITIVES, STEPS_PER_EPOCH = 1368, 684, 685
OPTIM = "adamw_torch_fused"  # what TrainingArguments resolves its default optimizer to on torch 2.8+
# Examples per class (label order) of each split; the validation split is balanced.
BINARY_COUNTS = {"train": [2740, 2740], "validation": [VALIDATION - POSITIVES, POSITIVES], "test": [684, 684]}

# (eval_loss, TP, FP) per epoch; FN and TN follow from 684 positives and 684 negatives.
GOLDEN_EPOCHS = [
    (0.695612, 479, 429),
    (0.698571, 684, 684),  # every example called positive
    (0.698344, 684, 684),
    (0.683012, 328, 241),
    (0.680638, 435, 310),
]
RECIPE_EPOCHS = [(0.6951, 402, 371), (0.6912, 455, 390), (0.6894, 430, 352), (0.6880, 441, 360), (0.6871, 420, 343)]
SPACE = {
    "learning_rate": FloatDistribution(1e-05, 1e-04, log=True),
    "per_device_train_batch_size": CategoricalDistribution((8, 16, 32)),
    "warmup_ratio": FloatDistribution(0.0, 0.2),
    "weight_decay": FloatDistribution(0.0, 0.1),
}
GOLDEN_PARAMS = {"learning_rate": 3e-05, "per_device_train_batch_size": 8, "warmup_ratio": 0.1, "weight_decay": 0.01}


def binary_confusion(tp: int, fp: int) -> list[list[int]]:
    """``[[TN, FP], [FN, TP]]`` on the golden validation split."""
    return [[(VALIDATION - POSITIVES) - fp, fp], [POSITIVES - tp, tp]]


def epoch_row(epoch: int, loss: float, tp: int, fp: int) -> schema.EpochRow:
    """One epoch row as the objective stores it, its metrics computed from its confusion counts."""
    fn, tn = POSITIVES - tp, (VALIDATION - POSITIVES) - fp
    scores = {
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "accuracy": (tp + tn) / VALIDATION,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / POSITIVES,
        "roc_auc": 0.6,
        "roc_auc_se": 0.015,
    }
    return schema.make_row(
        epoch=epoch,
        step=STEPS_PER_EPOCH * epoch,
        train_loss=loss + 0.01,
        eval_loss=loss,
        scores=scores,
        confusion=binary_confusion(tp, fp),
    )


def epoch_rows(spec: list[tuple[float, int, int]]) -> list[schema.EpochRow]:
    return [epoch_row(i + 1, *s) for i, s in enumerate(spec)]


def confusion_row(epoch: int, confusion: list[list[int]], *, average: str, steps: int = 10) -> schema.EpochRow:
    """An epoch row of any task, its metrics computed by hpsearch's own metrics from the matrix."""
    k = len(confusion)
    truth = np.repeat(np.repeat(np.arange(k), k), [n for line in confusion for n in line])
    predicted = np.repeat(np.tile(np.arange(k), k), [n for line in confusion for n in line])
    scores = classification_metrics(truth, predicted, average) | {"roc_auc": 0.6, "roc_auc_se": 0.03}
    return schema.make_row(
        epoch=epoch, step=steps * epoch, train_loss=1.0, eval_loss=1.0, scores=scores, confusion=confusion
    )


def search_config(**overrides: Any) -> SearchConfig:
    # The median pruner, whose reason the pruned trial 2 carries; the last epoch shipped, as
    # in the Trainer's card the golden file reproduces.
    values = {
        "study": "hpsearch",
        "storage": STORAGE,
        "model": "bert-base-cased",
        "dataset": "acme/product-reviews",
        "recipe": Recipe(num_train_epochs=5),
        "pruner": PrunerConfig(name="median"),
        "checkpoint": "last",
    }
    return SearchConfig(**{**values, **overrides})


def make_task(
    *,
    name: str = "acme/product-reviews",
    hub_id: str | None = "acme/product-reviews",
    labels: tuple[str, ...] = ("negative", "positive"),
    text_column: str = "text",
    counts: dict[str, list[int]] | None = None,
) -> Task:
    counts = counts or BINARY_COUNTS
    splits = {}
    for split, per_class in counts.items():
        ids = [label for label, n in enumerate(per_class) for _ in range(n)]
        splits[split] = {text_column: [""] * len(ids), "label": ids}
    return Task(
        splits=splits, text_column=text_column, text_pair_column=None, label_names=labels, name=name, hub_id=hub_id
    )


def settings_of(config: SearchConfig, task: Task) -> StudySettings:
    """The study settings `hpsearch run` writes for this configuration and data."""
    return StudySettings(
        config=config.to_dict() | {"storage": redact(config.storage)},
        data=task.facts(),
        base_model="bert-base-cased",
        versions=VERSIONS,
        created=CREATED,
    )


def make_study(config: SearchConfig | None = None, task: Task | None = None, *, trials: bool = True) -> optuna.Study:
    """Recipe trial 0, the golden trial 1 (best, kept, with test metrics), pruned 2, failed 3."""
    config = config or search_config()
    task = task or make_task()
    Path("studies").mkdir(exist_ok=True)
    study = optuna.create_study(study_name=config.study, storage=config.storage, direction="maximize")
    schema.write_settings(study, settings_of(config, task))
    if not trials:
        return study
    add_trial(
        study,
        config,
        recipe_params(config.recipe, config.space),
        epoch_rows(RECIPE_EPOCHS),
        attrs=schema.recipe_attrs(),
    )
    test = epoch_row(5, 0.684301, 425, 320)
    test_metrics = {"loss": test["eval_loss"], **{k: test[k] for k in schema.METRICS}}
    add_trial(
        study,
        config,
        GOLDEN_PARAMS,
        epoch_rows(GOLDEN_EPOCHS),
        attrs={schema.KEPT_MODEL: True, schema.TEST_METRICS: test_metrics},
    )
    add_trial(
        study,
        config,
        {"learning_rate": 1.2e-05, "per_device_train_batch_size": 32, "warmup_ratio": 0.15, "weight_decay": 0.05},
        epoch_rows([(0.6932, 300, 330), (0.6930, 280, 300)]),
        state=TrialState.PRUNED,
        attrs={
            schema.PRUNED_REASON: (
                "pruned after epoch 2 by the median pruner: validation f1 0.4338 below the median 0.6270 of 2 "
                "complete trials at that epoch"
            )
        },
    )
    add_trial(
        study,
        config,
        {"learning_rate": 9e-05, "per_device_train_batch_size": 32, "warmup_ratio": 0.02, "weight_decay": 0.08},
        epoch_rows([(0.7101, 684, 684)]),
        state=TrialState.FAIL,
        attrs={schema.FAIL_REASON: "out of memory: CUDA out of memory. Tried to allocate 96.00 MiB"},
    )
    return study


def add_trial(
    study: optuna.Study,
    config: SearchConfig,
    params: dict[str, Any],
    rows: list[schema.EpochRow],
    *,
    state: TrialState = TrialState.COMPLETE,
    attrs: dict[str, Any] | None = None,
) -> None:
    """A finished trial shaped as the objective leaves it."""
    training_args = {**training_values(config.recipe, params), "optim": OPTIM}
    user_attrs: dict[str, Any] = {
        schema.WORKER: "host:1",
        schema.TRAINING_ARGS: training_args,
        schema.EPOCHS: rows,
        **(attrs or {}),
    }
    value = None
    if state == TrialState.COMPLETE:
        shipped = max(rows, key=lambda r: r[config.objective]) if config.checkpoint == "best" else rows[-1]
        user_attrs.setdefault(schema.SHIPPED_EPOCH, shipped["epoch"])
        user_attrs.setdefault(schema.CHECKPOINT_RULE, config.checkpoint)
        value = rows[user_attrs[schema.SHIPPED_EPOCH] - 1][config.objective]
    intermediate = {r["epoch"]: r[config.objective] for r in rows} if state != TrialState.FAIL else {}
    study.add_trial(
        create_trial(
            state=state,
            value=value,
            params=params,
            distributions={k: SPACE[k] for k in params},
            user_attrs=user_attrs,
            intermediate_values=intermediate,
        )
    )


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture
def no_png(monkeypatch: pytest.MonkeyPatch) -> None:
    """PNG export fails as kaleido does without Chrome."""

    def fail(figs, folder):
        raise plots.PngUnavailable("no PNG engine in this test")

    monkeypatch.setattr(plots, "render_pngs", fail)


@pytest.fixture
def golden(workdir: Path, no_png: None) -> SearchConfig:
    make_study()
    return search_config()


def _card(config: SearchConfig, trial: str = "best", **kwargs: Any) -> str:
    return write_card(config, trial, **kwargs).path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- golden


@pytest.mark.parametrize("value", [0.63601, 0.5, 1.0, 0.680638, 0.6666666666666666, 685, 5e-05, 1e-08, 0.0, 0.1234])
def test_numbers_are_formatted_as_the_trainer_formats_them(value):
    from transformers.modelcard import _maybe_round

    assert fmt_metric(value) == _maybe_round(value)


def test_golden_rows_and_summary_match_the_published_card(golden):
    text = _card(golden)
    lines = text.splitlines()
    start = lines.index(RESULTS_HEADER)
    assert lines[start + 2 : start + 7] == GOLDEN_ROWS
    assert lines[start + 7] == ""
    first = lines.index(GOLDEN_SUMMARY[0])
    assert lines[first - 1] == "It achieves the following results on the evaluation set:"
    assert lines[first : first + 5] == GOLDEN_SUMMARY


def test_the_shipped_epoch_is_named_below_the_table(golden):
    assert "The model is the checkpoint of epoch 5, the last epoch (checkpoint rule `last`)." in _card(golden)


def test_under_the_default_rule_the_card_names_the_best_epoch(workdir, no_png):
    config = search_config(checkpoint=SearchConfig().checkpoint)
    make_study(config)
    text = _card(config, "1")
    rows = schema.rows(optuna.load_study(study_name="hpsearch", storage=STORAGE).trials[1])
    best = max(rows, key=lambda r: r["f1"])
    assert best["epoch"] != rows[-1]["epoch"]  # the golden trial peaks before its last epoch
    assert (
        f"The model is the checkpoint of epoch {best['epoch']}, "
        "the epoch with the best validation F1 (checkpoint rule `best`)." in text
    )
    assert "each trial ships its best epoch" in text
    assert (
        f"- Epoch: the shipped epoch ({best['epoch']}) is the best of the trial's 5 epochs "
        "on this same validation split, which adds to the optimism; the test split below took part in neither choice."
        in text
    )


def test_whole_card_matches_the_golden_file(golden):
    text = _card(golden)
    if REGEN:
        GOLDEN.write_text(text, encoding="utf-8")
    assert GOLDEN.is_file(), "run with HPSEARCH_REGEN_GOLDEN=1 to write the golden card"
    assert text == GOLDEN.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- storage, through the schema


def test_card_modules_read_storage_only_through_the_schema():
    # A stored key spelled anywhere but hpsearch/schema.py would drift from it; the keys of
    # the stored configuration (SearchConfig.to_dict(), e.g. "recipe") are not storage keys.
    keys = (set(schema.TRIAL_KEYS) | {schema.STUDY_KEY, MARKER_FILE}) - set(SearchConfig().to_dict())
    folder = Path(schema.__file__).parent / "card"
    for path in sorted(folder.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "user_attrs" not in text and "set_user_attr" not in text, path.name
        spelled = {key for key in keys if f'"{key}"' in text or f"'{key}'" in text}
        assert not spelled, f"{path.name} spells stored keys {sorted(spelled)}; use hpsearch.schema"


def test_a_study_written_in_an_older_schema_is_refused_in_one_line(workdir, cli, no_png):
    study = make_study()
    study.set_user_attr(schema.STUDY_KEY, {**study.user_attrs[schema.STUDY_KEY], "schema": schema.SCHEMA_VERSION - 1})
    message = (
        f"study 'hpsearch' was written in hpsearch schema {schema.SCHEMA_VERSION - 1}, this hpsearch reads schema "
        f"{schema.SCHEMA_VERSION}; "
    )
    with pytest.raises(StorageError, match=rf"^{re.escape(message)}start a new study"):
        write_card(search_config(), "best")
    code, out, err = cli("card", "best")
    assert code == 2 and out == ""
    assert _one_error_line(err).startswith(f"hpsearch: error: {message}")
    assert not Path("studies/hpsearch/best-model").exists()


def test_a_study_without_settings_is_refused_in_one_line(workdir, cli, no_png):
    Path("studies").mkdir()
    optuna.create_study(study_name="hpsearch", storage=STORAGE, direction="maximize")
    with pytest.raises(StorageError, match=r"^study 'hpsearch' was not made by `hpsearch run`"):
        write_card(search_config(), "best")
    code, out, err = cli("card", "best")
    assert code == 2 and out == ""
    assert _one_error_line(err).startswith("hpsearch: error: study 'hpsearch' was not made by `hpsearch run`")


# --------------------------------------------------------------------------- one-class epochs and the baseline


def test_single_class_epochs_are_reported_with_the_all_positive_scores(golden):
    text = _card(golden)
    assert (
        "Epochs 2 and 3 predicted `positive` for every validation example (recall 1.0, precision 0.5): "
        "the all-positive predictor scores F1 0.6667, accuracy 0.5, precision 0.5 and recall 1.0"
    ) in text
    assert "Epoch 1 predicted" not in text and "Epoch 4 predicted" not in text


def test_an_all_negative_epoch_is_found_from_its_confusion_matrix(workdir, no_png):
    config = search_config()
    study = make_study(config)
    add_trial(study, config, GOLDEN_PARAMS, epoch_rows([(0.6932, 0, 0), (0.69, 300, 250)]))
    text = _card(config, "4")
    assert (
        "Epoch 1 predicted `negative` for every validation example (recall 0.0, precision 0.0): "
        "the all-negative predictor scores F1 0.0, accuracy 0.5, precision 0.0 and recall 0.0"
    ) in text


# 3 classes of 40, 30 and 30 validation examples. Epoch 2 calls everything "a", epoch 3
# everything "b": two runs, not one.
MACRO_LABELS = ("a", "b", "c")
MACRO_COUNTS = {"train": [80, 60, 60], "validation": [40, 30, 30], "test": [40, 30, 30]}
MACRO_EPOCHS = [
    [[30, 5, 5], [6, 20, 4], [7, 3, 20]],
    [[40, 0, 0], [30, 0, 0], [30, 0, 0]],
    [[0, 40, 0], [0, 30, 0], [0, 30, 0]],
    [[33, 4, 3], [5, 22, 3], [4, 2, 24]],
]


@pytest.fixture
def macro(workdir: Path, no_png: None) -> SearchConfig:
    config = search_config()
    study = make_study(config, make_task(labels=MACRO_LABELS, counts=MACRO_COUNTS), trials=False)
    rows = [confusion_row(i + 1, c, average="macro") for i, c in enumerate(MACRO_EPOCHS)]
    add_trial(study, config, GOLDEN_PARAMS, rows, attrs=schema.recipe_attrs())
    return config


def test_single_class_epochs_of_a_macro_averaged_task_are_found(macro):
    text = _card(macro)
    assert (
        "Epoch 2 predicted `a` for every validation example (recall 0.3333, precision 0.1333): "
        "a predictor of that one class scores F1 0.1905, accuracy 0.4, precision 0.1333 and recall 0.3333 "
        "on this validation split, so that epoch learned nothing beyond the class balance."
    ) in text
    assert (
        "Epoch 3 predicted `b` for every validation example (recall 0.3333, precision 0.1000): a predictor of that "
        "one class scores F1 0.1538, accuracy 0.3," in text
    )
    assert "- Single-class epochs: 2; 3 (see Training results)." in text


def test_single_class_runs_and_scores_come_from_the_confusion_matrices():
    from hpsearch.card.trust import single_class_epochs

    rows = [
        confusion_row(i + 1, c, average="macro")
        for i, c in enumerate([MACRO_EPOCHS[0], MACRO_EPOCHS[1], MACRO_EPOCHS[1], MACRO_EPOCHS[2]])
    ]
    for row in rows:  # scores that disagree with the matrix: the matrix decides
        row.update(f1=0.5, accuracy=0.5, precision=0.5, recall=0.5)
    trial = create_trial(state=TrialState.PRUNED, params={}, distributions={}, user_attrs={schema.EPOCHS: rows})
    settings = settings_of(search_config(), make_task(labels=MACRO_LABELS, counts=MACRO_COUNTS))
    facts = CardFacts("s", "sqlite:///x.db", trial, False, settings, [trial])
    assert single_class_epochs(facts) == [
        {
            "kind": "one class",
            "label": "a",
            "epochs": [2, 3],
            "scores": {"f1": "0.1905", "accuracy": "0.4", "precision": "0.1333", "recall": "0.3333"},
        },
        {
            "kind": "one class",
            "label": "b",
            "epochs": [4],
            "scores": {"f1": "0.1538", "accuracy": "0.3", "precision": "0.1000", "recall": "0.3333"},
        },
    ]


def test_the_macro_baseline_is_the_majority_class_and_the_split_is_counted_by_class(macro):
    text = _card(macro)
    assert "- Validation split: 100 examples (40 `a`, 30 `b`, 30 `c`)." in text
    assert (
        "- Baseline: predicting `a`, the majority class, for every example scores F1 0.1905 and accuracy 0.4 on this "
        "validation split.\n" in text
    )
    assert "(macro average over 3 classes)" in text


def test_a_macro_f1_gets_a_bootstrap_interval_around_it(macro):
    text = _card(macro)
    f1 = schema.rows(optuna.load_study(study_name="hpsearch", storage=STORAGE).trials[0])[-1]["f1"]
    found = re.search(
        rf"- F1 {re.escape(fmt_metric(f1))}: 95% bootstrap interval (0\.\d+) to (0\.\d+) \(2000 resamples", text
    )
    assert found and float(found[1]) < f1 < float(found[2])


@pytest.mark.parametrize(
    ("confusion", "average"),
    [
        (binary_confusion(435, 310), "binary"),
        ([[30, 5, 5], [6, 20, 4], [7, 3, 20]], "macro"),
    ],
)
def test_the_f1_bootstrap_reads_the_confusion_matrix(confusion, average):
    from hpsearch.analysis.intervals import bootstrap_f1_interval

    row = confusion_row(1, confusion, average=average)
    low, high = bootstrap_f1_interval(confusion, average)
    assert low < row["f1"] < high < low + 0.2


def test_a_constant_baseline_that_beats_the_model_is_said(golden):
    text = _card(golden)
    assert "predicting `positive` for every example scores F1 0.6667 and accuracy 0.5" in text
    assert "This trivial predictor's F1 is at least this model's." in text


def test_no_f1_interval_for_an_epoch_with_no_true_positive(workdir, no_png):
    config = search_config()
    study = make_study(config)
    add_trial(study, config, GOLDEN_PARAMS, epoch_rows([(0.69, 300, 250), (0.6932, 0, 0)]))
    text = _card(config, "4")
    assert (
        "- No interval for F1: the shipped epoch called no `positive` example `positive`, so F1 is 0 in every resample."
        in text
    )
    assert "- Accuracy 0.5: 95% Wilson interval" in text


def test_trust_section_gives_intervals_selection_and_test_split(golden):
    text = _card(golden)
    assert "- Validation split: 1368 examples (684 `positive`)." in text
    assert "- Accuracy 0.5914: 95% Wilson interval 0.5651 to 0.6171." in text
    assert re.search(r"- F1 0\.6088: 95% bootstrap interval 0\.5\d\d to 0\.6\d\d", text)
    assert "this trial is the best of 2 complete trials (validation F1 0.5805 to 0.6088)" in text
    assert "- Test split: F1 0.5948 on 1368 examples, against 0.6088 on validation (-0.0140)." in text


# --------------------------------------------------------------------------- the search section


def test_search_section_reports_settings_counts_cost_and_recipe(golden):
    text = _card(golden)
    assert "- Trials: 4 (2 complete, 1 pruned, 1 failed)" in text
    assert "- Epochs trained: 13, against 20 for the same 4 trials unpruned (4 × 5 epochs)" in text
    assert "- Recipe: trial 0 scored validation F1 0.5805; this trial 0.6088 (+0.0283)" in text
    assert "| learning_rate | 1e-05..0.0001 (log) | 5e-05 | 3e-05 |" in text
    assert "- Trial 3: out of memory: CUDA out of memory. Tried to allocate 96.00 MiB" in text
    assert "- Pruner: MedianPruner (3 startup trials, warm-up 0 epochs)" in text


@pytest.mark.parametrize(
    ("pruner", "text"),
    [
        (
            PrunerConfig(),
            "best-trial rule on validation ROC AUC (1 startup trial, warm-up 0 epochs): from epoch 1 on, "
            "a trial stops when its best validation ROC AUC so far is below the best complete trial's "
            "(read after at most as many optimiser updates) "
            "by more than 1 standard error of the difference (Hanley and McNeil)",
        ),
        (
            PrunerConfig(name="median", warmup_epochs=1),
            "MedianPruner (3 startup trials, warm-up 1 epoch): from epoch 2 on, a trial stops when its "
            "validation F1 is below the median of the complete trials at the same epoch",
        ),
        (PrunerConfig(name="halving"), "SuccessiveHalvingPruner (min resource 1 epoch, reduction factor 3)"),
        (PrunerConfig(name="hyperband", reduction_factor=2), "HyperbandPruner (1 to 5 epochs, reduction factor 2)"),
        (PrunerConfig(name="none"), "none (every trial trains all its epochs)"),
    ],
)
def test_the_pruner_is_described_from_its_stored_settings(workdir, no_png, pruner, text):
    config = search_config(pruner=pruner)
    make_study(config)
    assert f"- Pruner: {text}\n" in _card(config)


def _budget_study(stuck_learning_rate: float) -> SearchConfig:
    """The golden study, plus two complete trials that ended calling every example negative
    and two that learned. Each plans 5 epochs of 685 updates on the linear schedule with a
    warm-up, whose learning rates sum to learning_rate x 3425 / 2."""
    config = search_config()
    study = make_study(config)
    stuck = [(0.6932, 0, 0)] * 5  # no positive predicted
    for rate in (1e-5, stuck_learning_rate):
        add_trial(study, config, {**GOLDEN_PARAMS, "learning_rate": rate}, epoch_rows(stuck))
    for rate in (3e-5, 6e-5):
        add_trial(study, config, {**GOLDEN_PARAMS, "learning_rate": rate}, epoch_rows(RECIPE_EPOCHS))
    return config


def test_the_card_says_when_the_learning_rate_budget_alone_split_the_trials(workdir, no_png):
    # Those that ended in one class planned at most 1.1e-5 x 1712.5 of summed learning rate;
    # those that learned at least 3e-5 x 1712.5 (the recipe, 5e-5 without warm-up, more).
    text = _card(_budget_study(1.1e-5))
    assert (
        "- Learning-rate budget: 2 complete trials still predicted one class after the last epoch, "
        "and each planned a smaller sum of learning rates over its schedule (at most 1.88e-02) "
        "than every complete trial that learned (4 trials, at least 5.14e-02)"
    ) in text


def test_the_planned_learning_rate_sum_is_the_linear_schedules():
    from hpsearch.card.search_section import planned_lr_sum

    def schedule_sum(rate: float, warmup: float, updates: int) -> float:  # transformers' linear lambda, summed
        from transformers.optimization import _get_linear_schedule_with_warmup_lr_lambda as lr_lambda

        steps = int(np.ceil(updates * warmup))
        return rate * sum(lr_lambda(k, num_warmup_steps=steps, num_training_steps=updates) for k in range(updates))

    for warmup in (0.0, 0.1, 0.15):
        args = {"learning_rate": 3e-5, "warmup_ratio": warmup, "lr_scheduler_type": "linear", "num_train_epochs": 3}
        assert planned_lr_sum(args, updates_per_epoch=37) == pytest.approx(schedule_sum(3e-5, warmup, 111))
    assert planned_lr_sum({**args, "lr_scheduler_type": "cosine"}, updates_per_epoch=37) is None


def test_no_budget_line_where_no_complete_trial_ended_in_one_class(golden):
    assert "Learning-rate budget" not in _card(golden)


def test_no_budget_line_where_a_stuck_trial_planned_as_much_as_one_that_learned(workdir, no_png):
    assert "Learning-rate budget" not in _card(_budget_study(1e-4))


# --------------------------------------------------------------------------- hyperparameters


def test_hyperparameters_list_what_the_trial_trained_with(golden):
    text = _card(golden)
    block = text.split("The following hyperparameters were used during training:\n", 1)[1].split("\n\n", 1)[0]
    assert block.splitlines() == [
        "- learning_rate: 3e-05",
        "- train_batch_size: 8",
        "- eval_batch_size: 8",
        "- seed: 42",
        "- optimizer: Use OptimizerNames.ADAMW_TORCH_FUSED with betas=(0.9,0.999) and epsilon=1e-08 and "
        "optimizer_args=No additional optimizer arguments",
        "- lr_scheduler_type: linear",
        "- lr_scheduler_warmup_ratio: 0.1",
        "- num_epochs: 5",
        "- weight_decay: 0.01",
    ]


def test_the_eval_batch_size_is_the_one_evaluation_ran_with_and_extras_are_listed(workdir, no_png):
    config = search_config(
        recipe=Recipe(num_train_epochs=5, per_device_eval_batch_size=64, extra={"max_grad_norm": 0.5})
    )
    make_study(config)
    text = _card(config, "0")  # the recipe: no weight decay, no warm-up
    block = text.split("The following hyperparameters were used during training:\n", 1)[1].split("\n\n", 1)[0]
    assert "- eval_batch_size: 64" in block.splitlines()
    assert block.splitlines()[-1] == "- max_grad_norm: 0.5"
    assert "weight_decay" not in block and "warmup" not in block


@pytest.mark.parametrize("optim", ["adamw_torch_fused", "adamw_torch", "adamw_bnb_8bit", "sgd", "adafactor"])
def test_the_optimizer_line_is_the_trainer_cards(optim, tmp_path):
    from types import SimpleNamespace

    from transformers import TrainingArguments
    from transformers.modelcard import extract_hyperparameters_from_trainer

    from hpsearch.card.trial_section import optimizer_line

    values = {"optim": optim, "adam_beta1": 0.85, "adam_beta2": 0.98, "adam_epsilon": 1e-06}
    args = TrainingArguments(str(tmp_path), report_to=[], **values)
    assert optimizer_line(values) == extract_hyperparameters_from_trainer(SimpleNamespace(args=args))["optimizer"]


def test_the_card_names_the_pipeline_and_the_hub_dataset_s_revision(workdir, no_png):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    config = search_config()
    task = make_task()
    task.revision = "0123456789abcdef0123456789abcdef01234567"
    make_study(config, task)
    card = ModelCard.load(write_card(config, "best").path)
    assert card.data.pipeline_tag == "text-classification"
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert {r.dataset_revision for r in results} == {task.revision}


def test_written_card_loads_and_its_eval_results_read_back(golden):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    path = write_card(golden, "best").path
    card = ModelCard.load(path)
    assert card.data.base_model == "bert-base-cased"
    assert card.data.library_name == "transformers"
    assert card.data.datasets == ["acme/product-reviews"]
    assert {"text-classification", "hpsearch", "optuna"} <= set(card.data.tags)
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    got = {(r.dataset_split, r.metric_type): r.metric_value for r in results}
    row = epoch_rows(GOLDEN_EPOCHS)[-1]
    test = schema.test_metrics(optuna.load_study(study_name="hpsearch", storage=STORAGE).trials[1])
    want = {("validation", k): row[k] for k in schema.METRICS}
    want |= {("test", k): test[k] for k in schema.METRICS}
    assert got == want
    assert {r.task_type for r in results} == {"text-classification"}


def test_card_of_a_pruned_trial_says_where_and_why_it_stopped(golden):
    path = write_card(golden, "2").path
    assert path == Path("studies/hpsearch/trial-2/README.md")
    text = path.read_text(encoding="utf-8")
    assert "Trial 2 was pruned; at its last evaluation (epoch 2) it achieved" in text
    assert "it stopped after epoch 2 of 5 (pruned after epoch 2 by the median pruner: validation f1 0.4338" in text
    assert "| 2 | 1370 |" in text and "| 3 | 2055 |" not in text


def test_a_stopped_trial_is_described_by_the_epoch_it_shipped(workdir, no_png):
    config = search_config()
    study = make_study(config)
    reason = "stopped early after epoch 4: validation f1 had not beaten 0.5952 for 2 epochs"
    # Trial 4 ships its best epoch, 2, as the objective does.
    rows = epoch_rows(RECIPE_EPOCHS[:4])
    add_trial(study, config, GOLDEN_PARAMS, rows, attrs={schema.STOPPED_EARLY: reason, schema.SHIPPED_EPOCH: 2})
    text = _card(config, "4")
    assert "Trial 4 stopped early after epoch 4" in text
    assert (
        "The model is the checkpoint of epoch 2, the epoch with the best validation F1: a trial stopped early ships "
        "its best epoch" in text
    )
    assert "it stopped 1 of the complete trials (trial 4); a trial it stops ships its best epoch" in text
    # A second one: the card lists both stopped trials.
    add_trial(
        study,
        config,
        GOLDEN_PARAMS,
        epoch_rows(RECIPE_EPOCHS[:3]),
        attrs={schema.STOPPED_EARLY: reason, schema.SHIPPED_EPOCH: 2},
    )
    text = _card(config, "5")
    assert (
        "Trial 5 stopped early" in text
        and "The model is the checkpoint of epoch 2, the epoch with the best validation F1" in text
    )
    assert "it stopped 2 of the complete trials (trials 4, 5); a trial it stops ships its best epoch" in text


def test_card_of_a_failed_trial_gives_its_reason(golden):
    text = _card(golden, "3")
    assert "Trial 3 failed after epoch 1 of 5: out of memory: CUDA out of memory." in text


def test_default_output_is_best_model_or_trial_folder(golden):
    assert write_card(golden, "best").path == Path("studies/hpsearch/best-model/README.md")
    assert write_card(golden, "0").path == Path("studies/hpsearch/trial-0/README.md")
    assert write_card(golden, "0", output="elsewhere/CARD.md").path == Path("elsewhere/CARD.md")


def test_best_model_folder_holding_another_trial_is_an_error(golden):
    folder = Path("studies/hpsearch/best-model")
    folder.mkdir(parents=True)
    Marker(trial=0, value=0.58, epoch=5, objective="f1").write(folder)
    with pytest.raises(
        CardError,
        match=r"holds the model of trial 0, but the best trial in storage is 1; run `hpsearch card 1 --output PATH`",
    ):
        write_card(golden, "best")
    assert not (folder / "README.md").exists()


def test_card_never_overwrites_a_readme_it_did_not_write(golden):
    path = Path("studies/hpsearch/best-model/README.md")
    path.parent.mkdir(parents=True)
    path.write_text("# My own notes\n", encoding="utf-8")
    with pytest.raises(CardError, match=r"exists and was not written by hpsearch; pass --force to replace it"):
        write_card(golden, "best")
    assert path.read_text(encoding="utf-8") == "# My own notes\n"
    write_card(golden, "best", force=True)
    assert MARKER in path.read_text(encoding="utf-8")


def test_card_replaces_a_card_it_wrote(golden):
    path = write_card(golden, "best").path
    path.write_text(path.read_text(encoding="utf-8") + "\nstale line\n", encoding="utf-8")
    write_card(golden, "best")
    assert "stale line" not in path.read_text(encoding="utf-8")
    assert not list(path.parent.glob(".hpsearch-card-*"))


def test_unwritable_output_is_an_error(golden, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(CardError, match=r"cannot create .*a-file.*pass a writable --output"):
        write_card(golden, "best", output=blocker / "sub" / "README.md")


def test_output_that_is_a_folder_is_an_error(golden, tmp_path):
    with pytest.raises(CardError, match=r"is a folder; pass the README.md file to write"):
        write_card(golden, "best", output=tmp_path)


def test_no_complete_trial_is_an_error(workdir, no_png):
    make_study(trials=False)
    with pytest.raises(CardError, match=r"^study 'hpsearch' has no complete trial yet; run `hpsearch run` first$"):
        write_card(search_config(), "best")


@pytest.mark.parametrize("trial", ["7", "-1"])
def test_unknown_trial_number_lists_the_range(golden, trial):
    with pytest.raises(
        CardError, match=rf"^study 'hpsearch' has no trial {trial} \(it has trials 0 to 3\); see `hpsearch trials`$"
    ):
        write_card(golden, trial)


def test_a_trial_that_is_neither_best_nor_a_number_is_an_error(golden):
    with pytest.raises(CardError, match=r"expected 'best' or a trial number, got 'top'"):
        write_card(golden, "top")


def test_storage_password_is_removed(golden):
    study = optuna.load_study(study_name="hpsearch", storage=STORAGE)
    facts = gather(study, "best", storage="postgresql://me:s3cret@db.example/studies")
    assert facts.storage == "postgresql://me:***@db.example/studies"


# --------------------------------------------------------------------------- templates


def test_custom_template_gets_the_documented_variables(golden, tmp_path):
    template = tmp_path / "mine.md.j2"
    template.write_text(
        "---\n{{ card_data_yaml }}\n---\n# {{ model_name }}\n"
        "{% for name, value in summary %}{{ name }}={{ value }};{% endfor %}\n\n"
        "{{ results_header }}\ntrial {{ trial.number }} of {{ search.counts.total }}; {{ versions.Optuna }}\n",
        encoding="utf-8",
    )
    text = _card(golden, template=template)
    assert "# bert-base-cased-hpsearch\nLoss=0.6806;F1=0.6088;Accuracy=0.5914;Precision=0.5839;Recall=0.6360;\n" in text
    assert "trial 1 of 4; 3.6.0" in text
    assert MARKER in text  # added when a template leaves it out, so the card can be replaced


def test_broken_template_names_the_file_and_line(golden, tmp_path):
    template = tmp_path / "broken.md.j2"
    template.write_text("---\n{{ card_data_yaml }}\n---\n{% for x in summary %}\n{{ x }\n", encoding="utf-8")
    with pytest.raises(CardError, match=rf"^template {re.escape(str(template))}, line 5: "):
        write_card(golden, "best", template=template)
    assert not Path("studies/hpsearch/best-model").exists()


def test_undefined_template_variable_is_an_error_not_a_blank(golden, tmp_path):
    template = tmp_path / "typo.md.j2"
    template.write_text("---\n{{ card_data_yaml }}\n---\n\n{{ modle_name }}\n", encoding="utf-8")
    with pytest.raises(CardError, match=rf"^template {re.escape(str(template))}, line 5: 'modle_name' is undefined"):
        write_card(golden, "best", template=template)


def test_template_without_front_matter_is_rejected(golden, tmp_path):
    template = tmp_path / "bare.md.j2"
    template.write_text("# {{ model_name }}\n", encoding="utf-8")
    with pytest.raises(CardError, match=r"model-index does not read back"):
        write_card(golden, "best", template=template)


def test_missing_template_is_an_error(golden, tmp_path):
    with pytest.raises(
        CardError, match=r"template '.*nope.j2' does not exist; pass a readable Jinja2 file to --template"
    ):
        write_card(golden, "best", template=tmp_path / "nope.j2")


def test_default_template_lives_inside_the_package(tmp_path):
    """The package carries its template, so an installed copy with no checkout beside it finds it."""
    import hpsearch

    site = tmp_path / "site"
    shutil.copytree(Path(hpsearch.__file__).parent, site / "hpsearch", ignore=shutil.ignore_patterns("__pycache__"))
    code = "import hpsearch.card.render as c; p = c.default_template_path(); print(p); print(p.is_file())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [str(site / "hpsearch" / "card" / "templates" / "model_card.md.j2"), "True"]


def test_templates_folder_of_a_checkout_is_the_packaged_template():
    from hpsearch.card.render import default_template_path

    assert (Path(__file__).parents[1] / "templates" / "model_card.md.j2").resolve() == default_template_path()


# --------------------------------------------------------------------------- user names


HOSTILE = 'reviews | "quoted": yes\nsecond line # not a comment'


def test_yaml_and_markdown_hostile_names_still_give_a_card_that_loads(workdir, no_png):
    from huggingface_hub import ModelCard

    labels = ("bad | worse", 'good: "very"\nnext `tick`')
    make_study(task=make_task(name=HOSTILE, hub_id=None, labels=labels, text_column="text|body_col"))
    path = write_card(search_config(), "best").path
    card = ModelCard.load(path)
    assert {r.dataset_name for r in card.data.eval_results} == {HOSTILE}
    assert card.data.datasets is None  # not a Hub dataset
    body = path.read_text(encoding="utf-8").split("\n---\n", 1)[1]
    assert '(`bad | worse`, `` good: "very" next `tick` ``)' in body
    assert "text column `text|body_col`" in body
    assert 'reviews \\| "quoted": yes second line # not a comment dataset' not in body  # pipes only escaped in tables
    for table in _tables(body):  # every row keeps the header's column count
        counts = {len(re.findall(r"(?<!\\)\|", line)) for line in table}
        assert len(counts) == 1, table


def _tables(body: str) -> list[list[str]]:
    tables: list[list[str]] = []
    previous = False
    for line in body.splitlines():
        if line.startswith("|"):
            if not previous:
                tables.append([])
            tables[-1].append(line)
        previous = line.startswith("|")
    return tables


def test_table_cells_escape_pipes_and_line_breaks():
    assert md_cell("a|b\nc") == "a\\|b c"


# --------------------------------------------------------------------------- plots beside the card


def test_card_says_plots_were_skipped_without_a_png_engine(golden):
    written = write_card(golden, "best")
    assert written.plots_skipped == "no PNG engine in this test"
    assert "The plots were skipped: no PNG engine in this test." in written.path.read_text(encoding="utf-8")
    assert not list(Path("studies/hpsearch/best-model").glob("*.png"))


NO_CHROME = (
    "kaleido found no Chrome or Chromium to render PNG files (install one, e.g. `plotly_get_chrome` or `apt-get "
    "install chromium`)"
)


@pytest.fixture
def no_chrome(monkeypatch: pytest.MonkeyPatch) -> None:
    """PNG export fails with the reason the plots module gives without Chrome."""

    def fail(figs, folder):
        raise plots.PngUnavailable(NO_CHROME)

    monkeypatch.setattr(plots, "render_pngs", fail)


def test_the_skipped_plots_reason_keeps_its_code_spans(workdir, no_chrome):
    make_study()
    text = _card(search_config())
    assert (
        "The plots were skipped: kaleido found no Chrome or Chromium to render PNG files "
        "(install one, e.g. `plotly_get_chrome` or `apt-get install chromium`). `hpsearch report` shows them "
        "interactively."
    ) in text
    assert "\\`" not in text


def test_the_cli_notes_skipped_plots_on_stderr(workdir, cli, no_chrome):
    make_study()
    code, out, err = cli("card", "best")
    assert code == 0, err
    assert out.strip() == "studies/hpsearch/best-model/README.md"
    assert err.strip().splitlines() == [f"hpsearch: note: plots skipped: {NO_CHROME}"]


@pytest.mark.parametrize(
    ("text", "markdown"),
    [
        ("install `pip install kaleido` first", "install `pip install kaleido` first"),
        ("a *b* <c> `d_e`", "a \\*b\\* &lt;c&gt; `d_e`"),
        ("a lone ` tick", "a lone \\` tick"),
    ],
)
def test_md_text_keeps_code_spans_and_escapes_the_rest(text, markdown):
    assert md_text(text) == markdown


@pytest.mark.parametrize(
    ("text", "markdown"),
    [
        ("learning_rate", "learning_rate"),
        ("_private_", "\\_private\\_"),
        ("__init__ and snake_", "\\_\\_init\\_\\_ and snake\\_"),
    ],
)
def test_md_inline_escapes_only_underscores_that_could_make_emphasis(text, markdown):
    assert md_inline(text) == markdown


def test_plots_are_written_beside_the_card_and_linked(workdir, chrome):
    make_study()
    written = write_card(search_config(), "best")
    assert written.plots_skipped is None
    path = written.path
    text = path.read_text(encoding="utf-8")
    for name in ("history", "epochs", "importances"):
        png = path.parent / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name}.png)" in text
    assert "plots were skipped" not in text


def test_rewriting_a_card_removes_its_old_plots_but_not_other_files(golden):
    path = write_card(golden, "best").path
    (path.parent / "history.png").write_bytes(b"old plot")
    write_card(golden, "best")  # no PNG engine now: the old plot would be stale
    assert not (path.parent / "history.png").exists()
    mine = Path("mine")
    mine.mkdir()
    (mine / "history.png").write_bytes(b"a user's file")
    write_card(golden, "best", output=mine / "README.md")
    assert (mine / "history.png").read_bytes() == b"a user's file"


# --------------------------------------------------------------------------- end to end, real tiny study


@pytest.fixture(scope="module")
def tiny_study(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real search (2 trials × 2 epochs of the tiny BERT), run once; tests copy its studies/."""
    from hpsearch.cli import main

    folder = tmp_path_factory.mktemp("tiny-study")
    before = Path.cwd()
    os.chdir(folder)
    try:
        assert main(tiny_run_args(tiny_model, "--trials", "2", "--epochs", "2", "--pruner", "none")) == 0
    finally:
        os.chdir(before)
    return folder / "studies"


@pytest.fixture
def real(tiny_study: Path, workdir: Path) -> Path:
    shutil.copytree(tiny_study, workdir / "studies")
    return workdir


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.slow
def test_cli_writes_the_best_and_a_numbered_card_of_a_real_study(real, cli):
    from huggingface_hub import ModelCard

    code, out, err = cli("card", "best")
    assert code == 0, err
    path = Path(out.strip().splitlines()[-1])
    assert path == Path("studies/hpsearch/best-model/README.md")
    assert (path.parent / "model.safetensors").is_file()  # beside the weights it describes
    study = optuna.load_study(study_name="hpsearch", storage=STORAGE)
    best = max((t for t in study.trials if t.value is not None), key=lambda t: (t.value, -t.number))
    card = ModelCard.load(path)
    validation = {r.metric_type: r.metric_value for r in card.data.eval_results if r.dataset_split == "validation"}
    assert validation["f1"] == best.value
    text = path.read_text(encoding="utf-8")
    rows = schema.rows(best)
    for row in rows:
        assert f"| {row['epoch']} | {row['step']} | {fmt_metric(row['eval_loss'])} | {fmt_metric(row['f1'])} |" in text
    if chrome_binary() is not None:
        assert (path.parent / "epochs.png").is_file() and "](epochs.png)" in text
    else:
        assert "The plots were skipped:" in text

    code, out, err = cli("card", "1")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "studies/hpsearch/trial-1/README.md"
    assert ModelCard.load("studies/hpsearch/trial-1/README.md").data.eval_results


@pytest.mark.slow
def test_cli_refuses_a_foreign_readme_unless_forced(real, cli, no_png):
    path = Path("studies/hpsearch/best-model/README.md")
    path.write_text("my notes\n", encoding="utf-8")
    code, out, err = cli("card", "best")
    assert code == 2 and out == ""
    assert re.fullmatch(
        r"hpsearch: error: 'studies/hpsearch/best-model/README.md' exists and was not written by hpsearch; pass "
        r"--force to replace it, or --output elsewhere",
        _one_error_line(err),
    )
    assert path.read_text(encoding="utf-8") == "my notes\n"
    code, out, err = cli("card", "best", "--force")
    assert code == 0, err
    assert MARKER in path.read_text(encoding="utf-8")


@pytest.mark.slow
def test_cli_renders_a_custom_template(real, cli, no_png, tmp_path):
    template = tmp_path / "short.md.j2"
    template.write_text(
        "---\n{{ card_data_yaml }}\n---\n# {{ model_name }}: trial {{ trial.number }}\n", encoding="utf-8"
    )
    code, out, err = cli("card", "best", "--template", template, "--output", "out/README.md")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "out/README.md"
    assert re.search(
        r"^# tiny-bert\d*-hpsearch: trial \d$", Path("out/README.md").read_text(encoding="utf-8"), flags=re.M
    )


@pytest.mark.slow
def test_cli_broken_template_is_one_line_with_its_line_number(real, cli, no_png, tmp_path):
    template = tmp_path / "broken.md.j2"
    template.write_text("---\n{{ card_data_yaml }}\n---\n{% if trial.number %}\nno endif\n", encoding="utf-8")
    code, out, err = cli("card", "best", "--template", template)
    assert code == 2 and out == ""
    assert re.fullmatch(
        rf"hpsearch: error: template {re.escape(str(template))}, line 5: .*'endif'.*", _one_error_line(err)
    )
    assert not Path("studies/hpsearch/best-model/README.md").exists()


@pytest.mark.slow
def test_cli_unknown_trial_is_one_line_with_the_range(real, cli, no_png):
    code, out, err = cli("card", "7")
    assert code == 2 and out == ""
    assert (
        _one_error_line(err)
        == "hpsearch: error: study 'hpsearch' has no trial 7 (it has trials 0 to 1); see `hpsearch trials`"
    )
    assert not Path("studies/hpsearch/trial-7").exists()


def test_cli_study_without_a_finished_trial_is_one_line(workdir, cli, no_png):
    make_study(trials=False)
    code, out, err = cli("card", "best")
    assert code == 2 and out == ""
    assert (
        _one_error_line(err) == "hpsearch: error: study 'hpsearch' has no complete trial yet; run `hpsearch run` first"
    )
