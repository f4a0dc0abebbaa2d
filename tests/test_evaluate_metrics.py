"""Added metrics: `evaluate` modules scored every epoch, stored, carded, and usable as the objective."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import tiny_run_args

from hpsearch import schema
from hpsearch.config import load_config
from hpsearch.errors import ConfigError
from hpsearch.training.evaluate_metrics import flatten, load_metrics, metric_name

BALANCED_ACCURACY = """
import datasets
import evaluate
import numpy as np


class BalancedAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="mean recall over the classes",
            citation="",
            inputs_description="predictions and references: class ids",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        p, r = np.asarray(predictions), np.asarray(references)
        return {"balanced_accuracy": float(np.mean([np.mean(p[r == c] == c) for c in np.unique(r)]))}
"""


def write_metric(folder: Path, name: str = "balanced_accuracy", source: str = BALANCED_ACCURACY) -> Path:
    """A local evaluate module, as a user writes one: ``<name>/<name>.py``."""
    module = folder / name
    module.mkdir(parents=True, exist_ok=True)
    (module / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return module


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("./balanced_accuracy", "balanced_accuracy"),
        ("metrics/balanced_accuracy.py", "balanced_accuracy"),
        ("someone/matthews_correlation", "matthews_correlation"),
        ("accuracy_at_k/", "accuracy_at_k"),
    ],
)
def test_a_metric_is_stored_under_the_last_part_of_its_name(spec, name):
    assert metric_name(spec) == name


@pytest.mark.parametrize(
    ("result", "stored"),
    [
        ({"balanced_accuracy": 0.5}, {"mcc": 0.5}),  # one number: the metric's name
        ({"matthews_correlation": 0.25}, {"mcc": 0.25}),
        (
            {"mcc": 0.1, "support": 7},
            {"mcc": 0.1, "mcc_support": 7.0},
        ),  # several: name_key, the namesake keeps the name
        (
            {"a": 1.0, "b": np.float32(2.0), "per_class": [0.1, 0.9], "ok": True},
            {"mcc_a": 1.0, "mcc_b": 2.0},
        ),  # not numbers: left out
        (0.75, {"mcc": 0.75}),
    ],
)
def test_a_result_dict_is_flattened_into_row_keys(result, stored):
    assert flatten("mcc", result) == stored


def test_built_in_metrics_cannot_be_added_again():
    with pytest.raises(ConfigError, match=r"^metrics: f1 is built in"):
        load_config(None, {"metrics": ["f1"]})


def test_the_objective_may_name_an_added_metric_only():
    assert (
        load_config(None, {"metrics": ["./balanced_accuracy"], "objective": "balanced_accuracy"}).objective
        == "balanced_accuracy"
    )
    with pytest.raises(
        ConfigError, match=r"^objective: expected one of f1, accuracy, precision, recall, balanced_accuracy, got 'mcc'"
    ):
        load_config(None, {"metrics": ["./balanced_accuracy"], "objective": "mcc"})


def test_metrics_and_report_to_are_lists_of_strings_in_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('metrics = ["./balanced_accuracy"]\nreport_to = ["tensorboard"]\n', encoding="utf-8")
    config = load_config(path)
    assert (config.metrics, config.report_to) == (("./balanced_accuracy",), ("tensorboard",))
    path.write_text("metrics = [1]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^metrics: expected a list of strings, got list \[1\]$"):
        load_config(path)


def test_average_is_passed_where_the_module_takes_it(tmp_path):
    source = BALANCED_ACCURACY.replace(
        "def _compute(self, predictions, references):",
        "def _compute(self, predictions, references, average=None):\n"
        "        return {'average': {'binary': 2.0, 'macro': 3.0}[average]}",
    )
    [metric] = load_metrics([str(write_metric(tmp_path, "takes_average", source))], labels=[0, 1, 1], n_labels=2)
    assert metric.takes_average
    assert metric.compute(np.array([0, 1]), np.array([0, 1]), "binary") == {"takes_average": 2.0}


def test_a_run_stores_an_added_metric_every_epoch_cards_it_and_maximises_it(workdir, tiny_model, cli):
    write_metric(workdir)
    code, _, err = cli(
        *tiny_run_args(
            tiny_model,
            "--trials",
            "2",
            "--epochs",
            "2",
            "--metric",
            "./balanced_accuracy",
            "--objective",
            "balanced_accuracy",
        )
    )
    assert code == 0, err
    study = optuna.load_study(study_name="hpsearch", storage="sqlite:///studies/hpsearch.db")
    for trial in study.trials:
        rows = schema.rows(trial)
        assert len(rows) == 2
        for row in rows:
            (tn, fp), (fn, tp) = row["confusion"]
            assert row["balanced_accuracy"] == pytest.approx((tn / (tn + fp) + tp / (fn + tp)) / 2)
        shipped = max(rows, key=lambda r: r["balanced_accuracy"])
        assert trial.value == shipped["balanced_accuracy"]
        assert trial.intermediate_values == {r["epoch"]: r["balanced_accuracy"] for r in rows}
    assert schema.objective_name(study) == "balanced_accuracy"

    code, out, err = cli("card", "best")
    assert code == 0, err
    text = (workdir / "studies" / "hpsearch" / "best-model" / "README.md").read_text(encoding="utf-8")
    assert "| Epoch | Step | Validation Loss | F1 | Accuracy | Precision | Recall | balanced_accuracy |" in text
    from huggingface_hub import ModelCard

    results = {(r.dataset_split, r.metric_type) for r in ModelCard(text).data.eval_results}
    assert {("validation", "balanced_accuracy"), ("test", "balanced_accuracy")} <= results
    assert "- balanced_accuracy: " in text  # the summary of the evaluation set


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        (
            "no_such_metric",
            r"^hpsearch: error: metric 'no_such_metric' cannot be loaded offline: it is not in evaluate's modules "
            r"cache \(.*evaluate_modules\); ",
        ),
        (
            "./no_such_metric",
            r"^hpsearch: error: metric './no_such_metric': no folder or \.py file at .*no_such_metric; ",
        ),
    ],
)
def test_an_unknown_metric_is_one_line_before_anything_is_made(workdir, tiny_model, cli, metric, message):
    code, out, err = cli(*tiny_run_args(tiny_model, "--metric", metric))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert re.match(message, err), err
    assert list(workdir.iterdir()) == []


def test_a_module_loads_from_its_py_file_as_from_its_folder(tmp_path):
    folder = write_metric(tmp_path)
    for spec in (str(folder), str(folder / "balanced_accuracy.py")):
        [metric] = load_metrics([spec], labels=[0, 1, 1, 0], n_labels=2)
        assert metric.name == "balanced_accuracy" and not metric.takes_average
        assert metric.compute(np.array([0, 1, 0, 0]), np.array([0, 1, 1, 0]), "binary") == {"balanced_accuracy": 0.75}


def test_a_module_that_cannot_compute_on_class_ids_is_refused_before_training(tmp_path):
    source = BALANCED_ACCURACY.replace(
        "p, r = np.asarray(predictions), np.asarray(references)", "raise ValueError('needs scores')"
    )
    with pytest.raises(
        ConfigError,
        match=r"^metric '.*broken' loads but does not compute on class ids \(predictions, references\): needs scores$",
    ):
        load_metrics([str(write_metric(tmp_path, "broken", source))], labels=[0, 1], n_labels=2)
