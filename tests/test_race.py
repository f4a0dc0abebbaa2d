"""`hpsearch run --seeds S`: challengers race the incumbent on its seeds inside the search.

The rule (hpsearch.analysis.race) is tested on hand-made scores; the scheduler through real
searches on the tiny model. Where a test needs a challenger to fall behind or stay ahead, a
``model_init`` hook (docs/python.md) fixes each run's predictions by the run's configuration
and seed: its classifier's bias calls every example positive (F1 = 2p / (1 + p)) or negative
(F1 0), whatever the few training steps do. Everything else is the real thing: the Trainer,
the storage, the worker loop, the CLI.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch
from conftest import finish, hpsearch_argv, start_hpsearch, tiny_run_args, wait_for_file
from optuna.trial import TrialState
from test_card import no_png  # noqa: F401  (a fixture)
from test_confirm import MEET_AT_FIRST_RUN  # a worker's first run waits for the other's

from hpsearch import load_config, run_search, schema
from hpsearch.analysis.race import DROPPED, RACING, REFERENCE, TOOK_OVER, Race, replay
from hpsearch.bestmodel import Marker
from hpsearch.search.study import open_confirmation

URL = "sqlite:///studies/hpsearch.db"
FAST = ("--epochs", "1", "--pruner", "none", "--max-train-samples", "64", "--max-eval-samples", "32")
TIMEOUT = 300


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def _studies() -> tuple[optuna.Study, optuna.Study]:
    search = optuna.load_study(study_name="hpsearch", storage=URL)
    return search, optuna.load_study(study_name="hpsearch" + schema.CONFIRM_SUFFIX, storage=URL)


def _runs(runs_study: optuna.Study, state: TrialState = TrialState.COMPLETE) -> Counter:
    return Counter((schema.confirms(t), schema.run_seed(t)) for t in runs_study.trials if t.state == state)


def _race() -> Race:
    return Race.from_dict(schema.read_race(_studies()[1]))


@pytest.fixture(scope="module")
def raced(tiny_model, tmp_path_factory) -> tuple[Path, str, str]:
    """A folder holding a finished race (4 trials, 3 seeds) made once by `hpsearch run`, with its output."""
    folder = tmp_path_factory.mktemp("raced")
    done = subprocess.run(
        hpsearch_argv(*tiny_run_args(tiny_model, *FAST, "--trials", "4", "--seeds", "3")),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, done.stdout, done.stderr


@pytest.fixture
def raced_copy(raced, workdir) -> tuple[str, str]:
    shutil.copytree(raced[0] / "studies", workdir / "studies")
    return raced[1], raced[2]


# --------------------------------------------------------------------------- the rule


def _scores(**by_trial: list[float]) -> dict[tuple[int, int], float]:
    return {(int(t[1:]), 42 + i): v for t, values in by_trial.items() for i, v in enumerate(values)}


def test_the_recipe_runs_its_seeds_first_and_later_trials_wait():
    race = replay([42, 43, 44], 0, [(1, 0.9)], _scores(t0=[0.8]), recipe_running=False)
    assert (race.needed, race.waiting, race.incumbent) == (((0, 43), (0, 44)), (1,), None)
    # while the recipe's own trial runs, its first seed is coming: only the others are asked for
    assert replay([42, 43, 44], 0, [], {}, recipe_running=True).needed == ((0, 43), (0, 44))
    # a pruned recipe has no score on the first seed: a seed run gives it one
    assert replay([42, 43], 0, [], {}, recipe_running=False).needed == ((0, 42), (0, 43))


def test_a_first_run_below_mean_minus_std_stays_out_and_one_within_enters_on_the_next_seed():
    recipe = _scores(t0=[0.80, 0.90, 0.70])  # mean 0.80, std 0.10: the bar is 0.70
    race = replay([42, 43, 44], 0, [(1, 0.69), (2, 0.70)], recipe)
    assert race.stayed_out == (1,)
    assert race.entry(2) == Race.from_dict(race.to_dict()).entry(2)
    assert (race.entry(2).outcome, race.entry(2).threshold, race.needed) == (RACING, pytest.approx(0.70), ((2, 43),))
    # trial 2 lost to the recipe's run of its own seed (0.70 < 0.80) and still races: one seed is not a verdict


def test_a_challenger_drops_out_as_soon_as_its_mean_on_shared_seeds_is_below_the_incumbent_s():
    runs = _scores(t0=[0.80, 0.90, 0.70], t1=[0.85, 0.80])  # after two seeds: 0.825 < 0.85
    race = replay([42, 43, 44], 0, [(1, 0.85), (2, 0.95)], runs)
    assert (race.entry(1).outcome, race.entry(1).seeds_run, race.entry(1).at_seed) == (DROPPED, 2, 43)
    assert race.incumbent == 0 and race.needed == ((2, 43),)  # the next one races on


def test_a_challenger_that_keeps_a_higher_mean_over_every_seed_takes_over_and_a_tie_keeps_the_incumbent():
    runs = _scores(t0=[0.80, 0.90, 0.70], t1=[0.80, 0.90, 0.71], t2=[0.80, 0.90, 0.70])
    race = replay([42, 43, 44], 0, [(1, 0.80), (2, 0.80)], runs)
    assert (race.entry(1).outcome, race.entry(1).at_seed, race.incumbent) == (TOOK_OVER, 44, 1)
    # trial 2 is judged against the new incumbent, whose bar is higher, and ties with it on two seeds
    assert race.entry(2).against == 1 and race.entry(2).outcome == DROPPED
    assert race.entry(0).outcome == REFERENCE and race.settled


# --------------------------------------------------------------------------- through the CLI


def test_the_recipe_gets_s_seeds_and_the_search_study_sees_only_first_runs(raced_copy, workdir):
    out, err = raced_copy
    search, runs_study = _studies()
    assert len(search.trials) == 4 and all(schema.confirms(t) is None for t in search.trials)
    race = _race()
    assert race.entry(0).outcome == REFERENCE and race.entry(0).seeds_run == 3
    complete = _runs(runs_study)
    assert {(0, 43), (0, 44)} <= set(complete) and set(complete.values()) == {1}
    recipe_runs = [t for t in runs_study.trials if schema.confirms(t) == 0]
    assert [t.params for t in recipe_runs] == [search.trials[0].params] * 2  # the recipe's parameters, each seed
    assert "race: the recipe (trial 0) over seeds 42..44:" in err
    assert re.search(r"^seed run 0 \(trial 0, seed 43\)", err, re.M)  # named as a seed run, with no claim of a best
    assert "seed run 0 (trial 0, seed 43) complete" in err and "★" not in err.split("seed run 0 (trial 0")[1][:200]
    # the race's winner is shipped: its run of the last seed, and the output says so
    marker = Marker.read(workdir / "studies" / "hpsearch" / "best-model")
    assert (marker.confirmed, marker.trial, marker.seed) == (True, race.incumbent, 44)
    assert "race winner: trial" in out and out.strip().splitlines()[-1].startswith("Verdict: ")


def test_seeds_1_gives_the_same_study_as_a_plain_search(tiny_model, tmp_path, monkeypatch, cli):
    def search_in(name: str, *extra: str) -> list:
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        assert cli(*tiny_run_args(tiny_model, *FAST, "--trials", "3", *extra))[0] == 0
        study = optuna.load_study(study_name="hpsearch", storage=URL)
        names = [s.study_name for s in optuna.get_all_study_summaries(URL)]
        ignored = {schema.WORKER, schema.HEARTBEAT, schema.COST, schema.DEVICE}
        trials = [
            (t.number, t.state, t.value, t.params, {k: v for k, v in t.user_attrs.items() if k not in ignored})
            for t in study.trials
        ]
        return [names, trials]

    assert search_in("plain") == search_in("one-seed", "--seeds", "1")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--confirm-top", "2"), "--confirm-top 2 confirms on --seeds seeds, got --seeds 1; pass --seeds 2 or more"),
        (("--confirm-top", "2", "--seeds", "1"), "--confirm-top 2 confirms on --seeds seeds, got --seeds 1"),
        (("--seeds", "0"), "seeds: expected an integer >= 1, got 0"),
    ],
)
def test_a_contradictory_seeds_and_confirm_top_is_one_line_and_exit_2(tiny_model, workdir, cli, flags, message):
    code, out, err = cli(*tiny_run_args(tiny_model, *FAST, *flags))
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert list(workdir.iterdir()) == []


@pytest.mark.usefixtures("no_png")
def test_the_card_s_race_table_agrees_with_storage(raced_copy, workdir, cli):
    assert cli("card", "best")[0] == 0
    card = (workdir / "studies" / "hpsearch" / "best-model" / "README.md").read_text("utf-8")
    section = card.split("### Seed race", 1)[1].split("### How far to trust", 1)[0]
    assert "drops out as soon as its mean over the shared seeds is below the incumbent's" in section
    rows = [line.split(" | ") for line in section.splitlines() if re.match(r"^\| \d", line)]
    search, runs_study = _studies()
    race = _race()
    assert [int(r[0].strip("| ")) for r in rows] == [e.trial for e in race.entries]
    values = {(t.number, 42): t.value for t in search.trials if t.state == TrialState.COMPLETE}
    values |= {(schema.confirms(t), schema.run_seed(t)): t.value for t in runs_study.trials if t.value is not None}
    for row, entry in zip(rows, race.entries, strict=True):
        mine = [values[(entry.trial, s)] for s in race.seeds if (entry.trial, s) in values]
        assert row[1] == f"{len(mine)} of 3"
        assert row[2].startswith(f"{sum(mine) / len(mine):.4f}")
        note = row[-1]
        if entry.outcome == DROPPED:
            assert f"dropped after seed {entry.at_seed}" in note and len(mine) == entry.seeds_run
        if entry.trial == race.incumbent:
            assert "winner" in note and len(mine) == 3
    # trials, its JSON, the report and the dashboard note show the same race
    from hpsearch.views.notes import study_note

    assert "seed race (settled)" in cli("trials")[1]
    records = json.loads(cli("trials", "--json")[1])
    raced = {r["number"]: r["confirmation"] for r in records if r["confirmation"]}
    assert sorted(raced) == sorted(e.trial for e in race.entries)
    assert [n for n, c in raced.items() if c["winner"]] == [race.incumbent]
    assert all(c["race"] for c in raced.values())
    code, out, err = cli("report")
    assert code == 0, err
    assert "Seed race (settled)" in Path(out.strip()).read_text(encoding="utf-8")
    note = study_note(search, workdir="studies", confirmation=open_confirmation(search, URL))
    assert "### Seed race (settled)" in note and f"- race winner: trial {race.incumbent}'s" in note


# --------------------------------------------------------------------------- the scheduler, with fixed predictions

# (mode, seed) pairs whose run calls every example negative; every other run calls it positive.
NEGATIVE = {("recipe", 44), ("behind", 43), ("out", 42)}


def fixed_calls(values, model):
    """The run's predictions, fixed by its configuration (the own parameter ``mode``) and seed."""
    negative = (values["mode"], values["seed"]) in NEGATIVE
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([100.0, -100.0] if negative else [-100.0, 100.0]))
    return model


