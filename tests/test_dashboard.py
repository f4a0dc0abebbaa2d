"""`hpsearch dashboard`: the real optuna-dashboard in a subprocess, read back over HTTP.

The study is written by hand in the shapes `hpsearch run` writes (see test_trials.py),
except for the end-to-end test, which runs a real search on the tiny model first.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import optuna_dashboard
import pytest
from conftest import free_port, tiny_run_args
from optuna.trial import TrialState
from test_trials import URL, handmade_study, rows

from hpsearch.config import SearchConfig
from hpsearch.views.dashboard import after_run, artifact_dir, artifact_store, epoch_note, trial_artifacts, upload_card_artifacts, write_note

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32  # enough of a PNG for a MIME type and a byte compare


@contextlib.contextmanager
def dashboard(cwd: Path, *args: str, sigint_ignored: bool = False) -> Iterator[tuple[str, subprocess.Popen]]:
    """``hpsearch dashboard`` on a free port; yields (base URL, process) once it answers.

    ``sigint_ignored`` starts it as a non-interactive shell starts a background job.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "dashboard", "--port", str(port), *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dashboard exited with {proc.returncode}: {proc.stderr.read()}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{base}/api/meta", timeout=2).close()
                break
            if time.monotonic() > deadline:
                pytest.fail("dashboard did not answer within 60 s")
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            stream.close()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def study_detail(base: str, name: str = "hpsearch") -> dict:
    studies = get_json(f"{base}/api/studies")["study_summaries"]
    study_id = next(s["study_id"] for s in studies if s["study_name"] == name)
    return get_json(f"{base}/api/studies/{study_id}?after=0") | {"study_id": study_id}


def user_attr(trial: dict, key: str) -> str:
    """A served user attribute: the dashboard sends strings as they are, other values as JSON
    (cut at 1024 characters, which is why each trial's note has its full epoch table)."""
    return next(a["value"] for a in trial["user_attrs"] if a["key"] == key)


def served_epochs(trial: dict) -> list[dict]:
    return json.loads(user_attr(trial, "epochs"))


def kept_model(workdir: Path, trial: int, *files: str) -> Path:
    """A best-model folder as the run leaves it, with a card and plots as `hpsearch card` writes them."""
    folder = workdir / "studies" / "hpsearch" / "best-model"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hpsearch.json").write_text(json.dumps({"trial": trial, "value": 0.82, "epoch": 2, "objective": "f1"}), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"weights")
    for name in files:
        (folder / name).write_bytes(PNG if name.endswith(".png") else f"# card of trial {trial}\n".encode())
    return folder


# --------------------------------------------------------------------------- over HTTP


def test_dashboard_prints_its_url_and_serves_the_study_on_localhost(workdir):
    handmade_study()
    with dashboard(workdir) as (base, proc):
        detail = study_detail(base)
        assert detail["name"] == "hpsearch"
        assert detail["objective_names"] == ["validation f1"]
        assert [t["state"] for t in detail["trials"]] == ["Complete", "Complete", "Pruned", "Fail", "Running"]
        assert [t["number"] for t in detail["best_trials"]] == [1]
        page = urllib.request.urlopen(f"{base}/dashboard/", timeout=10)
        assert page.status == 200 and b"<html" in page.read().lower()
        assert proc.stdout.readline() == f"{base}/dashboard/\n"


@pytest.mark.parametrize(("shipped", "line"), [
    (2, "Shipped epoch 2, its best: a trial stopped early ships its best epoch (checkpoint rule: last)."),
    (4, "Shipped epoch 4 (checkpoint rule: last)."),  # as a trial stopped by an earlier release shipped
])
def test_a_stopped_trials_note_says_which_epoch_it_shipped(shipped, line):
    reason = "stopped early after epoch 4: validation f1 had not beaten 0.8000 for 2 epochs"
    trial = optuna.trial.create_trial(value=0.8, user_attrs={
        "epochs": rows(0.6, 0.8, 0.7, 0.75), "shipped_epoch": shipped, "checkpoint_rule": "last", "stopped_early": reason,
    })
    note = epoch_note(trial)
    assert line in note
    assert "Stopped early after epoch 4: validation f1 had not beaten 0.8000 for 2 epochs." in note


