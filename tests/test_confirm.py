"""`hpsearch confirm`: the leaders trained again with other seeds, picked by the mean.

One tiny-model search (three one-epoch trials, no pruner) is made once and copied into each
test's folder; the confirmations run through the real CLI, in this process or as
subprocesses that are interrupted or run side by side. The rules of the statistics (the
winner, failures, the test against the recipe) are tested on hand-made runs.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
from collections import Counter
from pathlib import Path

import optuna
import pytest
from conftest import finish, start_hpsearch, tiny_run_args, wait_for_file, write_rows
from optuna.trial import TrialState
from test_card import no_png  # noqa: F401  (a fixture)

from hpsearch import schema
from hpsearch.analysis.scores import failure
from hpsearch.analysis.seeds import ConfigStats, SeedRun, compare, pick_winner
from hpsearch.bestmodel import MARKER_FILE, Marker
from hpsearch.formatting import spread_text
from hpsearch.search.study import open_confirmation

URL = "sqlite:///studies/hpsearch.db"
SEARCH = ("--epochs", "1", "--pruner", "none", "--max-train-samples", "64", "--max-eval-samples", "32", "--trials", "3")
TIMEOUT = 300  # seconds for a subprocess; a hung one fails the test instead of hanging it


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture(scope="module")
def searched(tiny_model, tmp_path_factory) -> Path:
    """A folder holding a finished three-trial search (studies/hpsearch.db, studies/hpsearch/)."""
    from hpsearch.cli import main

    folder = tmp_path_factory.mktemp("searched")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert main(tiny_run_args(tiny_model, *SEARCH)) == 0
    finally:
        os.chdir(cwd)
    return folder


@pytest.fixture
def study_copy(searched, workdir) -> Path:
    shutil.copytree(searched / "studies", workdir / "studies")
    return workdir


def _studies() -> tuple[optuna.Study, optuna.Study]:
    search = optuna.load_study(study_name="hpsearch", storage=URL)
    return search, optuna.load_study(study_name="hpsearch" + schema.CONFIRM_SUFFIX, storage=URL)


def _complete_runs(confirm: optuna.Study) -> Counter:
    return Counter((schema.confirms(t), schema.run_seed(t)) for t in confirm.trials if t.state == TrialState.COMPLETE)


def _expected_runs(search: optuna.Study, top: int, seeds: int) -> set[tuple[int, int]]:
    done = sorted((t for t in search.trials if t.state == TrialState.COMPLETE), key=lambda t: (-t.value, t.number))
    configurations = {t.number for t in done[:top]} | {schema.recipe_trial(search.trials).number}
    return {(n, s) for n in configurations for s in range(43, 42 + seeds)}


def _snapshot(study: optuna.Study) -> tuple:
    trials = [
        (t.number, t.state, t.value, t.params, t.user_attrs, t.intermediate_values, t.datetime_complete)
        for t in study.trials
    ]
    return trials, study.user_attrs, study.best_trial.number


# --------------------------------------------------------------------------- through the CLI


def test_a_confirmation_adds_the_other_seeds_of_the_top_configurations_and_the_recipe(study_copy, cli):
    code, out, err = cli("confirm", "--top", "2", "--seeds", "3")
    assert code == 0, err
    search, confirm = _studies()
    runs = _complete_runs(confirm)
    assert set(runs) == _expected_runs(search, 2, 3)  # two new runs per configuration: seeds 43 and 44
    assert set(runs.values()) == {1}
    assert len(confirm.trials) == len(runs)
    assert "confirmed winner: trial" in out
    # one-epoch runs of a tiny random BERT call every example one class: the verdict ends the output
    assert out.strip().splitlines()[-1].startswith("Verdict: calling every example `positive` scores validation F1")


def test_confirming_again_runs_nothing(study_copy, cli):
    assert cli("confirm", "--top", "2", "--seeds", "3")[0] == 0
    before = len(_studies()[1].trials)
    code, out, err = cli("confirm", "--top", "2", "--seeds", "3")
    assert code == 0, err
    assert len(_studies()[1].trials) == before


def test_the_search_study_is_unchanged_by_a_confirmation(study_copy, cli):
    before = _snapshot(optuna.load_study(study_name="hpsearch", storage=URL))
    assert cli("confirm", "--top", "2", "--seeds", "3")[0] == 0
    assert _snapshot(_studies()[0]) == before


def test_best_model_holds_the_winner_s_best_run_and_its_marker_says_confirmed(study_copy, cli):
    assert cli("confirm", "--top", "2", "--seeds", "3")[0] == 0
    search, _ = _studies()
    confirmation = open_confirmation(search, URL)
    marker = Marker.read(study_copy / "studies" / "hpsearch" / "best-model")
    winner = confirmation.winner
    assert marker.confirmed and marker.trial == winner.trial
    shipped = next(r for r in winner.runs if r.seed == marker.seed)
    assert (
        shipped.value
        == marker.value
        == max(r.value for r in winner.runs if not r.original or r.trial == search.best_trial.number)
    )


def test_the_card_s_confirmation_table_agrees_with_storage(study_copy, cli):
    assert cli("confirm", "--top", "2", "--seeds", "3")[0] == 0
    code, out, err = cli("card", "best")
    assert code == 0, err
    text = Path(out.strip().splitlines()[-1]).read_text(encoding="utf-8")
    section = text.split("### Seed confirmation", 1)[1].split("### How far to trust the number", 1)[0]
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")
        for line in section.splitlines()
        if line.startswith("| ") and line[2].isdigit()
    }
    confirmation = open_confirmation(_studies()[0], URL)
    assert set(rows) == {str(c.trial) for c in confirmation.configs}
    for c in confirmation.configs:
        cells = rows[str(c.trial)]
        assert cells[1] == f"{len(c.complete)} of 3"
        assert cells[2] == spread_text(c.validation)
        assert cells[5] == spread_text(c.test)
        assert cells[6] == f"{c.failures} of {len(c.complete)}"
    marker = Marker.read(study_copy / "studies" / "hpsearch" / "best-model")
    assert f"the winner's run with seed {marker.seed}" in section


def test_trials_json_gives_each_confirmed_configuration_its_figures(study_copy, cli):
    assert cli("confirm", "--top", "2", "--seeds", "3")[0] == 0
    import json

    code, out, err = cli("trials", "--json")
    assert code == 0, err
    confirmation = open_confirmation(_studies()[0], URL)
    for record in json.loads(out):
        stats = confirmation.of_trial(record["number"])
        if stats is None:
            assert record["confirmation"] is None
            continue
        got = record["confirmation"]
        assert (got["seeds"], got["mean"], got["failures"]) == (3, stats.validation.mean, stats.failures)
        assert sorted(r["seed"] for r in got["runs"]) == [42, 43, 44]


def test_trials_report_and_dashboard_note_say_confirmed(study_copy, cli):
    from hpsearch.views.notes import study_note

    assert cli("confirm", "--top", "2", "--seeds", "3")[0] == 0
    code, out, err = cli("trials")
    assert code == 0, err
    assert "seed confirmation (confirmed)" in out
    code, out, err = cli("report")
    assert code == 0, err
    assert "Seed confirmation (confirmed)" in Path(out.strip()).read_text(encoding="utf-8")
    search = _studies()[0]
    note = study_note(search, workdir="studies", confirmation=open_confirmation(search, URL))
    assert "### Seed confirmation (confirmed)" in note
    assert "- confirmed winner: trial" in note


def test_a_marker_says_confirmed_and_the_seed_only_when_set(tmp_path):
    import json

    plain = Marker(trial=3, value=0.8, epoch=2, objective="f1")
    plain.write(tmp_path)
    assert json.loads((tmp_path / MARKER_FILE).read_text()) == {
        "trial": 3,
        "value": 0.8,
        "epoch": 2,
        "objective": "f1",
    }
    assert Marker.read(tmp_path) == plain
    confirmed = Marker(trial=3, value=0.8, epoch=2, objective="f1", confirmed=True, seed=44)
    confirmed.write(tmp_path)
    assert Marker.read(tmp_path) == confirmed


# --------------------------------------------------------------------------- as processes


# Hooks run in a confirmation process before hpsearch (conftest.hpsearch_argv). Training is
# held at a point the test waits for, so that no step depends on how fast a run goes.
HOLD_TRAINING = """
import time
from pathlib import Path
import transformers