def _fixed_config(tiny_model: Path, trials: int):
    values = {"model": str(tiny_model), "epochs": 1, "max_length": 32, "pruner": "none", "max_train_samples": 32}
    values |= {"max_eval_samples": 32, "trials": trials, "seeds": 3, "recipe": {"mode": "recipe"}}
    return load_config(None, values | {"space": {"mode": {"choices": ["recipe", "behind", "ahead", "out"]}}})


def test_a_challenger_behind_on_its_second_seed_stops_at_two_runs_and_one_ahead_takes_over_with_s(tiny_model, workdir):
    run_search(_fixed_config(tiny_model, 1), model_init=fixed_calls)
    search, _ = _studies()
    for mode in ("behind", "ahead", "out"):
        search.enqueue_trial({"mode": mode})
    result = run_search(_fixed_config(tiny_model, 4), model_init=fixed_calls)
    search, runs_study = _studies()
    number = {t.params["mode"]: t.number for t in search.trials}
    race = _race()
    behind, ahead = race.entry(number["behind"]), race.entry(number["ahead"])
    assert (behind.outcome, behind.seeds_run, behind.at_seed) == (DROPPED, 2, 43)
    assert (ahead.outcome, ahead.seeds_run, race.incumbent) == (TOOK_OVER, 3, number["ahead"])
    assert race.stayed_out == (number["out"],) and race.settled
    # exactly those runs, each once: the recipe's seeds, one more for "behind", two more for "ahead"
    expected = {(0, 43), (0, 44), (number["behind"], 43), (number["ahead"], 43), (number["ahead"], 44)}
    assert _runs(runs_study) == Counter(expected)
    assert len(runs_study.trials) == len(expected)
    # the winner ships its run of the last seed, and the card's "best" is that configuration
    assert result.shipped_seed == 44
    marker = Marker.read(workdir / "studies" / "hpsearch" / "best-model")
    assert (marker.confirmed, marker.trial, marker.seed) == (True, number["ahead"], 44)
    confirmation = open_confirmation(search, URL)
    assert confirmation.winner.trial == number["ahead"] and len(confirmation.winner.complete) == 3
    assert confirmation.comparison().difference > 0  # against the recipe, over the same three seeds