def test_study_note_summarises_recipe_space_and_best_against_recipe(workdir):
    handmade_study()
    with dashboard(workdir) as (base, _):
        note = study_detail(base)["note"]["body"]
    assert "| best | 1 | 0.8200 |" in note
    assert "| recipe | 0 | 0.7000 |" in note
    assert "the best trial beats the recipe by +0.1200 (+17.1%)" in note
    assert "Trials: 5 in all: 2 complete, 1 pruned, 1 failed, 1 running." in note
    assert "| `learning_rate` | 1e-05..0.0001 (log) | 5e-05 | 8e-05 |" in note
    assert "| `seed` | 42 |" in note


def test_each_trials_epochs_are_readable_as_attribute_note_and_plot(workdir):
    study = handmade_study()
    with dashboard(workdir) as (base, _):
        detail = study_detail(base)
    for served, stored in zip(detail["trials"], study.trials, strict=True):
        assert served_epochs(served) == stored.user_attrs["epochs"]
        assert {v["step"]: v["value"] for v in served["intermediate_values"]} == stored.intermediate_values
    best_note = detail["trials"][1]["note"]["body"]
    assert "| 2 | 26 | 0.6000 | 0.6100 | 0.8200 | 0.8300 | 0.8400 | 0.8100 |" in best_note
    assert "Pruned after epoch 1" in detail["trials"][2]["note"]["body"]
    assert "Failed: training loss became NaN at epoch 2." in detail["trials"][3]["note"]["body"]
    plots = {p["id"]: json.loads(p["graph_object"]) for p in detail["plotly_graph_objects"]}
    assert len(plots["epochs"]["data"]) == 4  # every trial with rows but the running one


def test_best_trials_card_and_plots_are_artifacts_served_for_download(workdir):
    study = handmade_study()
    folder = kept_model(workdir, 1, "README.md", "history.png")
    after_run(study, SearchConfig())
    with dashboard(workdir) as (base, _):
        detail = study_detail(base)
        best = detail["trials"][1]
        names = sorted(a["filename"] for a in best["artifacts"])
        assert names == ["README.md", "history.png"]
        for artifact in best["artifacts"]:
            url = f"{base}/artifacts/{detail['study_id']}/{best['trial_id']}/{artifact['artifact_id']}"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.read() == (folder / artifact["filename"]).read_bytes()
                assert response.headers["Content-Type"] == {"README.md": "text/markdown", "history.png": "image/png"}[artifact["filename"]]
        assert all(t["artifacts"] == [] for t in detail["trials"] if t["number"] != 1)
    assert "Best model: `studies/hpsearch/best-model/` (trial 1, epoch 2). Its card and plots are artifacts of that trial." in detail["note"]["body"]


def test_dashboard_follows_a_trial_that_another_process_finishes(workdir):
    study = handmade_study()
    with dashboard(workdir) as (base, _):
        running = study_detail(base)["trials"][4]
        assert running["state"] == "Running" and len(served_epochs(running)) == 1
        # This test process is the writer, as `hpsearch run` would be.
        trial_id = study.trials[4]._trial_id
        study._storage.set_trial_user_attr(trial_id, "epochs", rows(0.55, 0.9))
        study._storage.set_trial_intermediate_value(trial_id, 2, 0.9)
        study._storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.9])
        # optuna-dashboard re-reads a study's trials at most every few seconds
        deadline = time.monotonic() + 60
        while (detail := study_detail(base))["trials"][4]["state"] == "Running" and time.monotonic() < deadline:
            time.sleep(0.5)
    finished = detail["trials"][4]
    assert finished["state"] == "Complete" and finished["values"] == [0.9]
    assert [r["epoch"] for r in served_epochs(finished)] == [1, 2]
    assert [t["number"] for t in detail["best_trials"]] == [4]