def held(self, *args, **kwargs):
    Path("training").touch()  # a run is in its Trainer's train(): a signal now lands mid-run
    time.sleep(600)

transformers.Trainer.train = held
"""
MEET_AT_FIRST_RUN = """
import os, time
from pathlib import Path
import transformers

train = transformers.Trainer.train

def met(self, *args, **kwargs):
    # A worker's first run trains only once the other worker has started a run too (or 240 s
    # have passed), so that a worker that starts late still finds runs left to take.
    mine = Path("started") / str(os.getpid())
    if not mine.exists():
        mine.parent.mkdir(exist_ok=True)
        mine.touch()
        deadline = time.monotonic() + 240
        while len(list(mine.parent.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    return train(self, *args, **kwargs)

transformers.Trainer.train = met
"""


def test_an_interrupted_confirmation_resumes_to_exactly_the_planned_runs(study_copy, cli):
    proc = start_hpsearch(study_copy, "first", "confirm", "--top", "2", "--seeds", "3", hook=HOLD_TRAINING)
    try:
        wait_for_file(study_copy / "training", proc, TIMEOUT)
    except AssertionError:
        proc.kill()
        raise AssertionError((study_copy / "first.err").read_text()[-2000:]) from None
    proc.send_signal(signal.SIGINT)
    assert finish(proc, study_copy, "first") == 130
    trials = _studies()[1].trials
    assert [t.user_attrs.get(schema.FAIL_REASON) for t in trials if t.state == TrialState.FAIL] == [schema.INTERRUPTED]
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]

    code, out, err = cli("confirm", "--top", "2", "--seeds", "3")
    assert code == 0, err
    search, confirm = _studies()
    runs = _complete_runs(confirm)
    assert set(runs) == _expected_runs(search, 2, 3)
    assert set(runs.values()) == {1}
    assert len(confirm.trials) == len(runs) + 1  # the interrupted run stays, failed


def test_two_workers_share_a_confirmation_without_running_anything_twice(study_copy):
    args = ("--top", "2", "--seeds", "3")
    procs = [start_hpsearch(study_copy, f"w{i}", "confirm", *args, hook=MEET_AT_FIRST_RUN) for i in range(2)]
    codes = [finish(p, study_copy, f"w{i}") for i, p in enumerate(procs)]
    assert codes == [0, 0], [(study_copy / f"w{i}.err").read_text()[-1500:] for i in range(2)]
    search, confirm = _studies()
    runs = _complete_runs(confirm)
    assert set(runs) == _expected_runs(search, 2, 3)
    assert set(runs.values()) == {1}
    assert len(confirm.trials) == len(runs)  # nothing failed, nothing queued twice
    # both workers ran runs
    assert {schema.worker(t).rpartition(":")[2] for t in confirm.trials} == {str(p.pid) for p in procs}


def test_run_with_confirm_top_searches_then_confirms_and_ends_with_one_verdict(tiny_model, workdir, cli):
    code, out, err = cli(*tiny_run_args(tiny_model, *SEARCH, "--confirm-top", "2", "--seeds", "3"))
    assert code == 0, err
    search, confirm = _studies()
    assert len(search.trials) == 3  # the search's total, then the confirmation beside it
    runs = _complete_runs(confirm)
    assert set(runs) == _expected_runs(search, 2, 3)
    assert set(runs.values()) == {1}
    assert out.index("study: hpsearch in") < out.index("confirmed winner: trial")
    lines = out.strip().splitlines()
    assert lines[-1].startswith("Verdict: ")  # last, and once: the search's summary leaves it to the confirmation
    assert sum(line.startswith("Verdict: ") for line in lines) == 1
    marker = Marker.read(workdir / "studies" / "hpsearch" / "best-model")
    assert marker.confirmed and marker.trial == open_confirmation(search, URL).winner.trial


def test_run_confirms_nothing_while_the_search_is_short_of_its_total(tiny_model, workdir, cli):
    chain = ("--confirm-top", "2", "--seeds", "2", "--timeout", "0.001")
    code, out, err = cli(*tiny_run_args(tiny_model, *SEARCH, *chain))
    assert code == 0, err
    assert "confirmation not started: the search is 2 trials short of 3; run the same command to go on" in err
    assert open_confirmation(optuna.load_study(study_name="hpsearch", storage=URL), URL) is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--confirm-top", "0", "--seeds", "3"), "--confirm-top: expected at least 1, got 0"),
        (("--confirm-top", "2", "--seeds", "0"), "seeds: expected an integer >= 1, got 0"),
    ],
)
def test_a_bad_chain_is_one_line_before_any_training(tiny_model, workdir, cli, flags, message):
    code, out, err = cli(*tiny_run_args(tiny_model, *SEARCH, *flags))
    assert (code, err.strip().splitlines()) == (2, [f"hpsearch: error: {message}"])
    assert list(workdir.iterdir()) == []


# --------------------------------------------------------------------------- the verdict


def test_a_search_on_shuffled_labels_ends_with_the_verdict_in_the_output_and_the_card(tiny_model, workdir, cli):
    from hpsearch.builtin import builtin_reviews

    rng = random.Random(0)
    for split, frame in builtin_reviews().items():
        rows = frame.to_dict("records")
        labels = [r["label"] for r in rows]
        rng.shuffle(labels)
        write_rows(
            workdir / "shuffled" / f"{split}.csv",
            [{"text": r["text"], "label": y} for r, y in zip(rows, labels, strict=True)],
        )
    code, out, err = cli(
        *tiny_run_args(
            tiny_model,
            "--dataset",
            "shuffled",
            "--epochs",
            "1",
            "--pruner",
            "none",
            "--max-train-samples",
            "64",
            "--trials",
            "2",
        )
    )
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("Verdict: ")
    code, out, err = cli("card", "best")
    assert code == 0, err
    card = Path(out.strip().splitlines()[-1]).read_text(encoding="utf-8")
    opening = card.split("\n# ", 1)[1].split("\n\n", 2)[1]
    assert opening.startswith("This model is a fine-tuned version of")
    assert "Verdict: " in opening


# --------------------------------------------------------------------------- the rules, on hand-made runs


def _run(seed: int, value: float, *, trial: int = 0, failed: str | None = None) -> SeedRun:
    return SeedRun(seed=seed, trial=trial, original=seed == 42, state="complete", value=value, failure=failed)


def _config(trial: int, values: list[float], *, recipe: bool = False) -> ConfigStats:
    return ConfigStats(
        trial=trial,
        params={},
        is_recipe=recipe,
        runs=[_run(42 + i, v, trial=trial) for i, v in enumerate(values)],
        seeds_planned=len(values),
    )


def test_the_winner_is_the_highest_mean_not_the_highest_single_run():
    lucky = _config(1, [0.95, 0.60, 0.62])  # the best single run, a mean of 0.7233
    steady = _config(2, [0.80, 0.79, 0.81])  # a mean of 0.80
    assert max(lucky.runs + steady.runs, key=lambda r: r.value) in lucky.runs
    assert pick_winner([lucky, steady]) is steady


def test_a_tie_in_the_mean_goes_to_the_lower_standard_deviation():
    wide = _config(1, [0.70, 0.90])
    narrow = _config(2, [0.79, 0.81])
    assert pick_winner([wide, narrow]) is narrow


def test_the_spread_is_the_mean_sample_deviation_min_and_max():
    stats = _config(1, [0.70, 0.80, 0.90]).validation
    assert (stats.n, round(stats.mean, 10), round(stats.std, 10), stats.min, stats.max) == (3, 0.8, 0.1, 0.70, 0.90)


# 10 negatives and 6 positives: calling all positive scores F1 12/22 = 0.5455; the majority class gets accuracy 10/16.
@pytest.mark.parametrize(
    ("confusion", "reason"),
    [
        ([[10, 0], [6, 0]], "called every example one class"),
        ([[0, 10], [0, 6]], "called every example one class"),
        ([[5, 5], [3, 3]], "F1 0.4286 at or below the constant predictor's 0.5455"),
        ([[1, 9], [0, 6]], "accuracy 0.4375 at or below the majority class's 0.6250"),
        ([[8, 2], [1, 5]], None),
    ],
)
def test_a_run_fails_when_it_calls_one_class_or_does_no_better_than_the_constant_predictor(confusion, reason):
    import numpy as np

    from hpsearch.analysis.scores import classification_metrics

    cells = [confusion[0][0], confusion[0][1], confusion[1][0], confusion[1][1]]
    row = {
        **classification_metrics(np.repeat([0, 0, 1, 1], cells), np.repeat([0, 1, 0, 1], cells), "binary"),
        "confusion": confusion,
    }
    assert failure(row, [10, 6], "binary") == reason


def test_the_comparison_with_the_recipe_gives_welch_s_interval():
    from scipy.stats import ttest_ind

    winner, recipe = _config(1, [0.80, 0.82, 0.81]), _config(0, [0.70, 0.72, 0.69], recipe=True)
    comparison = compare(winner, recipe)
    interval = ttest_ind([0.80, 0.82, 0.81], [0.70, 0.72, 0.69], equal_var=False).confidence_interval(0.95)
    assert (comparison.low, comparison.high) == pytest.approx((interval.low, interval.high))
    assert not comparison.within_noise
    assert compare(_config(1, [0.80, 0.70, 0.90]), _config(0, [0.78, 0.70, 0.85], recipe=True)).within_noise


# --------------------------------------------------------------------------- a hand-made confirmation in the card


@pytest.mark.usefixtures("no_png")
def test_the_card_of_a_confirmed_winner_describes_its_shipped_run_and_the_spread(workdir):
    """The golden study of test_card plus crafted runs: the recipe has the best single run
    (seed 43), trial 1's configuration the best mean, and its seed 44 run is the one shipped."""
    from huggingface_hub import ModelCard
    from test_card import GOLDEN_PARAMS, _card, add_trial, epoch_rows, make_study, search_config

    from hpsearch.training.space import recipe_params

    config = search_config()
    make_study(config)
    confirm = optuna.create_study(
        study_name="hpsearch" + schema.CONFIRM_SUFFIX, storage=config.storage, direction="maximize"
    )
    schema.write_plan(confirm, schema.ConfirmPlan(top=1, seeds=[42, 43, 44], configurations=[1, 0], recipe=0))
    recipe = recipe_params(config.recipe, config.space)
    runs = {  # (configuration, seed): the last epoch's (loss, TP, FP); trial 1 ships its last epoch
        (0, 43): (0.60, 560, 200),  # F1 0.7832: the best single run of all
        (0, 44): (0.70, 300, 340),  # F1 0.4491
        (1, 43): (0.66, 450, 300),  # F1 0.6224
        (1, 44): (0.65, 480, 290),  # F1 0.6486: trial 1's best run
    }
    for (number, seed), last in runs.items():
        test = epoch_rows([last])[0]
        attrs = schema.confirm_attrs(number, seed) | {
            schema.TEST_METRICS: {"loss": test["eval_loss"], **{k: test[k] for k in schema.METRICS}}
        }
        seeded = dataclasses.replace(config, recipe=dataclasses.replace(config.recipe, seed=seed))
        add_trial(
            confirm, seeded, GOLDEN_PARAMS if number == 1 else recipe, epoch_rows([(0.69, 400, 400), last]), attrs=attrs
        )
    search = optuna.load_study(study_name="hpsearch", storage=config.storage)
    confirmation = open_confirmation(search, config.storage)
    winner = confirmation.winner
    assert (
        winner.trial == 1
        and max(r.value for c in confirmation.configs for r in c.runs) == confirmation.of_trial(0).best_run().value
    )
    shipped = winner.best_run()
    assert (shipped.seed, shipped.original) == (44, False)
    folder = workdir / "studies" / "hpsearch" / "best-model"
    folder.mkdir(parents=True)
    Marker(trial=1, value=shipped.value, epoch=2, objective="f1", confirmed=True, seed=44).write(folder)

    text = _card(config)
    card = ModelCard(text)
    validation_f1 = next(
        r.metric_value for r in card.data.eval_results if r.dataset_split == "validation" and r.metric_type == "f1"
    )
    assert validation_f1 == shipped.value  # the model-index keeps the shipped run's value
    assert "- seed: 44" in text
    assert f"- F1: {shipped.value:.4f} (mean {spread_text(winner.validation)} over 3 seeds)" in text
    section = text.split("### Seed confirmation", 1)[1].split("### How far to trust the number", 1)[0]
    assert "- Confirmed winner by mean validation F1: trial 1's configuration" in section
    assert "the winner's run with seed 44" in section
    for c in confirmation.configs:
        assert f"| {c.trial} | 3 of 3 | {spread_text(c.validation)} |" in section


def test_install_swaps_in_the_decided_model_and_leaves_the_folder_when_nothing_is_decided(tmp_path):
    from hpsearch.bestmodel import BestModelStore, Marker

    store = BestModelStore(tmp_path / "study")
    source = tmp_path / "run"
    source.mkdir()
    (source / "model.safetensors").write_text("seed 44", encoding="utf-8")
    searched = Marker(trial=1, value=0.7, epoch=2, objective="f1")
    store.offer(
        searched,
        lambda folder: (folder.mkdir(), (folder / "model.safetensors").write_text("seed 42", encoding="utf-8")),
    )
    assert store.install(lambda current: None) == searched
    target = Marker(trial=1, value=0.65, epoch=3, objective="f1", confirmed=True, seed=44)
    assert store.install(lambda current: (target, source)) == target  # lower than the search's: swapped in all the same
    assert (store.folder / "model.safetensors").read_text(encoding="utf-8") == "seed 44"
    assert Marker.read(store.folder) == target
    assert sorted(p.name for p in store.study_dir.iterdir()) == [
        ".best-model.lock",
        "best-model",
    ]  # no copy left behind
