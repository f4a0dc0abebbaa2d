"""What a search cost: each trial's time and energy, the study's total, and what the card says of it.

The rules of the sum and of the card run on hand-made trials; the end-to-end tests run a
real tiny-model search (a complete, a failed and pruned trials, and a confirmation run) in
a new process, whose stderr shows whether codecarbon stayed quiet.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import test_card
from conftest import hpsearch_argv, tiny_run_args
from huggingface_hub import ModelCard
from optuna.trial import TrialState, create_trial

import hpsearch.views.plots as plots
from hpsearch import schema
from hpsearch.analysis.cost import total_cost
from hpsearch.card.render import write_card
from hpsearch.training.cost import CostMeter
from hpsearch.views.report import render_report
from hpsearch.views.trials import trial_record, trials_table

STORAGE = "sqlite:///studies/hpsearch.db"
NO_EMISSIONS = (
    "Energy and CO2eq were not measured: codecarbon is not installed (`pip install 'hpsearch[cost]'`) or could "
    "not measure on this machine, so the card carries no `co2_eq_emissions` metadata."
)
TRACKER = {"name": "codecarbon", "version": "3.3.2", "country_name": "United States", "cpu_power": "cpu_load"}
HARDWARE = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_count": 2, "gpu": None, "gpu_count": 0}


def cost(wall: float, energy: float | None = None, co2: float | None = None) -> dict[str, Any]:
    measured = energy is not None
    return {
        "wall_seconds": wall,
        "device_seconds": wall / 2,
        "energy_kwh": energy,
        "co2_g": co2,
        "tracker": TRACKER if measured else None,
        "hardware": HARDWARE if measured else None,
    }


def trial(state: TrialState, spent: dict[str, Any] | None) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        user_attrs={schema.COST: spent} if spent else {},
    )


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.fixture
def no_png(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(figs, folder):
        raise plots.PngUnavailable("no PNG engine in this test")

    monkeypatch.setattr(plots, "render_pngs", fail)


# --------------------------------------------------------------------------- the sum


def test_the_total_sums_complete_pruned_and_failed_trials():
    trials = [
        trial(TrialState.COMPLETE, cost(10.0, 0.002, 0.8)),
        trial(TrialState.PRUNED, cost(4.0, 0.001, 0.4)),
        trial(TrialState.FAIL, cost(2.0, 0.0005, 0.2)),
    ]
    total = total_cost(trials)
    assert (total.runs, total.measured, total.unrecorded) == (3, 3, 0)
    assert total.wall_seconds == 16.0 and total.device_seconds == 8.0
    assert total.energy_kwh == pytest.approx(0.0035) and total.co2_g == pytest.approx(1.4)
    assert total.countries == ["United States"]
    assert total.hardware == ["Intel(R) Xeon(R) Processor (2 threads)"]


def test_a_running_trial_and_one_without_a_cost_are_left_out_and_counted():
    trials = [
        trial(TrialState.COMPLETE, cost(10.0, 0.002, 0.8)),
        trial(TrialState.RUNNING, cost(99.0, 9.0, 9.0)),
        trial(TrialState.FAIL, None),
    ]
    total = total_cost(trials)
    assert (total.runs, total.unrecorded, total.wall_seconds, total.co2_g) == (1, 1, 10.0, 0.8)


def test_runs_timed_without_codecarbon_add_time_but_no_energy():
    total = total_cost([trial(TrialState.COMPLETE, cost(3.0)), trial(TrialState.PRUNED, cost(1.0, 0.001, 0.5))])
    assert (total.runs, total.measured, total.wall_seconds, total.co2_g) == (2, 1, 4.0, 0.5)
    assert total_cost([trial(TrialState.COMPLETE, cost(3.0))]).co2_g is None


def test_trials_that_stored_no_cost_have_no_total():
    assert total_cost([trial(TrialState.COMPLETE, None), trial(TrialState.FAIL, None)]) is None


# --------------------------------------------------------------------------- the meter


def test_without_codecarbon_the_meter_times_and_measures_no_energy(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # as if not installed: its import fails
    with CostMeter() as meter:
        busy(0.2)
    spent = meter.cost
    assert spent.wall_seconds >= 0.2 and spent.device_seconds > 0  # CPU time: less where cores are shared
    assert (spent.energy_kwh, spent.co2_g, spent.tracker, spent.hardware) == (None, None, None, None)


def test_codecarbon_measures_quietly_and_writes_no_file(workdir, capfd):
    pytest.importorskip("codecarbon")
    before = logging.getLogger("codecarbon").level
    with CostMeter() as meter:
        busy(0.3)
    spent = meter.cost
    assert spent.energy_kwh > 0 and spent.co2_g > 0
    assert spent.tracker["name"] == "codecarbon" and spent.tracker["cpu_power"]
    assert spent.hardware["cpu"]
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert logging.getLogger("codecarbon").level == before
    assert list(workdir.iterdir()) == []  # no emissions.csv, no lock file


# --------------------------------------------------------------------------- the card, on hand-made trials


def costed_study(monkeypatch: pytest.MonkeyPatch, costs: list[dict[str, Any]]) -> None:
    """The card tests' study (recipe 0, golden best 1, pruned 2, failed 3), each trial with ``costs[n]``."""
    add = test_card.add_trial
    made = iter(costs)

    def add_with_cost(study, config, params, rows, **kwargs):
        kwargs["attrs"] = {**(kwargs.get("attrs") or {}), schema.COST: next(made)}
        add(study, config, params, rows, **kwargs)

    monkeypatch.setattr(test_card, "add_trial", add_with_cost)
    test_card.make_study()


