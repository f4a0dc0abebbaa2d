"""Configuration: the defaults are the base recipe; a TOML file and flags change them."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch import ConfigError, load_config
from hpsearch.config import DEFAULT_SPACE, Param, SearchConfig


def test_the_defaults_are_the_base_recipe():
    config = load_config()
    recipe = config.recipe
    assert (recipe.learning_rate, recipe.per_device_train_batch_size, recipe.per_device_eval_batch_size) == (
        5e-05,
        8,
        8,
    )
    assert (recipe.seed, recipe.adam_beta1, recipe.adam_beta2, recipe.adam_epsilon) == (42, 0.9, 0.999, 1e-08)
    assert (recipe.lr_scheduler_type, recipe.num_train_epochs) == ("linear", 5)
    assert (config.trials, config.storage, config.pruner.name, config.sampler.name, config.sampler.seed) == (
        20,
        "sqlite:///studies/hpsearch.db",
        "best",
        "tpe",
        42,
    )


def test_the_default_space_is_centred_on_the_recipe():
    space = {p.name: p for p in DEFAULT_SPACE}
    assert (space["learning_rate"].low, space["learning_rate"].high, space["learning_rate"].log) == (1e-05, 1e-04, True)
    assert space["per_device_train_batch_size"].choices == (8, 16, 32)
    assert (space["warmup_ratio"].low, space["warmup_ratio"].high) == (0.0, 0.2)
    assert (space["weight_decay"].low, space["weight_decay"].high) == (0.0, 0.1)


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        "trials = 7\nstudy = 'from-file'\n[recipe]\nnum_train_epochs = 3\n[pruner]\nname = 'halving'\n",
        encoding="utf-8",
    )
    config = load_config(path, {"trials": 9, "epochs": 2, "pruner": "hyperband", "study": None})
    assert (config.trials, config.study, config.epochs, config.pruner.name) == (9, "from-file", 2, "hyperband")


def test_the_space_can_be_widened_narrowed_fixed_and_extended(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        "[space]\n"
        "learning_rate = { low = 1e-6, high = 1e-3, log = true }\n"
        "per_device_train_batch_size = { choices = [16] }\n"
        "weight_decay = 0.01\n"
        "max_grad_norm = { low = 0.5, high = 2.0 }\n"
        "gradient_accumulation_steps = { low = 1, high = 4 }\n",
        encoding="utf-8",
    )
    config = load_config(path)
    space = {p.name: p for p in config.space}
    assert (space["learning_rate"].low, space["learning_rate"].high) == (1e-6, 1e-3)
    assert space["per_device_train_batch_size"].choices == (16,)
    assert "weight_decay" not in space and config.recipe.weight_decay == 0.01
    assert space["max_grad_norm"] == Param("max_grad_norm", low=0.5, high=2.0)
    assert space["gradient_accumulation_steps"].is_int


def test_other_training_arguments_can_be_fixed_in_the_recipe(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[recipe]\nlabel_smoothing_factor = 0.1\n", encoding="utf-8")
    assert load_config(path).recipe.values()["label_smoothing_factor"] == 0.1


def test_the_resolved_config_is_json_ready():
    import json

    data = json.loads(json.dumps(load_config().to_dict()))
    assert data["recipe"]["learning_rate"] == 5e-05
    assert data["space"]["per_device_train_batch_size"] == {"choices": [8, 16, 32]}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("trials = 1.5\n", r"trials: expected int, got float 1.5"),
        ("trust_remote_code = 'yes'\n", r"trust_remote_code: expected bool, got str 'yes'"),
        ("[recipe]\nlearning_rate = -1.0\n", r"recipe.learning_rate: expected a positive number, got -1.0"),
        ("[recipe]\nwarmup_ratio = 1.0\n", r"recipe.warmup_ratio: expected a number in \[0, 1\), got 1.0"),
        ("[space]\nlearning_rate = { low = 1e-5 }\n", r"space.learning_rate: expected low and high \(or choices\)"),
        (
            "[space]\nlearning_rate = { low = 1e-5, high = 1e-4, lg = true }\n",
            r"unknown key 'space.learning_rate.lg'; did you mean 'log'\?",
        ),
        ("[space]\nseed = { choices = [1, 2] }\n", r"space.seed: the seed is part of the recipe"),
        ("recipe = 3\n", r"recipe: expected a table"),
        ("checkpoint = 'first'\n", r"checkpoint: expected one of last, best, got 'first'"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, match):
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def _toml_blocks() -> list[tuple[str, str]]:
    root = Path(__file__).parent.parent
    found = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for i, block in enumerate(doc.read_text(encoding="utf-8").split("```toml\n")[1:]):
            found.append((f"{doc.name}#{i}", block.split("```", 1)[0]))
    return found


@pytest.mark.parametrize(("where", "text"), _toml_blocks())
def test_every_configuration_example_in_the_docs_loads(tmp_path, where, text):
    path = tmp_path / "hpsearch.toml"
    path.write_text(text, encoding="utf-8")
    load_config(path)


def test_the_docs_show_a_configuration_example():
    assert any(where.startswith("README.md") for where, _ in _toml_blocks())


@pytest.mark.parametrize(
    "key", ["fp16", "bf16", "tf32", "eval_strategy", "save_strategy", "report_to", "logging_strategy", "output_dir"]
)
def test_a_recipe_key_hpsearch_sets_itself_is_refused_at_config_time(tmp_path, key):
    path = tmp_path / "c.toml"
    path.write_text(f'[recipe]\n{key} = "x"\n', encoding="utf-8")
    with pytest.raises(
        ConfigError, match=rf"^recipe.{key}: hpsearch sets {key} itself for every trial; remove it from \[recipe\]$"
    ):
        load_config(path)


def test_a_reserved_key_cannot_be_searched_either():
    from hpsearch.config import Param

    with pytest.raises(ConfigError, match=r"space.fp16: hpsearch sets fp16 itself"):
        SearchConfig(space=(Param("fp16", choices=(True, False)),))
