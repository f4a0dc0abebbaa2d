"""`hpsearch dashboard`: the real optuna-dashboard in a subprocess, read back over HTTP.

The studies are written by hand in the shapes `hpsearch run` writes (see test_trials.py);
where a run's listener matters, its trials go through :class:`DashboardNotes` the way the
search loop drives it (ask, record, tell, ``trial_end``). The end-to-end tests run a real
search on the tiny model first.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import optuna_dashboard
import pytest
from conftest import free_port, tiny_run_args
from optuna.trial import TrialState
from test_trials import FAIL_REASON, PRUNED_REASON, SPACE, URL, handmade_study, new_study, rows

from hpsearch import schema
from hpsearch.bestmodel import Marker
from hpsearch.config import SearchConfig
from hpsearch.events import RunInfo
from hpsearch.views.artifacts import artifact_store, card_artifacts, upload_card_artifacts
from hpsearch.views.dashboard import DashboardNotes, refresh, save_epoch_plot, write_note
from hpsearch.views.notes import epoch_note

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32  # enough of a PNG for a MIME type and a byte compare
VIEWS = Path(__file__).resolve().parents[1] / "hpsearch" / "views"
RECIPE = {"learning_rate": 5e-05, "per_device_train_batch_size": 8, "warmup_ratio": 0.0, "weight_decay": 0.0}


@contextlib.contextmanager
def dashboard(cwd: Path, *args: str, sigint_ignored: bool = False) -> Iterator[tuple[str, subprocess.Popen]]:
    """``hpsearch dashboard`` on a free port; yields (base URL, process) once it answers.

    ``sigint_ignored`` starts it as a non-interactive shell starts a background job.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "dashboard", "--port", str(port), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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
    return json.loads(user_attr(trial, schema.EPOCHS))


def kept_model(workdir: Path, trial: int, *files: str) -> Path:
    """A best-model folder as the run leaves it, with a card and plots as `hpsearch card` writes them."""
    folder = workdir / "studies" / "hpsearch" / "best-model"
    folder.mkdir(parents=True, exist_ok=True)
    Marker(trial=trial, value=0.82, epoch=2, objective="f1").write(folder)
    (folder / "model.safetensors").write_bytes(b"weights")
    for name in files:
        (folder / name).write_bytes(PNG if name.endswith(".png") else f"# card of trial {trial}\n".encode())
    return folder


class Lock:
    """A study lock that counts how often it was taken, or fails like a busy storage."""

    def __init__(self, error: Exception | None = None) -> None:
        self.taken = 0
        self.error = error

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.error is not None:
            raise self.error
        self.taken += 1
        yield


def start(study: optuna.Study, lock: Lock | None = None) -> DashboardNotes:
    notes = DashboardNotes(SearchConfig())
    data = schema.read_settings(study).data
    notes.run_start(RunInfo(study=study, config=SearchConfig(), data=data, finished=0, lock=lock or Lock()))
    return notes


def finish(
    study: optuna.Study,
    notes: DashboardNotes,
    params: dict,
    f1: list[float],
    *,
    recipe: bool = False,
    shipped: int | None = None,
    pruned: str | None = None,
    failed: str | None = None,
) -> optuna.Trial:
    """One trial as the search loop runs it: its rows recorded, told to Optuna, then ``trial_end``."""
    study.enqueue_trial(params, user_attrs=schema.recipe_attrs() if recipe else None)
    trial = study.ask(SPACE)
    schema.record_rows(trial, rows(*f1))
    for epoch, value in enumerate(f1, start=1):
        trial.report(value, epoch)
    if shipped is not None:
        schema.record_shipped(trial, epoch=shipped, rule="last")
    if pruned is not None:
        schema.record_pruned(trial, pruned)
        frozen = study.tell(trial, state=TrialState.PRUNED)
    elif failed is not None:
        schema.record_failure(trial, failed)
        frozen = study.tell(trial, state=TrialState.FAIL)
    else:
        frozen = study.tell(trial, f1[-1])
    notes.trial_end(trial, frozen)
    return trial