def test_the_card_gives_the_search_total_beside_this_models_share(workdir, no_png, monkeypatch):
    costed_study(monkeypatch, [cost(10.0, 0.001, 0.4), cost(11.0, 0.002, 0.8), cost(4.0, 0.0005, 0.2), cost(2.0)])
    path = write_card(test_card.search_config(), "best").path
    text = path.read_text(encoding="utf-8")
    assert "| The search: 4 trials | 27.0s | 13.5s | 0.0035 | 1.4 |" in text
    assert "| This model: trial 1 | 11.0s | 5.5s | 0.002 | 0.8 (57.1% of the search) |" in text
    assert "It measured 3 of the 4 runs" in text
    assert "metadata reports the whole search" in text
    co2 = ModelCard.load(path).data.co2_eq_emissions
    assert co2 == {
        "emissions": pytest.approx(1.4),
        "source": "codecarbon",
        "training_type": "fine-tuning",
        "geographical_location": "United States",
        "hardware_used": "Intel(R) Xeon(R) Processor (2 threads)",
    }


def test_without_emissions_the_card_says_so_in_one_line_and_carries_no_metadata(workdir, no_png, monkeypatch):
    costed_study(monkeypatch, [cost(10.0), cost(11.0), cost(4.0), cost(2.0)])
    path = write_card(test_card.search_config(), "best").path
    text = path.read_text(encoding="utf-8")
    assert "| The search: 4 trials | 27.0s | 13.5s |" in text
    assert NO_EMISSIONS in text.splitlines()
    assert "co2_eq_emissions" not in text.split("\n---\n")[0]
    assert getattr(ModelCard.load(path).data, "co2_eq_emissions", None) is None


def test_a_study_without_costs_has_no_compute_section(workdir, no_png):
    test_card.make_study()
    text = write_card(test_card.search_config(), "best").path.read_text(encoding="utf-8")
    assert "#### Compute" not in text and "co2_eq_emissions" not in text


# --------------------------------------------------------------------------- the trials table


def test_the_table_shows_energy_and_fits_120_columns(workdir, cli):
    from test_trials import LONG_PRUNED_REASON, SPACE, handmade_study, output_lines, rows

    study = handmade_study()
    params = {"learning_rate": 1.234e-05, "per_device_train_batch_size": 32, "warmup_ratio": 0.1234}
    params["weight_decay"] = 0.0567
    for _ in range(96):  # three-digit trial numbers
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED,
                params=params,
                distributions=SPACE,
                intermediate_values={1: 0.4},
                user_attrs={
                    schema.EPOCHS: rows(0.4),
                    schema.PRUNED_REASON: LONG_PRUNED_REASON,
                    schema.COST: cost(3600.0, 0.9994, 400.0),
                    **schema.recipe_attrs(),
                },
            )
        )
    lines = output_lines(cli)
    assert "energy" in lines[0].split()
    assert "999Wh" in next(line for line in lines if line.startswith("100 "))
    assert max(len(line) for line in lines) <= 120, "\n".join(lines)


def test_the_table_has_no_energy_column_where_nothing_was_measured():
    records = [trial_record(trial(TrialState.COMPLETE, cost(3.0)))]
    assert "energy" not in [column.header for column in trials_table(records, "f1").columns]


def test_the_report_shows_each_trials_energy_and_the_total(workdir):
    from test_trials import SPACE, handmade_study, rows

    study = handmade_study(running=False)
    params = {"learning_rate": 3e-05, "per_device_train_batch_size": 8, "warmup_ratio": 0.0, "weight_decay": 0.0}
    user_attrs = {schema.EPOCHS: rows(0.5), schema.COST: cost(60.0, 0.002, 0.8)}
    study.add_trial(create_trial(value=0.5, params=params, distributions=SPACE, user_attrs=user_attrs))
    html = render_report(study)
    assert '<th title="measured by codecarbon">energy</th>' in html and "<td>2.0Wh</td>" in html
    assert "0.8 g CO2eq" in html


# --------------------------------------------------------------------------- a real search