@pytest.mark.parametrize(
    ("sig", "sigint_ignored"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["ctrl-c", "sigterm", "ctrl-c-to-a-background-job"],
)
def test_ctrl_c_or_sigterm_stops_the_dashboard_without_a_traceback(workdir, sig, sigint_ignored):
    handmade_study()
    with dashboard(workdir, sigint_ignored=sigint_ignored) as (_, proc):
        proc.send_signal(sig)
        proc.wait(timeout=10)
        err = proc.stderr.read()
    assert proc.returncode == 0
    assert "Traceback" not in err


@pytest.mark.slow
def test_dashboard_reads_a_real_runs_study(workdir, tiny_model, cli):
    code, _, err = cli(*tiny_run_args(tiny_model, "--trials", "2", "--epochs", "2", "--pruner", "none"))
    assert code == 0, err
    stored = optuna.load_study(study_name="hpsearch", storage=URL).trials
    with dashboard(workdir) as (base, _):
        detail = study_detail(base)
    assert [served_epochs(t) for t in detail["trials"]] == [t.user_attrs["epochs"] for t in stored]
    assert user_attr(detail["trials"][0], "recipe") == "True"
    best = max((t for t in stored if t.value is not None), key=lambda t: (t.value, -t.number))
    assert f"| best | {best.number} | {best.value:.4f} |" in detail["note"]["body"]
    assert f"Best model: `studies/hpsearch/best-model/` (trial {best.number}, epoch {best.user_attrs['shipped_epoch']})." in detail["note"]["body"]


def test_a_running_search_refreshes_the_note_and_epoch_tables_after_every_trial(workdir, tiny_model):
    from transformers import TrainerCallback

    from hpsearch import load_config, run_search

    seen: dict[int, tuple[str, str]] = {}

    class Peek(TrainerCallback):
        """What a dashboard would show when each trial starts training."""

        def on_train_begin(self, args, state, control, **kwargs):
            study = optuna.load_study(study_name="hpsearch", storage=URL)
            first = optuna.Trial(study, study.trials[0]._trial_id)
            seen[study.trials[-1].number] = (optuna_dashboard.get_note(study), optuna_dashboard.get_note(first))

    config = load_config(None, {"model": str(tiny_model), "trials": 2, "epochs": 1, "max_length": 32, "pruner": "none"})
    run_search(config, callbacks=[Peek()])
    first = optuna.load_study(study_name="hpsearch", storage=URL).trials[0]
    study_note, trial_0_note = seen[1]
    assert "| best | 0 |" in study_note
    assert f"{first.user_attrs['epochs'][0]['f1']:.4f}" in trial_0_note  # its epoch table
    assert seen[0] == ("", "")  # nothing to show before the first trial ends


# --------------------------------------------------------------------------- errors


def test_a_port_in_use_is_a_one_line_error(workdir, cli):
    handmade_study()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = cli("dashboard", "--port", port)
    assert code == 2
    assert err.splitlines() == [f"hpsearch: error: port {port} on 127.0.0.1 is in use; pass --port"]
    assert out == ""


def test_a_missing_storage_is_a_one_line_error_and_creates_nothing(workdir, cli):
    code, out, err = cli("dashboard", "--storage", "sqlite:///nowhere/studies.db", "--port", free_port())
    assert code == 2
    assert err.splitlines() == ["hpsearch: error: no study storage at 'nowhere/studies.db'; run `hpsearch run` first or pass --storage"]
    assert not (workdir / "nowhere").exists()


def test_a_missing_study_is_a_one_line_error(workdir, cli):
    handmade_study()
    code, _, err = cli("dashboard", "--study", "sst2", "--port", free_port())
    assert code == 2
    assert err.splitlines() == ["hpsearch: error: no study named 'sst2' in sqlite:///studies/hpsearch.db (studies there: hpsearch); pass --study"]


# --------------------------------------------------------------------------- library


def test_uploading_a_card_again_replaces_it_instead_of_adding_a_copy(workdir):
    study = handmade_study()
    folder = kept_model(workdir, 1, "README.md")
    directory = artifact_dir(SearchConfig())
    first = upload_card_artifacts(study, 1, [folder / "README.md"], artifact_dir=directory)
    (folder / "README.md").write_text("# the rewritten card\n", encoding="utf-8")
    second = upload_card_artifacts(study, 1, [folder / "README.md"], artifact_dir=directory)
    assert first == second
    assert [a["filename"] for a in trial_artifacts(study, 1)] == ["README.md"]
    with artifact_store(SearchConfig()).open_reader(second["README.md"]) as f:
        assert f.read() == b"# the rewritten card\n"


def test_after_run_uploads_nothing_until_a_card_is_written(workdir):
    study = handmade_study()
    kept_model(workdir, 1)  # the run kept a model; `hpsearch card` has not run yet
    after_run(study, SearchConfig())
    assert trial_artifacts(study, 1) == []
    assert "Write its card with `hpsearch card best --study hpsearch`." in write_note(study)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((0.8, 0.7), "validation f1: the recipe itself is the best trial."),
        ((0.7, 0.8), "validation f1: the best trial beats the recipe by +0.1000 (+14.3%)."),
        ((), "No trial has completed yet."),
    ],
)
def test_note_compares_the_best_trial_with_the_recipe(workdir, values, expected):
    study = optuna.create_study(storage=URL.replace("studies/", ""), direction="maximize")
    study.set_metric_names(["validation f1"])
    for number, value in enumerate(values):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"recipe": number == 0}))
    assert expected in write_note(study)