def listened_study(lock: Lock | None = None) -> tuple[optuna.Study, list[optuna.Trial]]:
    """handmade_study's four finished trials, run through DashboardNotes: recipe, best, pruned, failed."""
    study = new_study()
    notes = start(study, lock)
    trials = [
        finish(study, notes, RECIPE, [0.6, 0.7], recipe=True, shipped=2),
        finish(
            study,
            notes,
            {**RECIPE, "learning_rate": 8e-05, "per_device_train_batch_size": 16, "warmup_ratio": 0.1},
            [0.65, 0.82],
            shipped=2,
        ),
        finish(study, notes, {**RECIPE, "learning_rate": 1.2e-05, "weight_decay": 0.05}, [0.4], pruned=PRUNED_REASON),
        finish(
            study,
            notes,
            {**RECIPE, "learning_rate": 9.9e-05, "per_device_train_batch_size": 32},
            [0.5],
            failed=FAIL_REASON,
        ),
    ]
    return study, trials


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


def test_study_note_summarises_recipe_space_and_best_against_recipe(workdir):
    handmade_study()
    with dashboard(workdir) as (base, _):
        note = study_detail(base)["note"]["body"]
    assert "| best | 1 | 0.8200 |" in note
    assert "| recipe | 0 | 0.7000 |" in note
    assert "the best trial beats the recipe by +0.1200 (+17.1%)" in note
    assert "Trials: 5 in all: 2 complete, 1 pruned, 1 failed, 1 running." in note
    assert "| `learning_rate` (lr) | 1e-05..0.0001 (log) | 5e-05 | 8e-05 |" in note
    assert "| `seed` | 42 |" in note


def test_each_finished_trials_epochs_are_readable_as_attribute_note_and_plot(workdir):
    study, _ = listened_study()
    with dashboard(workdir) as (base, _):
        detail = study_detail(base)
    for served, stored in zip(detail["trials"], study.trials, strict=True):
        assert served_epochs(served) == schema.rows(stored)
        assert {v["step"]: v["value"] for v in served["intermediate_values"]} == stored.intermediate_values
    notes = [t["note"]["body"] for t in detail["trials"]]
    assert notes[0].startswith("### Trial 0 (the recipe)")
    assert "| 2 | 26 | 0.6000 | 0.6100 | 0.8200 | 0.8300 | 0.8400 | 0.8100 |" in notes[1]
    assert "Shipped epoch 2 of 2 trained (checkpoint rule: last)." in notes[1]
    assert "Pruned at epoch 1: f1 0.4000 < median 0.6500 of 2 complete trials." in notes[2]
    assert f"Failed: {FAIL_REASON}." in notes[3]
    plots = {p["id"]: json.loads(p["graph_object"]) for p in detail["plotly_graph_objects"]}
    assert len(plots["epochs"]["data"]) == 4


def test_best_trials_card_and_plots_are_study_artifacts_served_for_download(workdir):
    study = handmade_study()
    folder = kept_model(workdir, 1, "README.md", "history.png")
    refresh(study, SearchConfig())
    with dashboard(workdir) as (base, _):
        detail = study_detail(base)
        artifacts = detail["artifacts"]
        assert sorted(a["filename"] for a in artifacts) == ["trial-1-README.md", "trial-1-history.png"]
        for artifact in artifacts:
            with urllib.request.urlopen(
                f"{base}/artifacts/{detail['study_id']}/{artifact['artifact_id']}", timeout=10
            ) as response:
                assert response.read() == (folder / artifact["filename"].removeprefix("trial-1-")).read_bytes()
                assert (
                    response.headers["Content-Type"]
                    == {"trial-1-README.md": "text/markdown", "trial-1-history.png": "image/png"}[artifact["filename"]]
                )
        assert all(t["artifacts"] == [] for t in detail["trials"])
    assert (
        "Best model: `studies/hpsearch/best-model/` (trial 1, epoch 2). "
        "Its card and plots are the study's artifacts `trial-1-README.md`, `trial-1-history.png`."
    ) in detail["note"]["body"]