FAIL_SECOND_TRIAL = """
import transformers
real, made = transformers.Trainer.training_step, [0]

def training_step(self, *args, **kwargs):
    if not hasattr(self, "nth_trainer"):
        made[0] += 1
        self.nth_trainer = made[0]
    if self.nth_trainer == 2:
        raise ValueError("the second trial breaks")
    return real(self, *args, **kwargs)

transformers.Trainer.training_step = training_step
"""
# A median pruner with no warm-up prunes the trials whose learning rates are too small to learn.
PRUNING = (
    "[pruner]\nname = 'median'\nwarmup_epochs = 0\nstartup_trials = 1\n"
    "[space]\nlearning_rate = { low = 1e-9, high = 2e-9, log = true }\n"
    "[recipe]\nlearning_rate = 3e-3\n"
)


@pytest.fixture(scope="module")
def searched(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A search (recipe complete, trial 1 failed, the rest pruned) and its confirmation, run in a
    new process; its folder and stderr."""
    folder = tmp_path_factory.mktemp("searched")
    (folder / "prune.toml").write_text(PRUNING, encoding="utf-8")
    args = tiny_run_args(tiny_model, "--config", "prune.toml", "--trials", "3", "--epochs", "3")
    args += ["--confirm-top", "1", "--seeds", "2"]
    done = subprocess.run(
        hpsearch_argv(*args, hook=FAIL_SECOND_TRIAL), cwd=folder, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr
    return folder, done.stderr


def _trials(folder: Path, name: str = "hpsearch") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/studies/hpsearch.db").trials


@pytest.mark.slow
def test_complete_pruned_and_failed_trials_record_their_time_and_energy(searched):
    folder, _ = searched
    trials = _trials(folder)
    assert {t.state for t in trials} == {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    measured = importlib.util.find_spec("codecarbon") is not None
    for t in trials:
        spent = schema.cost(t)
        assert spent["wall_seconds"] > 0 and spent["device_seconds"] > 0, t.number
        if measured:
            assert spent["energy_kwh"] > 0 and spent["co2_g"] > 0, t.number
            assert spent["tracker"]["name"] == "codecarbon" and spent["hardware"]["cpu"], t.number


@pytest.mark.slow
def test_codecarbon_stays_out_of_the_output_and_writes_no_file(searched):
    folder, err = searched
    assert "codecarbon" not in err.lower()
    assert not list(folder.rglob("emissions*.csv"))


@pytest.mark.slow
def test_the_study_total_is_the_sum_of_its_trials_and_confirmation_runs(searched):
    folder, _ = searched
    search, confirm = _trials(folder), _trials(folder, schema.confirm_study_name("hpsearch"))
    assert confirm
    runs = [schema.cost(t) for t in (*search, *confirm)]
    total = total_cost([*search, *confirm])
    assert total.runs == len(runs)
    assert total.wall_seconds == pytest.approx(sum(c["wall_seconds"] for c in runs))
    if total.co2_g is not None:
        assert total.co2_g == pytest.approx(sum(c["co2_g"] for c in runs))


@pytest.mark.slow
def test_the_cards_emissions_are_the_search_total_in_grams_and_parse_back(searched, monkeypatch, no_png, cli):
    pytest.importorskip("codecarbon")
    folder, _ = searched
    monkeypatch.chdir(folder)
    code, out, err = cli("card", "best")
    assert code == 0, err
    search, confirm = _trials(folder), _trials(folder, schema.confirm_study_name("hpsearch"))
    grams = sum(schema.cost(t)["co2_g"] for t in (*search, *confirm))
    co2 = ModelCard.load(out.splitlines()[-1]).data.co2_eq_emissions
    assert co2["emissions"] == pytest.approx(grams, rel=1e-12)
    assert co2["source"] == "codecarbon" and co2["training_type"] == "fine-tuning"


@pytest.mark.slow
def test_trials_json_carries_each_trials_cost(searched, monkeypatch, cli):
    folder, _ = searched
    monkeypatch.chdir(folder)
    code, out, err = cli("trials", "--json")
    assert code == 0, err
    assert [r["cost"] for r in json.loads(out)] == [schema.cost(t) for t in _trials(folder)]


@pytest.mark.slow
def test_without_codecarbon_a_search_and_its_card_still_work(workdir, tiny_model, monkeypatch, no_png, cli):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # as if not installed: its import fails
    code, _, err = cli(*tiny_run_args(tiny_model, "--trials", "1", "--epochs", "1"))
    assert code == 0, err
    spent = schema.cost(optuna.load_study(study_name="hpsearch", storage=STORAGE).trials[0])
    assert spent["wall_seconds"] > 0 and spent["energy_kwh"] is None and spent["co2_g"] is None
    code, out, err = cli("card", "best")
    assert code == 0, err
    path = Path(out.splitlines()[-1])
    assert NO_EMISSIONS in path.read_text(encoding="utf-8").splitlines()
    assert getattr(ModelCard.load(path).data, "co2_eq_emissions", None) is None
