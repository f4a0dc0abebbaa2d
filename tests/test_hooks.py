"""Your own code from Python: model_init, a Trainer subclass, a collator and callbacks (docs/python.md).

Real searches on the tiny model; what the study stores, the card says and a resume checks.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from test_card import no_png  # noqa: F401  (a fixture)
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainerCallback

from hpsearch import ConfigError, SearchStopped, load_config, run_confirm, run_search, schema
from hpsearch.card.render import write_card

SEEN: dict[str, list] = {"values": [], "losses": [], "collated": [], "epochs": []}


def head_dropout(values, model):
    SEEN["values"].append((dict(values), model.dropout.p))
    model.dropout.p = values["head_dropout"]
    return model


def broken_head(values, model):
    raise RuntimeError("no such head")


class CountingTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        SEEN["losses"].append(model.dropout.p)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class CountingCollator(DataCollatorWithPadding):
    def __call__(self, features):
        SEEN["collated"].append(len(features))
        return super().__call__(features)


class EpochCounter(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kwargs):
        SEEN["epochs"].append(state.epoch)


@pytest.fixture(autouse=True)
def _fresh_counts():
    for key in SEEN:
        SEEN[key] = []


def _config(tiny_model: Path, **overrides):
    values = {"model": str(tiny_model), "epochs": 1, "max_length": 32, "pruner": "none", "max_train_samples": 32}
    return load_config(None, values | overrides)


def _own_parameter(tiny_model: Path, **overrides):
    space = {"head_dropout": {"low": 0.0, "high": 0.5}}
    return _config(tiny_model, **({"trials": 2, "recipe": {"head_dropout": 0.25}, "space": space} | overrides))


def _hooks(tiny_model: Path) -> dict:
    return {
        "model_init": head_dropout,
        "trainer_class": CountingTrainer,
        "data_collator": CountingCollator(AutoTokenizer.from_pretrained(tiny_model)),
        "callbacks": [EpochCounter()],
    }


def test_every_hook_shapes_every_trial_and_the_study_stores_their_names(workdir, tiny_model):
    config = _own_parameter(tiny_model)
    study = run_search(config, **_hooks(tiny_model)).study
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    # model_init got each trial's values, its own parameter included, and a fresh base model each time
    assert [v["head_dropout"] for v, _ in SEEN["values"]] == [0.25, trials[1].params["head_dropout"]]
    assert len({p for _, p in SEEN["values"]}) == 1
    assert all(
        v["learning_rate"] == t.params["learning_rate"] for (v, _), t in zip(SEEN["values"], trials, strict=True)
    )
    # the Trainer subclass trained the model model_init returned, on the collator's batches
    assert set(SEEN["losses"]) == {0.25, trials[1].params["head_dropout"]}
    assert SEEN["collated"] and SEEN["epochs"] == [1.0, 1.0]
    # an own parameter is stored with the trial's values, as every hyperparameter is
    assert schema.training_args(trials[1])["head_dropout"] == trials[1].params["head_dropout"]
    assert schema.read_settings(study).hooks == {
        "model_init": "test_hooks.head_dropout",
        "trainer_class": "test_hooks.CountingTrainer",
        "data_collator": "test_hooks.CountingCollator",
        "callbacks": ["test_hooks.EpochCounter"],
    }


def test_the_card_names_the_hooks(workdir, tiny_model, no_png):  # noqa: F811
    config = _own_parameter(tiny_model)
    run_search(config, model_init=head_dropout, trainer_class=CountingTrainer)
    text = write_card(config, "best").path.read_text(encoding="utf-8")
    assert (
        "- Custom code: every trial was built with model_init `test_hooks.head_dropout`, "
        "trainer_class `test_hooks.CountingTrainer`, handed to `hpsearch.run_search` from Python"
    ) in text


def test_a_resume_with_other_hooks_is_refused_in_one_line_before_training(workdir, tiny_model):
    config = _own_parameter(tiny_model)
    run_search(config, model_init=head_dropout)
    SEEN["values"].clear()
    more = _own_parameter(tiny_model, trials=3)
    with pytest.raises(ConfigError, match=r"was run with hooks model_init=test_hooks.head_dropout, this run has "):
        run_search(more, model_init=head_dropout, trainer_class=CountingTrainer)
    assert SEEN["values"] == []
    run_search(more, model_init=head_dropout)  # the same hooks resume
    assert len(SEEN["values"]) == 1


def test_a_confirmation_trains_with_the_search_s_hooks_and_refuses_others(workdir, tiny_model):
    config = _own_parameter(tiny_model)
    run_search(config, model_init=head_dropout)
    where = {"study": config.study, "storage": config.storage, "workdir": config.workdir}
    with pytest.raises(ConfigError, match=r"was run with hooks model_init=test_hooks.head_dropout, this run has none"):
        run_confirm(**where, top=1, seeds=2)
    SEEN["values"].clear()
    result = run_confirm(**where, top=1, seeds=2, model_init=head_dropout)
    assert result.confirmation is not None and result.confirmation.done
    assert len(SEEN["values"]) == result.newly_complete >= 1


def test_an_exception_in_model_init_fails_that_trial_with_its_reason(workdir, tiny_model):
    config = _config(tiny_model, trials=1, max_failures=2)
    with pytest.raises(SearchStopped, match=r"2 consecutive failed trials \(last: model_init raised RuntimeError"):
        run_search(config, model_init=broken_head)
    trial = optuna.load_study(study_name=config.study, storage=config.storage).trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL
    assert schema.fail_reason(trial) == "model_init raised RuntimeError: no such head"


def test_a_parameter_of_your_own_needs_a_model_init(workdir, tiny_model):
    with pytest.raises(ConfigError, match=r"^'head_dropout' is not a TrainingArguments parameter.*needs a model_init"):
        run_search(_own_parameter(tiny_model))


def test_a_searched_parameter_of_your_own_needs_its_recipe_value(workdir, tiny_model):
    config = _config(tiny_model, space={"head_dropout": {"low": 0.0, "high": 0.5}})
    with pytest.raises(ConfigError, match=r"^space.head_dropout: a parameter of your own needs its recipe value"):
        run_search(config, model_init=head_dropout)
