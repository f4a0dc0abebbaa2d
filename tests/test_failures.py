"""Failing trials are recorded and the search goes on; interruptions lose nothing."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import hpsearch_argv, tiny_run_args, wait_for_file
from optuna.trial import TrialState
from transformers import TrainerCallback

from hpsearch import SearchStopped, StorageError, load_config, run_search, schema
from hpsearch.search.storage import open_storage

STORAGE = "sqlite:///studies/hpsearch.db"


class Inject(TrainerCallback):
    """Breaks the training of chosen trials (counted from 0 in the order they run)."""

    def __init__(self, kind: str, trials: set[int] | None = None) -> None:
        self.kind, self.trials, self.seen = kind, trials, -1

    def on_train_begin(self, args, state, control, **kwargs):
        self.seen += 1

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.trials is not None and self.seen not in self.trials:
            return
        if self.kind == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if self.kind == "nan":
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(math.nan)
        if self.kind == "error":
            raise ValueError("something broke inside training")


def _config(tiny_model: Path, **overrides):
    return load_config(None, {"model": str(tiny_model), "epochs": 1, "max_length": 32, "pruner": "none", **overrides})


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("nan", "non-finite loss: training loss became nan at epoch 1"),
        ("oom", "out of memory: CUDA out of memory. Tried to allocate 20.00 GiB"),
    ],
)
def test_a_failing_trial_is_recorded_and_the_study_finishes_the_rest(workdir, tiny_model, kind, reason):
    run_search(_config(tiny_model, trials=3), callbacks=[Inject(kind, trials={1})])
    study = optuna.load_study(study_name="hpsearch", storage=STORAGE)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[1].user_attrs["fail_reason"] == reason
    assert [t.user_attrs.get("recipe", False) for t in study.trials] == [True, False, False, False]
    best = workdir / "studies" / "hpsearch" / "best-model" / "hpsearch.json"
    assert best.is_file()


def test_consecutive_failures_stop_the_run_with_the_reason(workdir, tiny_model):
    with pytest.raises(
        SearchStopped,
        match=r"stopped after 3 consecutive failed trials \(last: ValueError: something broke inside training\)",
    ):
        run_search(_config(tiny_model, trials=10), callbacks=[Inject("error")])
    study = optuna.load_study(study_name="hpsearch", storage=STORAGE)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    # Each failure of the recipe enqueues it again: a study never loses its baseline.
    assert [t.user_attrs.get("recipe") for t in study.trials] == [True] * 3


@pytest.mark.parametrize("kind", ["oom", "error"])
def test_a_recipe_trial_that_fails_for_any_reason_runs_again(workdir, tiny_model, kind):
    run_search(_config(tiny_model, trials=2), callbacks=[Inject(kind, trials={0})])
    study = optuna.load_study(study_name="hpsearch", storage=STORAGE)
    assert [(t.state, t.user_attrs.get("recipe", False)) for t in study.trials] == [
        (TrialState.FAIL, True),
        (TrialState.COMPLETE, True),
        (TrialState.COMPLETE, False),
    ]
    assert study.trials[0].params == study.trials[1].params


def test_consecutive_failures_exit_1_through_the_cli(workdir, tiny_model, cli, monkeypatch):
    import hpsearch.training.objective as objective

    real = objective.Objective._trainer

    def broken(self, *args):
        self.hooks = dataclasses.replace(self.hooks, callbacks=[Inject("error")])
        return real(self, *args)

    monkeypatch.setattr(objective.Objective, "_trainer", broken)
    code, _, err = cli("run", "--model", tiny_model, "--epochs", "1", "--max-length", "32", "--trials", "5")
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("hpsearch: error: stopped after 3 consecutive failed trials")


# --------------------------------------------------------------------------- interruptions


def _spawn(folder: Path, tiny_model: Path, trials: int, epochs: int) -> subprocess.Popen:
    # One torch thread, as a user's worker on a shared machine: beside busy processes, two
    # threads that wait on each other slow each epoch many times over.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    argv = [
        sys.executable,
        "-m",
        "hpsearch",
        "run",
        "--model",
        str(tiny_model),
        "--max-length",
        "32",
        "--pruner",
        "none",
        "--trials",
        str(trials),
        "--epochs",
        str(epochs),
    ]
    return subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# Waits are on events in storage; the limits only keep a hung process from hanging the suite.
# Beside `stress --cpu 2` a whole interrupt-and-resume test takes 29 to 68 s; three waits of
# this limit stay under the per-test limit (pyproject.toml).
LIMIT = 180


def _wait_for_running_epoch(folder: Path, proc: subprocess.Popen, trial_number: int, timeout: float = LIMIT) -> None:
    """Wait until trial ``trial_number`` is running and has finished an epoch (mid-trial)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (folder / "studies" / "hpsearch.db").exists():
            try:
                # open_storage, as the CLI does: the run may be creating the tables right now.
                storage = open_storage(f"sqlite:///{folder}/studies/hpsearch.db", create=False)
                trials = optuna.load_study(study_name="hpsearch", storage=storage).get_trials(deepcopy=False)
            except (KeyError, StorageError):  # the study is not made yet, or the file is busy
                trials = []
            if (
                len(trials) > trial_number
                and trials[trial_number].state == TrialState.RUNNING
                and trials[trial_number].user_attrs.get("epochs")
            ):
                return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the trial never reached its first epoch")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_mid_trial_records_it_failed_and_the_same_command_resumes(tmp_path, tiny_model, sig):
    # Ten epochs a trial: once its first shows in storage, nine remain for the signal to land in.
    proc = _spawn(tmp_path, tiny_model, trials=3, epochs=10)
    _wait_for_running_epoch(tmp_path, proc, trial_number=1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=LIMIT)
    assert proc.returncode == 130, err
    assert "interrupted; the running trial is recorded as failed" in err
    assert "Traceback" not in err
    study = optuna.load_study(study_name="hpsearch", storage=f"sqlite:///{tmp_path}/studies/hpsearch.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs["fail_reason"] == "interrupted"
    # the best model is trial 0's, whole; no temporary folder is left behind
    study_folder = tmp_path / "studies" / "hpsearch"
    assert (study_folder / "best-model" / "hpsearch.json").is_file()
    assert sorted(p.name for p in study_folder.iterdir() if p.name.startswith(".best-model.tmp")) == []

    proc = _spawn(tmp_path, tiny_model, trials=3, epochs=10)
    out, err = proc.communicate(timeout=LIMIT)
    assert proc.returncode == 0, err
    study = optuna.load_study(study_name="hpsearch", storage=f"sqlite:///{tmp_path}/studies/hpsearch.db")
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    assert len(study.trials) == 4  # the interrupted trial stays, failed, and is not counted


# Run first in the process (conftest.hpsearch_argv): its first trial trains until a signal
# comes, and then takes its time to stop, as a Trainer writing a checkpoint would.
SLOW_TO_STOP = """
import time
from pathlib import Path
import transformers

def held(self, *args, **kwargs):
    Path("training").touch()
    try:
        time.sleep(600)
    except KeyboardInterrupt:
        Path("stopping").touch()  # the first interrupt is being handled
        time.sleep(600)
        raise

transformers.Trainer.train = held
"""


def test_a_second_interrupt_exits_at_once_and_the_next_run_cleans_up(tmp_path, tiny_model, cli, monkeypatch):
    args = tiny_run_args(tiny_model, "--pruner", "none", "--trials", "1", "--epochs", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        hpsearch_argv(*args, hook=SLOW_TO_STOP),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_file(tmp_path / "training", proc, LIMIT)
        proc.send_signal(signal.SIGINT)
        wait_for_file(tmp_path / "stopping", proc, LIMIT)
        proc.send_signal(signal.SIGINT)
        # Stopping would take 600 s; the second interrupt ends the process without waiting for it.
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the process was still stopping 60 s after the second interrupt")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        "hpsearch: second interrupt, exiting now; the next run marks the open trial failed"
    )
    url = f"sqlite:///{tmp_path}/studies/hpsearch.db"
    (trial,) = optuna.load_study(study_name="hpsearch", storage=url).trials
    assert trial.state == TrialState.RUNNING  # left open: the process ended before telling it
    assert schema.FAIL_REASON not in trial.user_attrs

    # The next run, the same command, fails the open trial and trains the recipe again.
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*args)
    assert code == 0, err
    trials = optuna.load_study(study_name="hpsearch", storage=url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert schema.fail_reason(trials[0]).startswith(f"worker {socket.gethostname()}:{proc.pid} ")
    assert [schema.is_recipe(t) for t in trials] == [True, True]