# --------------------------------------------------------------------------- interrupted, and shared


# Holds the first run whose Trainer run name starts with {prefix!r}: a signal then lands mid-run.
HOLD = """
import time
from pathlib import Path
import transformers

train = transformers.Trainer.train

def held(self, *args, **kwargs):
    if (self.args.run_name or "").startswith({prefix!r}):
        Path("training").touch()
        time.sleep(600)
    return train(self, *args, **kwargs)

transformers.Trainer.train = held
"""


def _wanted(race: Race) -> set[tuple[int, int]]:
    """The seed runs the rule asks for, given the scores stored: every entry's seeds after its first."""
    return {(e.trial, s) for e in race.entries for s in race.seeds[1 : e.seeds_run]}


@pytest.mark.parametrize(
    ("held", "where"),
    [("hpsearch.confirm/", "the recipe's first seed run"), ("hpsearch/trial-0", "the recipe's trial")],
)
def test_an_interrupted_race_resumes_to_exactly_the_runs_it_needs(tiny_model, workdir, cli, held, where):
    args = tiny_run_args(tiny_model, *FAST, "--trials", "3", "--seeds", "3")
    proc = start_hpsearch(workdir, "first", *args, hook=HOLD.format(prefix=held))
    try:
        wait_for_file(workdir / "training", proc, TIMEOUT)
    except AssertionError:
        proc.kill()
        raise AssertionError((workdir / "first.err").read_text()[-2000:]) from None
    proc.send_signal(signal.SIGINT)
    assert finish(proc, workdir, "first") == 130
    search, runs_study = _studies()
    failed = [t for t in [*search.trials, *runs_study.trials] if t.state == TrialState.FAIL]
    assert [schema.fail_reason(t) for t in failed] == [schema.INTERRUPTED], where
    assert (schema.confirms(failed[0]), schema.run_seed(failed[0])) == ((0, 43) if "confirm" in held else (None, None))
    code, out, err = cli(*args)
    assert code == 0, err
    search, runs_study = _studies()
    race, complete = _race(), _runs(runs_study)
    assert race.settled and sum(t.state == TrialState.COMPLETE for t in search.trials) == 3
    # the interrupted run again, once; no other run, and no seed run standing in for the recipe's own trial
    assert set(complete) == _wanted(race) and set(complete.values()) == {1}
    assert len(runs_study.trials) + len(search.trials) == len(complete) + 3 + 1  # the interrupted one stays, failed