def test_dashboard_follows_a_trial_that_another_process_finishes(workdir):
    study = handmade_study(running=False)
    # This test process is the writer, as `hpsearch run` would be.
    trial = study.ask(SPACE)
    schema.record_rows(trial, rows(0.55))
    trial.report(0.55, 1)
    with dashboard(workdir) as (base, _):
        running = study_detail(base)["trials"][4]
        assert running["state"] == "Running" and len(served_epochs(running)) == 1
        schema.record_rows(trial, rows(0.55, 0.9))
        trial.report(0.9, 2)
        study.tell(trial, 0.9)
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
    assert [served_epochs(t) for t in detail["trials"]] == [schema.rows(t) for t in stored]
    assert user_attr(detail["trials"][0], schema.RECIPE) == "True"
    best = schema.best_trial(stored)
    assert f"| best | {best.number} | {best.value:.4f} |" in detail["note"]["body"]
    assert (
        f"Best model: `studies/hpsearch/best-model/` (trial {best.number}, epoch {schema.shipped_epoch(best)})."
        in detail["note"]["body"]
    )
    assert all(t["note"]["body"].startswith(f"### Trial {t['number']}") for t in detail["trials"])  # written by the run


def test_a_running_search_refreshes_the_study_note_after_every_trial(workdir, tiny_model):
    from transformers import TrainerCallback

    from hpsearch import load_config, run_search

    seen: dict[int, str] = {}

    class Peek(TrainerCallback):
        """What a dashboard would show when each trial starts training."""

        def on_train_begin(self, args, state, control, **kwargs):
            study = optuna.load_study(study_name="hpsearch", storage=URL)
            seen[study.trials[-1].number] = optuna_dashboard.get_note(study)

    config = load_config(None, {"model": str(tiny_model), "trials": 2, "epochs": 1, "max_length": 32, "pruner": "none"})
    run_search(config, listeners=[DashboardNotes(config)], callbacks=[Peek()])
    assert "No trial has completed yet." in seen[0]  # written when the run starts
    assert "| best | 0 |" in seen[1]


# --------------------------------------------------------------------------- the run's listener


def test_the_listener_writes_the_study_note_and_each_trials_note_after_every_trial(workdir):
    study = new_study()
    notes = start(study)
    assert "No trial has completed yet." in optuna_dashboard.get_note(study)
    first = finish(study, notes, RECIPE, [0.6, 0.7], recipe=True, shipped=2)
    assert "| best | 0 | 0.7000 |" in optuna_dashboard.get_note(study)
    assert "| 2 | 26 | 0.6000 | 0.6100 | 0.7000 |" in optuna_dashboard.get_note(first)
    finish(study, notes, {**RECIPE, "learning_rate": 8e-05}, [0.65, 0.82], shipped=2)
    assert "| best | 1 | 0.8200 |" in optuna_dashboard.get_note(study)


def test_the_listener_writes_under_the_study_lock(workdir):
    lock = Lock()
    listened_study(lock)
    assert lock.taken == 1 + 4  # when the run starts, then after each trial


def test_a_listener_that_cannot_write_says_so_once_and_the_search_goes_on(workdir, capsys):
    lock = Lock(OSError("database is locked"))
    listened_study(lock)
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "hpsearch: note: the dashboard notes were not refreshed (database is locked); the search goes on"
    ]


def test_the_epoch_plot_is_saved_again_only_when_it_changed(workdir, monkeypatch):
    study = handmade_study()
    saved = []
    monkeypatch.setattr(
        optuna_dashboard,
        "save_plotly_graph_object",
        lambda study, figure, graph_object_id: saved.append(graph_object_id),
    )
    first = save_epoch_plot(study)
    assert save_epoch_plot(study, previous=first) == first
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={schema.EPOCHS: rows(0.9)}))
    save_epoch_plot(study, previous=first)
    assert saved == ["epochs", "epochs"]


# --------------------------------------------------------------------------- notes


