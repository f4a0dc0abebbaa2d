"""Bad input: one stderr line that names the value and the fix, exit 2, nothing written.

Each case runs the real CLI in an empty project folder; inputs it needs (config files,
datasets) are made in a separate folder, so "nothing written" is checked exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import write_rows

GOOD_ROWS = [{"text": f"text number {i}", "label": ("a", "b")[i % 2]} for i in range(20)]


def _toml(inputs: Path, text: str) -> Path:
    path = inputs / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _dataset(inputs: Path, rows: list[dict], name: str = "d.csv") -> Path:
    return write_rows(inputs / name, rows)


def _folder(inputs: Path, train: list[dict], validation: list[dict] | None) -> Path:
    folder = inputs / "ds"
    write_rows(folder / "train.csv", train)
    if validation is not None:
        if validation:
            write_rows(folder / "validation.csv", validation)
        else:
            (folder / "validation.csv").write_text("text,label\n", encoding="utf-8")
    return folder


# (id, builder(inputs, tiny_model) -> argv, regex the one stderr line must match)
RUN_CASES = [
    ("config-missing", lambda i, m: ["--config", i / "nope.toml"], r"config file .*nope\.toml' does not exist"),
    ("config-not-toml", lambda i, m: ["--config", _toml(i, "trials = [1,\n")], r"is not valid TOML"),
    (
        "unknown-key",
        lambda i, m: ["--config", _toml(i, "trails = 3\n")],
        r"unknown key 'trails'; did you mean 'trials'\?",
    ),
    (
        "unknown-nested-key",
        lambda i, m: ["--config", _toml(i, "[pruner]\nwarmup_epoch = 1\n")],
        r"unknown key 'pruner.warmup_epoch'; did you mean 'warmup_epochs'\?",
    ),
    (
        "wrong-type",
        lambda i, m: ["--config", _toml(i, "max_length = 'long'\n")],
        r"max_length: expected int, got str 'long'",
    ),
    ("trials-below-one", lambda i, m: ["--trials", "0"], r"trials: expected an integer >= 1, got 0"),
    (
        "patience-below-zero",
        lambda i, m: ["--early-stopping-patience", "-1"],
        r"early_stopping_patience: expected an integer >= 0, got -1",
    ),
    ("epochs-below-one", lambda i, m: ["--epochs", "0"], r"recipe.num_train_epochs: expected an integer >= 1, got 0"),
    (
        "batch-below-one",
        lambda i, m: ["--config", _toml(i, "[recipe]\nper_device_train_batch_size = 0\n")],
        r"per_device_train_batch_size: expected an integer >= 1, got 0",
    ),
    (
        "range-low-not-below-high",
        lambda i, m: ["--config", _toml(i, "[space]\nlearning_rate = {low = 1e-4, high = 1e-5, log = true}\n")],
        r"space.learning_rate: expected low < high",
    ),
    (
        "recipe-not-a-choice",
        lambda i, m: ["--config", _toml(i, "[space]\nweight_decay = {choices = [0.01, 0.1]}\n")],
        r"space.weight_decay: the recipe's value 0.0 is not among the choices \(0.01, 0.1\); trial 0 is the recipe, "
        r"so add it to the choices or set recipe.weight_decay to one of them",
    ),
    (
        "log-range-at-zero",
        lambda i, m: ["--config", _toml(i, "[space]\nweight_decay = {low = 0.0, high = 0.1, log = true}\n")],
        r"space.weight_decay: a log scale needs low > 0",
    ),
    (
        "empty-choices",
        lambda i, m: ["--config", _toml(i, "[space]\nper_device_train_batch_size = {choices = []}\n")],
        r"expected at least one choice, got an empty list",
    ),
    (
        "unknown-pruner",
        lambda i, m: ["--pruner", "medain"],
        r"pruner.name: expected one of best, median, halving, hyperband, none, got 'medain' \(did you mean "
        r"'median'\?\)",
    ),
    (
        "removed-pruner-key",
        lambda i, m: ["--config", _toml(i, "[pruner]\nmetric = 'roc_auc'\n")],
        r"unknown key 'pruner.metric'",
    ),
    (
        "negative-margin",
        lambda i, m: ["--config", _toml(i, "[pruner]\nmargin_se = -1\n")],
        r"pruner.margin_se: expected",
    ),
    (
        "reserved-recipe-key",
        lambda i, m: ["--config", _toml(i, "[recipe]\nfp16 = true\n")],
        r"recipe.fp16: hpsearch sets fp16 itself for every trial; remove it from \[recipe\]",
    ),
    (
        "reserved-output-dir",
        lambda i, m: ["--config", _toml(i, "[recipe]\noutput_dir = 'x'\n")],
        r"recipe.output_dir: hpsearch sets output_dir itself",
    ),
    (
        "unknown-sampler",
        lambda i, m: ["--sampler", "grid"],
        r"sampler.name: expected one of tpe, random, qmc, got 'grid'",
    ),
    (
        "unknown-objective",
        lambda i, m: ["--objective", "auc"],
        r"objective: expected one of f1, accuracy, precision, recall, got 'auc'",
    ),
    (
        "not-a-training-argument",
        lambda i, m: ["--config", _toml(i, "[space]\nlearning_rat = {low = 1e-5, high = 1e-4}\n")],
        r"'learning_rat' is not a TrainingArguments parameter; did you mean 'learning_rate'\?",
    ),
    (
        "dataset-path-missing",
        lambda i, m: ["--dataset", i / "missing.csv"],
        r"dataset path .*missing\.csv' does not exist",
    ),
    (
        "dataset-no-rows",
        lambda i, m: ["--dataset", _write(i / "empty.csv", "text,label\n")],
        r"empty\.csv' has no rows",
    ),
    (
        "dataset-unreadable",
        lambda i, m: ["--dataset", _write(i / "bad.parquet", "not parquet")],
        r"bad\.parquet' cannot be read as parquet",
    ),
    (
        "text-column-missing",
        lambda i, m: ["--dataset", _dataset(i, [{"body": "x", "label": 1}] * 4)],
        r"no text column found .*its columns are: body, label",
    ),
    (
        "named-column-missing",
        lambda i, m: ["--dataset", _dataset(i, GOOD_ROWS), "--text-column", "review"],
        r"text column 'review' is not in the data; its columns are: text, label",
    ),
    (
        "label-column-missing",
        lambda i, m: ["--dataset", _dataset(i, [{"text": "x", "y": 1}] * 4)],
        r"no label column found .*its columns are: text, y",
    ),
    ("empty-split", lambda i, m: ["--dataset", _folder(i, GOOD_ROWS, [])], r"validation\.csv' has no rows"),
    (
        "single-class",
        lambda i, m: ["--dataset", _dataset(i, [{"text": f"t{i}", "label": "a"} for i in range(10)])],
        r"the training split has a single class \('a'\)",
    ),
    (
        "float-labels",
        lambda i, m: ["--dataset", _dataset(i, [{"text": f"t{k}", "label": k / 3} for k in range(10)])],
        r"labels must be integers or strings, got float 0.333",
    ),
    (
        "model-not-loadable-offline",
        lambda i, m: ["--model", "nobody/no-such-model"],
        r"model 'nobody/no-such-model' is not a local folder, not in the Hugging Face cache, and the Hub is "
        r"unreachable",
    ),
    (
        "model-path-missing",
        lambda i, m: ["--model", "./no-such-folder"],
        r"model path './no-such-folder' is not a folder",
    ),
    (
        "storage-malformed",
        lambda i, m: ["--storage", "sqlite:/x.db"],
        r"storage 'sqlite:/x.db': a SQLite URL has three slashes: sqlite:///PATH",
    ),
    (
        "storage-unknown-scheme",
        lambda i, m: ["--storage", "studies/x.db"],
        r"storage 'studies/x.db': expected a URL such as sqlite:///studies/hpsearch.db",
    ),
    (
        "storage-unreachable",
        lambda i, m: ["--storage", "postgresql://u:hunter2@127.0.0.1:1/x"],
        r"storage 'postgresql://u:\*\*\*@127.0.0.1:1/x' cannot be opened",
    ),
    ("study-name-with-slash", lambda i, m: ["--study", "a/b"], r"study: expected a name without '/', got 'a/b'"),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    inputs, project = tmp_path / "inputs", tmp_path / "project"
    inputs.mkdir()
    project.mkdir()
    monkeypatch.chdir(project)
    return inputs, project


@pytest.mark.parametrize(("build", "pattern"), [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])
def test_bad_run_input_is_one_line_exit_2_and_writes_nothing(project, tiny_model, cli, build, pattern):
    inputs, folder = project
    argv = ["run", "--model", tiny_model, "--trials", "1", "--epochs", "1", *build(inputs, tiny_model)]
    code, out, err = cli(*argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("hpsearch: error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err and out == ""
    assert _tree(folder) == set()
    assert "hunter2" not in err


@pytest.mark.parametrize("command", ["trials", "report", "dashboard", "card best"])
def test_inspection_of_a_missing_storage_is_one_line_and_creates_nothing(project, cli, command):
    _, folder = project
    code, _, err = cli(*command.split())
    assert code == 2
    assert err.strip().splitlines() == [
        "hpsearch: error: no study storage at 'studies/hpsearch.db'; run `hpsearch run` first or pass --storage"
    ]
    assert _tree(folder) == set()


@pytest.mark.parametrize("command", ["trials", "report", "dashboard", "card best"])
def test_inspection_of_an_unknown_study_names_the_studies_there(project, cli, command):
    import optuna

    _, folder = project
    (folder / "studies").mkdir()
    optuna.create_study(study_name="mine", storage="sqlite:///studies/hpsearch.db")
    before = _tree(folder)
    code, _, err = cli(*command.split(), "--study", "theirs")
    assert code == 2
    assert err.strip().splitlines() == [
        "hpsearch: error: no study named 'theirs' in sqlite:///studies/hpsearch.db (studies there: mine); pass --study"
    ]
    assert _tree(folder) == before


def test_an_unknown_flag_is_one_line_with_the_help_hint(project, cli):
    code, _, err = cli("run", "--trails", "3")
    assert code == 2
    assert err.strip().splitlines() == [
        "hpsearch: error: unrecognized arguments: --trails 3 (see `hpsearch run --help`)"
    ]


def test_a_non_integer_flag_value_is_one_line(project, cli):
    code, _, err = cli("run", "--trials", "many")
    assert code == 2
    assert err.strip().splitlines() == [
        "hpsearch: error: argument --trials: invalid int value: 'many' (see `hpsearch run --help`)"
    ]


def test_verbose_shows_the_traceback(project, cli):
    inputs, _ = project
    code, _, err = cli("run", "--verbose", "--config", inputs / "nope.toml")
    assert code == 2
    assert "Traceback" in err and "ConfigError" in err


def _stored(folder: Path) -> tuple:
    import optuna

    study = optuna.load_study(study_name="hpsearch", storage=f"sqlite:///{folder}/studies/hpsearch.db")
    return [(t.number, t.state, t.params, t.user_attrs) for t in study.trials], study.user_attrs


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda i: ["--dataset", i / "missing.csv"], r"dataset path .*missing\.csv' does not exist"),
        (
            lambda i: ["--config", _toml(i, "[recipe]\nreport_to = 'wandb'\n")],
            r"recipe.report_to: hpsearch sets report_to itself",
        ),
    ],
    ids=["missing-dataset", "reserved-recipe-key"],
)
def test_bad_input_beside_an_existing_study_is_reported_as_itself_and_changes_nothing(
    project, tiny_model, cli, build, pattern
):
    inputs, folder = project
    flags = [
        "run",
        "--model",
        tiny_model,
        "--max-length",
        "32",
        "--epochs",
        "1",
        "--pruner",
        "none",
        "--max-train-samples",
        "32",
    ]
    assert cli(*flags, "--trials", "1")[0] == 0
    before = _stored(folder)
    code, _, err = cli(*flags, "--trials", "2", *build(inputs))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and re.search(pattern, err), err
    assert _stored(folder) == before
