"""Faults a search must survive with nothing lost: a full disk at the best model's save, and a
storage server that goes away and comes back (or does not)."""

from __future__ import annotations

import errno
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import free_port, missing_service, tiny_run_args
from optuna.trial import TrialState

from hpsearch import load_config, run_search, schema
from hpsearch.bestmodel import Marker


def test_a_full_disk_at_the_save_fails_that_trial_and_keeps_the_kept_model_whole(workdir, tiny_model, monkeypatch):
    from transformers import Trainer

    real, calls = Trainer.save_model, []

    def full_disk_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "save_model", full_disk_once)
    config = load_config(None, {"model": str(tiny_model), "epochs": 1, "max_length": 32, "pruner": "none", "trials": 2})
    run_search(config)
    study = optuna.load_study(study_name="hpsearch", storage="sqlite:///studies/hpsearch.db")
    first, recipe_again = study.trials[:2]
    assert (first.state, schema.fail_reason(first)) == (
        TrialState.FAIL,
        "its model could not be saved: [Errno 28] No space left on device",
    )
    assert schema.is_recipe(recipe_again) and schema.kept_model(recipe_again)
    assert schema.count_finished(study.trials) == 2
    folder = workdir / "studies" / "hpsearch"
    assert Marker.read(folder / "best-model").trial == recipe_again.number
    assert [p.name for p in folder.iterdir() if p.name.startswith((".best-model.tmp", "best-model.old"))] == []
    from hpsearch.cli import main

    assert main(["card", "best"]) == 0


# --------------------------------------------------------------------------- a storage server that goes away


def _redis(port: int, folder: Path) -> subprocess.Popen:
    """A Redis of the test's own that keeps its data on disk, so that a restart loses nothing."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing_service("redis", "no redis-server binary to start a server of the test's own")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    import redis

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port, socket_timeout=1).ping()
            return proc
        except redis.RedisError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the test's Redis did not start")


def _running_trial(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    from hpsearch.search.storage import open_storage

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            trials = optuna.load_study(study_name="hpsearch", storage=open_storage(url, create=False)).get_trials(
                deepcopy=False
            )
        except Exception:
            trials = []
        if any(t.state == TrialState.RUNNING and schema.rows(t) for t in trials):
            return
        time.sleep(0.2)
    raise AssertionError("no trial got under way")


ARGS = (
    "--epochs",
    "8",
    "--early-stopping-patience",
    "0",
    "--pruner",
    "none",
    "--max-train-samples",
    "128",
    "--max-eval-samples",
    "16",
)


def test_a_storage_server_restarted_mid_trial_loses_and_doubles_nothing(tmp_path, tiny_model):
    pytest.importorskip("redis")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = _redis(port, tmp_path)
    run = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", *tiny_run_args(tiny_model, *ARGS, "--trials", "2", "--storage", url)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _running_trial(url, run)
        server.send_signal(signal.SIGKILL)
        server.wait()
        time.sleep(3)
        server = _redis(port, tmp_path)
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        from hpsearch.search.storage import open_storage

        trials = optuna.load_study(study_name="hpsearch", storage=open_storage(url, create=False)).trials
        assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
        assert [len(schema.rows(t)) for t in trials] == [8, 8]
    finally:
        run.kill()
        server.kill()


def test_a_storage_server_that_stays_away_ends_the_worker_in_one_line(tmp_path, tiny_model):
    pytest.importorskip("redis")
    port = free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    server = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--requirepass",
            "s3cret",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        import redis

        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=port, password="s3cret", socket_timeout=1).ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hpsearch",
                *tiny_run_args(tiny_model, *ARGS, "--trials", "2", "--storage", url, "--storage-timeout", "3"),
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _running_trial(url, run)
        server.kill()
        server.wait()
        out, err = run.communicate(timeout=120)
        assert run.returncode == 2, err
        last = err.strip().splitlines()[-1]
        assert last.startswith(
            f"hpsearch: error: storage redis://:***@127.0.0.1:{port}/0 "
            "stopped answering and did not come back within 3 s"
        ), err
        assert "s3cret" not in err and "Traceback" not in err
    finally:
        server.kill()