def test_two_workers_share_a_race_without_running_anything_twice(tiny_model, workdir):
    args = tiny_run_args(tiny_model, *FAST, "--trials", "4", "--seeds", "3")
    procs = [start_hpsearch(workdir, f"w{i}", *args, hook=MEET_AT_FIRST_RUN) for i in range(2)]
    codes = [finish(p, workdir, f"w{i}") for i, p in enumerate(procs)]
    assert codes == [0, 0], [(workdir / f"w{i}.err").read_text()[-1500:] for i in range(2)]
    search, runs_study = _studies()
    complete = _runs(runs_study)
    assert set(complete.values()) == {1} and len(runs_study.trials) == len(complete)  # none twice, none failed
    race = _race()
    assert race.settled and len(search.trials) == 4
    assert set(complete) == _wanted(race)  # exactly the runs the rule asks for
    workers = {schema.worker(t).rpartition(":")[2] for t in [*search.trials, *runs_study.trials]}
    assert workers == {str(p.pid) for p in procs}


def test_confirm_works_on_a_raced_study_and_reuses_the_race_s_runs(raced_copy, workdir, cli):
    _, runs_study = _studies()
    before = {(schema.confirms(t), schema.run_seed(t)): t.number for t in runs_study.trials}
    code, out, err = cli("confirm", "--top", "1", "--seeds", "4")  # the race had 3 seeds
    assert code == 0, err
    search, runs_study = _studies()
    complete = _runs(runs_study)
    assert set(complete.values()) == {1}  # nothing the race ran is run again
    assert {(0, 43), (0, 44), (0, 45)} <= set(complete)
    after = {(schema.confirms(t), schema.run_seed(t)): t.number for t in runs_study.trials}
    assert all(after[key] == number for key, number in before.items())
    confirmation = open_confirmation(search, URL)
    assert confirmation.race is None and confirmation.done  # the confirmation now speaks for the seeds
    assert "seed confirmation (confirmed)" in cli("trials")[1]