@pytest.mark.parametrize(
    ("shipped", "line"),
    [
        (
            2,
            "Shipped epoch 2 of 4 trained, its best: a trial stopped early ships its best epoch (checkpoint rule: "
            "last).",
        ),
        (4, "Shipped epoch 4 of 4 trained (checkpoint rule: last)."),
    ],
)
def test_a_stopped_trials_note_says_which_epoch_it_shipped(shipped, line):
    reason = "stopped early after epoch 4: f1 had not beaten 0.8000 for 2 epochs"
    trial = optuna.trial.create_trial(
        value=0.8,
        user_attrs={
            schema.EPOCHS: rows(0.6, 0.8, 0.7, 0.75),
            schema.SHIPPED_EPOCH: shipped,
            schema.CHECKPOINT_RULE: "last",
            schema.STOPPED_EARLY: reason,
        },
    )
    note = epoch_note(trial)
    assert line in note
    assert "Stopped early after epoch 4: f1 had not beaten 0.8000 for 2 epochs." in note


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((0.8, 0.7), "validation f1: the recipe itself is the best trial."),
        ((0.7, 0.8), "validation f1: the best trial beats the recipe by +0.1000 (+14.3%)."),
        ((), "No trial has completed yet."),
    ],
)
def test_note_compares_the_best_trial_with_the_recipe(workdir, values, expected):
    study = new_study(URL.replace("studies/", ""))
    for number, value in enumerate(values):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs=schema.recipe_attrs() if number == 0 else {}))
    assert expected in write_note(study)


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
    assert err.splitlines() == [
        "hpsearch: error: no study storage at 'nowhere/studies.db'; run `hpsearch run` first or pass --storage"
    ]
    assert not (workdir / "nowhere").exists()


def test_a_missing_study_is_a_one_line_error(workdir, cli):
    handmade_study()
    code, _, err = cli("dashboard", "--study", "sst2", "--port", free_port())
    assert code == 2
    assert err.splitlines() == [
        "hpsearch: error: no study named 'sst2' in sqlite:///studies/hpsearch.db (studies there: hpsearch); "
        "pass --study"
    ]


# --------------------------------------------------------------------------- artifacts


def test_uploading_an_unchanged_card_again_adds_nothing(workdir):
    study = handmade_study()
    folder = kept_model(workdir, 1, "README.md", "history.png")
    directory = workdir / "studies" / "hpsearch" / "artifacts"
    first = upload_card_artifacts(study, 1, [folder / "README.md", folder / "history.png"], artifact_dir=directory)
    second = upload_card_artifacts(study, 1, [folder / "README.md", folder / "history.png"], artifact_dir=directory)
    refresh(study, SearchConfig())
    assert first == second
    assert sorted(a.filename for a in card_artifacts(study)) == ["trial-1-README.md", "trial-1-history.png"]


def test_a_rewritten_card_adds_its_new_version(workdir):
    study = handmade_study()
    folder = kept_model(workdir, 1, "README.md")
    directory = workdir / "studies" / "hpsearch" / "artifacts"
    first = upload_card_artifacts(study, 1, [folder / "README.md"], artifact_dir=directory)
    (folder / "README.md").write_text("# the rewritten card\n", encoding="utf-8")
    second = upload_card_artifacts(study, 1, [folder / "README.md"], artifact_dir=directory)
    assert first != second
    assert [a.filename for a in card_artifacts(study)] == ["trial-1-README.md"] * 2
    with artifact_store(SearchConfig()).open_reader(second["trial-1-README.md"]) as f:
        assert f.read() == b"# the rewritten card\n"


def test_refresh_uploads_nothing_until_a_card_is_written(workdir):
    study = handmade_study()
    kept_model(workdir, 1)  # the run kept a model; `hpsearch card` has not run yet
    refresh(study, SearchConfig())
    assert card_artifacts(study) == []
    assert "Write its card with `hpsearch card best --study hpsearch`." in write_note(study)


# --------------------------------------------------------------------------- the code


def test_the_views_use_only_public_optuna_and_optuna_dashboard_apis():
    private = re.compile(
        r"optuna_dashboard\._|\._storage|_study_id|_trial_id|fcntl|dashboard:artifacts:|dashboard:plot_data:"
    )
    hits = [
        f"{p.name}:{n}: {line.strip()}"
        for p in sorted(VIEWS.glob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert hits == []


def test_the_views_read_storage_only_through_the_schema():
    raw = re.compile(
        r"user_attrs|system_attrs|set_user_attr|\"(shipped_epoch|kept_model|pruned_reason|fail_reason|stopped_early|checkpoint_rule|training_args|test_metrics|hpsearch)\""
    )
    hits = [
        f"{p.name}:{n}: {line.strip()}"
        for p in sorted(VIEWS.glob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if raw.search(line)
    ]
    assert hits == []
