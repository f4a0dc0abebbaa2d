"""LoRA adapters (``[peft]``): the settings, a search over them, and what is kept, exported and pushed.

One small search with the tiny BERT, a LoRA adapter and a searched rank serves most tests;
before each evaluation a callback sets every trainable weight (the low-rank updates and the
head) to fixed random values, so the kept adapter's predictions depend on all of them and a
reload that lost any would score another value.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import optuna
import pytest
from conftest import tiny_run_args
from transformers import TrainerCallback

from hpsearch import ConfigError, hub, load_config, schema
from hpsearch.config import PeftConfig, config_from_dict
from hpsearch.training.space import adapter_values, recipe_params, split_values

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
BASE_TRAINABLE = 66  # the tiny BERT's head: 32 x 2 weights and 2 biases
PER_RANK = 2 * 2 * (32 + 32)  # 2 layers x (query, value) x (A: 32 x r, B: r x 32), per unit of rank


class RandomTrainable(TrainerCallback):
    """Before each evaluation, sets every trainable weight to fixed random values."""

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        import torch

        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in (p for p in model.parameters() if p.requires_grad):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


@pytest.fixture(scope="module")
def adapter_study(tmp_path_factory, tiny_model):
    """A finished 2-trial LoRA search, its rank searched: (the flags that name it, its best-model folder)."""
    from hpsearch import run_search

    root = tmp_path_factory.mktemp("adapters")
    where = {"workdir": str(root / "studies"), "storage": f"sqlite:///{root}/studies/hpsearch.db"}
    settings = {"model": str(tiny_model), "max_length": 32, "trials": 2, "epochs": 1, "pruner": "none"}
    space = {"peft_r": {"choices": [8, 2]}}
    config = load_config(None, {**where, **settings, "max_train_samples": 32, "peft": "lora", "space": space})
    run_search(config, callbacks=[RandomTrainable()])
    flags = ["--workdir", where["workdir"], "--storage", where["storage"]]
    return flags, root / "studies" / "hpsearch" / "best-model"


def _trials(flags: list[str]) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="hpsearch", storage=flags[3]).trials


def _validation() -> tuple[list[str], list[str]]:
    from hpsearch.builtin import builtin_reviews

    frame = builtin_reviews()["validation"]
    return frame["text"].tolist(), frame["label"].tolist()


def _labels(classify) -> list[str]:
    texts, _ = _validation()
    return [r["label"] for r in classify(texts, truncation=True, max_length=32)]


# --------------------------------------------------------------------------- configuration


def test_adapters_are_off_by_default_and_the_snapshot_says_so():
    config = load_config()
    assert config.peft is None and config.to_dict()["peft"] is None
    assert (config.recipe.learning_rate, next(p for p in config.space if p.name == "learning_rate").low) == (
        5e-05,
        1e-05,
    )


def test_a_peft_table_takes_the_lora_defaults_and_round_trips(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[peft]\nr = 4\ntarget_modules = ["query", "key", "value"]\n', encoding="utf-8")
    config = load_config(path)
    assert config.peft == PeftConfig(
        method="lora", r=4, lora_alpha=16, lora_dropout=0.1, target_modules=("query", "key", "value")
    )
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_peft_lora_on_the_command_line_turns_the_defaults_on_and_keeps_the_files_table(tmp_path):
    assert load_config(None, {"peft": "lora"}).peft == PeftConfig()
    path = tmp_path / "c.toml"
    path.write_text("[peft]\nr = 4\n", encoding="utf-8")
    assert load_config(path, {"peft": "lora"}).peft == PeftConfig(r=4)


def test_adapters_raise_the_recipe_learning_rate_and_widen_its_range(tmp_path):
    config = load_config(None, {"peft": "lora"})
    lr = next(p for p in config.space if p.name == "learning_rate")
    assert (config.recipe.learning_rate, lr.low, lr.high, lr.log) == (5e-04, 1e-04, 1e-03, True)
    path = tmp_path / "c.toml"
    path.write_text("[recipe]\nlearning_rate = 2e-4\n[space]\nlearning_rate = { low = 5e-5, high = 5e-4 }\n", "utf-8")
    mine = load_config(path, {"peft": "lora"})
    assert mine.recipe.learning_rate == 2e-4
    assert next(p for p in mine.space if p.name == "learning_rate").to_dict() == {
        "low": 5e-5,
        "high": 5e-4,
        "log": False,
    }


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[space]\npeft_r = { choices = [4, 8] }\n",
            "space.peft_r: searching an adapter setting needs [peft] (or --peft lora)",
        ),
        ("[peft]\n[space]\npeft_r = 4\n", "space.peft_r: a fixed adapter setting goes in [peft] (r = ...)"),
        (
            "[peft]\n[space]\npeft_rank = { choices = [4, 8] }\n",
            "unknown key 'space.peft_rank'; did you mean 'peft_r'?",
        ),
        ("[peft]\nmethod = 'ia3'\n", "peft.method: expected one of lora, got 'ia3'"),
        ("[peft]\nr = 0\n", "peft.r: expected an integer >= 1, got 0"),
        ("[peft]\nlora_dropout = 1.0\n", "peft.lora_dropout: expected a number in [0, 1), got 1.0"),
        ("[peft]\ntarget_modules = 'query'\nrank = 4\n", "unknown key 'peft.rank'"),
        ("[peft]\ntarget_modules = [1]\n", "peft.target_modules: expected a list of strings, got list [1]"),
    ],
)
def test_bad_adapter_settings_are_one_line_that_names_the_key(tmp_path, toml, message):
    path = tmp_path / "c.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(message)


def test_trial_0_takes_the_peft_tables_values_and_searched_ones_never_reach_training_arguments():
    config = load_config(None, {"peft": "lora", "space": {"peft_r": {"choices": [4, 8]}}})
    assert recipe_params(config.recipe, config.space, config.peft)["peft_r"] == 8
    training, own = split_values({"learning_rate": 1e-4, "peft_r": 4, "head_dropout": 0.1})
    assert (training, own) == ({"learning_rate": 1e-4}, {"head_dropout": 0.1})
    assert adapter_values(config.peft, {"peft_r": 4, "learning_rate": 1e-4})["r"] == 4
    narrow = load_config(None, {"peft": "lora", "space": {"peft_r": {"choices": [4, 16]}}})
    with pytest.raises(ConfigError, match=r"space.peft_r: the recipe's value 8 is not among the choices \(4, 16\)"):
        recipe_params(narrow.recipe, narrow.space, narrow.peft)


# --------------------------------------------------------------------------- the search


def test_a_searched_rank_reaches_the_adapter_and_trial_0_takes_the_tables(adapter_study):
    flags, _ = adapter_study
    trials = _trials(flags)
    assert [t.params["peft_r"] for t in trials] == [8, 2]
    for trial in trials:
        counts = schema.parameters(trial)
        assert counts["trainable"] == BASE_TRAINABLE + PER_RANK * trial.params["peft_r"]
        assert counts["total"] == trials[0].user_attrs["parameters"]["total"]


def test_an_adapter_trains_a_small_share_of_the_parameters(adapter_study):
    flags, _ = adapter_study
    counts = schema.parameters(_trials(flags)[0])
    # The tiny BERT: 2,114 of 999,138 (0.21%); the packaged all-MiniLM-L6-v2 wrapped alike
    # trains 74,498 of 22,713,986 (0.33%).
    assert (counts["trainable"], counts["total"]) == (2114, 999138)
    assert counts["trainable"] / counts["total"] < 0.005


def test_the_kept_adapter_reloads_through_pipeline_and_scores_the_stored_value(adapter_study):
    from transformers import pipeline

    from hpsearch.analysis.scores import classification_metrics

    flags, folder = adapter_study
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "model.safetensors").exists()
    base = Path(json.loads((folder / "adapter_config.json").read_text("utf-8"))["base_model_name_or_path"])
    assert base == folder.parent / "base-model" and base.is_absolute()
    classify = pipeline("text-classification", model=str(folder))
    assert classify.model.config.id2label == {0: "negative", 1: "positive"}
    _, labels = _validation()
    predicted = _labels(classify)
    assert len(set(predicted)) == 2  # the random weights make it call both classes
    ids = {"negative": 0, "positive": 1}
    f1 = classification_metrics([ids[v] for v in labels], [ids[v] for v in predicted], "binary")["f1"]
    best = schema.best_trial(_trials(flags))
    assert f1 == pytest.approx(best.value, abs=1e-9)


def test_the_merged_export_predicts_the_adapters_labels(adapter_study, cli, tmp_path):
    from transformers import pipeline

    flags, folder = adapter_study
    target = tmp_path / "merged"
    code, out, err = cli("export", "best", "--merge", target, *flags)
    assert (code, out) == (0, f"{target}\n"), err
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in target.iterdir()}
    assert not (target / "adapter_config.json").exists()
    merged = pipeline("text-classification", model=str(target))
    assert _labels(merged) == _labels(pipeline("text-classification", model=str(folder)))


def test_export_refuses_a_path_that_is_not_empty_and_a_full_model(adapter_study, cli, workdir):
    flags, _ = adapter_study
    (workdir / "taken").mkdir()
    (workdir / "taken" / "x").write_text("", encoding="utf-8")
    code, out, err = cli("export", "best", "--merge", "taken", *flags)
    assert (code, out, err) == (
        2,
        "",
        "hpsearch: error: --merge 'taken' exists and is not empty; pass a new or empty folder\n",
    )
    full = workdir / "studies" / "hpsearch" / "best-model"
    full.mkdir(parents=True)
    (full / "config.json").write_text("{}", encoding="utf-8")
    code, out, err = cli("export", "best", "--merge", "out")
    assert (code, out) == (2, "")
    assert err == (
        "hpsearch: error: studies/hpsearch/best-model holds a full model, not an adapter; "
        "it loads without peft as it is\n"
    )


def test_the_card_of_an_adapter_says_peft_and_parses_back(adapter_study, cli):
    from huggingface_hub import ModelCard

    flags, folder = adapter_study
    code, _, err = cli("card", "best", *flags)
    assert code == 0, err
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "peft" and "lora" in card.data.tags
    assert card.data.base_model is None  # the tiny model is a local folder: no Hub id
    best = schema.best_trial(_trials(flags))
    assert f"- lora_r: {best.params['peft_r']}\n- lora_alpha: 16\n- lora_dropout: 0.1\n" in card.text
    counts = schema.parameters(best)
    assert f"{counts['trainable']:,} of the model's {counts['total']:,} parameters" in card.text
    assert "- peft_r:" not in card.text


# --------------------------------------------------------------------------- pushing


def _hub_card(folder: Path, base_model: str) -> None:
    from hpsearch.card.render import MARKER

    text = f"---\nlibrary_name: peft\nbase_model: {base_model}\n---\n{MARKER}\n# a card\n"
    (folder / "README.md").write_text(text, encoding="utf-8")


def test_a_pushed_adapter_names_the_hub_id_and_loads_as_documented(adapter_study, tmp_path, monkeypatch, tiny_model):
    """The Hub's copy of the base model is stood in for by a cache entry under its id, holding the tiny BERT."""
    import huggingface_hub
    from peft import AutoPeftModelForSequenceClassification

    from hpsearch.card.push import push_files, push_folder

    _, kept = adapter_study
    folder = tmp_path / "best-model"
    shutil.copytree(kept, folder)
    _hub_card(folder, HUB_ID)
    local = (folder / "adapter_config.json").read_text("utf-8")
    commits = []
    monkeypatch.setattr(hub, "offline_if_unreachable", lambda: False)
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", lambda self: {"name": "me"})
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: f"https://hf.co/{repo_id}")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", lambda self, **kw: commits.append(kw))
    assert push_folder(folder, "me/reviews-lora") == "https://hf.co/me/reviews-lora"
    (commit,) = commits
    operations = {op.path_in_repo: op.path_or_fileobj for op in commit["operations"]}
    assert sorted(operations) == push_files(folder)
    assert json.loads(operations["adapter_config.json"])["base_model_name_or_path"] == HUB_ID
    assert (folder / "adapter_config.json").read_text("utf-8") == local  # the local file is left as it was

    repo = tmp_path / "repo"  # what the repository holds
    repo.mkdir()
    for name, content in operations.items():
        (repo / name).write_bytes(content if isinstance(content, bytes) else Path(content).read_bytes())
    cache = tmp_path / "hub-cache" / f"models--{HUB_ID.replace('/', '--')}"
    shutil.copytree(tiny_model, cache / "snapshots" / ("0" * 40))
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("0" * 40, encoding="utf-8")
    id2label = {0: "negative", 1: "positive"}
    model = AutoPeftModelForSequenceClassification.from_pretrained(
        str(repo), num_labels=2, id2label=id2label, cache_dir=str(cache.parent)
    )
    from transformers import pipeline

    from_hub = pipeline("text-classification", model=model.merge_and_unload(), tokenizer=str(repo))
    assert _labels(from_hub) == _labels(pipeline("text-classification", model=str(kept)))


def test_pushing_an_adapter_of_a_local_model_notes_that_it_keeps_the_path(adapter_study, cli, tmp_path):
    flags, folder = adapter_study
    assert cli("card", "best", *flags)[0] == 0
    code, out, err = cli("push", "best", "me/reviews-lora", "--dry-run", *flags)
    assert code == 0, err
    assert "adapter_config.json" in out.splitlines()
    base = json.loads((folder / "adapter_config.json").read_text("utf-8"))["base_model_name_or_path"]
    assert err.startswith(f"hpsearch: note: the adapter's base model is the local folder {base}, which has no Hub id")
    assert len(err.splitlines()) == 1


# --------------------------------------------------------------------------- resuming, and peft missing


@pytest.mark.parametrize(("made", "resumed"), [((), ("--peft", "lora")), (("--peft", "lora"), ())])
def test_a_resume_that_turns_adapters_on_or_off_is_refused(workdir, tiny_model, cli, made, resumed):
    path = workdir / "c.toml"
    path.write_text(
        "[recipe]\nlearning_rate = 1e-4\n[space]\nlearning_rate = { low = 1e-5, high = 1e-3, log = true }\n", "utf-8"
    )
    flags = [*tiny_run_args(tiny_model, "--config", path, "--epochs", "1", "--max-train-samples", "16")]
    code, _, err = cli(*flags, "--trials", "1", *made)
    assert code == 0, err
    code, out, err = cli(*flags, "--trials", "2", *resumed)
    assert (code, out) == (2, "")
    was, now = ("None", "{'method': 'lora'") if not made else ("{'method': 'lora'", "None")
    assert err.startswith(f"hpsearch: error: study 'hpsearch' was made with peft={was}")
    assert f"this run has peft={now}" in err
    assert len(_trials_here()) == 1


def _trials_here() -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="hpsearch", storage="sqlite:///studies/hpsearch.db").trials


def test_without_peft_installed_peft_lora_is_one_line(workdir, tiny_model, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # what `import peft` finds where it is not installed
    code, out, err = cli(*tiny_run_args(tiny_model, "--peft", "lora"))
    assert (code, out) == (2, "")
    assert err == (
        "hpsearch: error: [peft] (--peft lora) trains adapters with the peft package, which is missing; "
        "install peft: pip install 'hpsearch[peft]'\n"
    )
    assert not (workdir / "studies").exists()
