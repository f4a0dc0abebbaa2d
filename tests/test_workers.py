"""Several `hpsearch run` processes on one study: real subprocesses, real storages, tiny model.

Two workers started together on PostgreSQL, a journal file and Redis share the study's total,
run the recipe once as trial 0, sample different parameters and keep one best model. A worker
killed with SIGKILL mid-trial leaves a running trial that the next run marks failed; a run
with other settings than the study's is refused before anything changes.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import missing_service, tiny_run_args
from filelock import FileLock, Timeout
from optuna.trial import TrialState
from test_storage import deleted_afterwards, postgres_url, storage_url, unique_name

from hpsearch import schema
from hpsearch.config import load_config
from hpsearch.events import RunListener
from hpsearch.hooks import Hooks
from hpsearch.schema import FINISHED, DataFacts
from hpsearch.search.locks import study_lock
from hpsearch.search.loop import next_trial
from hpsearch.search.storage import open_storage
from hpsearch.search.study import create_or_resume
from hpsearch.search.workers import fail_dead_trials, worker_id
from hpsearch.training.space import recipe_params

DATA = DataFacts(
    name="tiny",
    hub_id=None,
    text_column="text",
    text_pair_column=None,
    label_names=["a", "b"],
    sizes={"train": 2, "validation": 2},
    class_counts={"train": [1, 1], "validation": [1, 1]},
)

TOTAL = 4
# Fast trials: one epoch of 32 short examples, no pruning (every trial finishes).
FAST = ("--epochs", "1", "--pruner", "none", "--max-train-samples", "32", "--max-eval-samples", "16")
WORKER_TIMEOUT = 300  # seconds; a hung worker fails the test instead of hanging it


def _worker(model: Path, cwd: Path, *args: str, log: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two workers share the machine's cores
    with open(cwd / f"{log}.out", "wb") as out, open(cwd / f"{log}.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "hpsearch", *tiny_run_args(model, *FAST, *args)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )


def _wait(proc: subprocess.Popen, cwd: Path, log: str) -> int:
    try:
        return proc.wait(timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"worker {log} did not finish in {WORKER_TIMEOUT} s: {(cwd / f'{log}.err').read_text()[-2000:]}")


# --------------------------------------------------------------------------- creating together


def _join(url: str, config: Any, barrier: Any) -> None:
    try:
        storage = open_storage(url, create=True)
    except BaseException:
        barrier.abort()  # the others fail at once rather than wait out the timeout
        raise
    barrier.wait(timeout=60)
    recipe = recipe_params(config.recipe, config.space)
    create_or_resume(storage, config, recipe=recipe, data=DATA, base_model="tiny", hooks=Hooks())


def _start_together(url: str, name: str, workers: int = 4) -> list[int]:
    """Exit codes of processes that open the storage and create-or-join the study at one moment."""
    config = load_config(None, {"study": name, "storage": url})
    recipe_params(config.recipe, config.space)  # import transformers here, not in each worker
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(workers)
    procs = [context.Process(target=_join, args=(url, config, barrier)) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    return [p.exitcode for p in procs]


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql", "redis"])
def test_workers_creating_a_study_together_enqueue_the_recipe_once(tmp_path, kind):
    url = storage_url(kind, tmp_path)
    name = unique_name()
    with deleted_afterwards(name, url):
        assert _start_together(url, name) == [0, 0, 0, 0]
        study = optuna.load_study(study_name=name, storage=open_storage(url, create=False))
        assert [(t.number, t.state, t.user_attrs) for t in study.trials] == [(0, TrialState.WAITING, {"recipe": True})]
        assert schema.read_settings(study).config["study"] == name


# --------------------------------------------------------------------------- the last trial

RAN, NOT_NEEDED = 10, 11  # exit codes of _claim_last


def _claim_last(url: str, name: str, barrier: Any, fail_first: bool) -> None:
    """One worker at the moment a trial ends: ask for the next one, run it briefly, tell.

    With ``fail_first`` the first trial started here fails, as if it ran out of memory.
    """
    storage = open_storage(url, create=False)
    study = optuna.load_study(study_name=name, storage=storage)
    lock = functools.partial(study_lock, storage, url, name)
    barrier.wait(timeout=60)
    trial = next_trial(
        study,
        TOTAL,
        storage=storage,
        lock=lock,
        listener=RunListener(),
        deadline=None,
        recipe={},
        me=worker_id(),
        poll=0.1,
    )
    if trial is None:
        os._exit(NOT_NEEDED)
    time.sleep(0.5)  # the others look at the study while this trial runs
    if fail_first and trial.number == TOTAL - 1:
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, 0.5)
    os._exit(RAN)


def _claim_together(url: str, name: str, workers: int, *, fail_first: bool = False) -> list[int]:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(workers)
    procs = [context.Process(target=_claim_last, args=(url, name, barrier, fail_first)) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    return [p.exitcode for p in procs]


def _study_one_short_of_the_total(url: str, name: str) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=open_storage(url, create=True), direction="maximize")
    for value in range(TOTAL - 1):
        study.add_trial(optuna.trial.create_trial(value=float(value)))
    return study


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql", "redis"])
def test_workers_asking_together_for_the_last_trial_start_only_one(tmp_path, kind):
    url = storage_url(kind, tmp_path)
    name = unique_name()
    with deleted_afterwards(name, url):
        study = _study_one_short_of_the_total(url, name)
        codes = _claim_together(url, name, 4)
        assert sorted(codes) == [RAN, NOT_NEEDED, NOT_NEEDED, NOT_NEEDED], [
            (t.number, t.state, t.datetime_start) for t in study.get_trials()
        ]
        assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * TOTAL


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_worker_waiting_on_a_trial_that_fails_runs_one_in_its_place(tmp_path, kind):
    url = storage_url(kind, tmp_path)
    name = unique_name()
    with deleted_afterwards(name, url):
        study = _study_one_short_of_the_total(url, name)
        codes = _claim_together(url, name, 3, fail_first=True)
        assert sorted(codes) == [RAN, RAN, NOT_NEEDED]
        failed, replacement = study.get_trials()[TOTAL - 1 :]
        assert (failed.state, replacement.state) == (TrialState.FAIL, TrialState.COMPLETE)
        # The replacement started only once the failure was known, not alongside it.
        assert replacement.datetime_start >= failed.datetime_complete


@pytest.fixture
def new_database() -> Any:
    """A PostgreSQL database made for the test (no Optuna tables yet), dropped afterwards."""
    url = postgres_url()
    import psycopg2

    name = unique_name().replace("-", "_")
    admin = psycopg2.connect(url, connect_timeout=3)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
    except psycopg2.Error as e:
        admin.close()
        missing_service("postgres", f"cannot create a PostgreSQL database: {e}")
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_workers_opening_a_new_postgresql_database_together_all_start(new_database):
    # Each worker's first connection creates Optuna's tables; all but one lose that race.
    assert _start_together(new_database, unique_name()) == [0, 0, 0, 0]


# --------------------------------------------------------------------------- two real workers


@pytest.fixture(scope="module", params=["postgresql", "journal", "redis"])
def two_workers(request, tiny_model, tmp_path_factory) -> dict[str, Any]:
    """Two `hpsearch run --trials 4` processes on one study of each storage, each sure to run a trial.

    Worker a starts first and is frozen once its first trial shows in storage as running and
    it holds no lock; worker b then starts and claims a trial of its own (the total still
    needs one); a thaws.
    Synchronised on storage, not on timing, so a slow start of b cannot leave it no trial.
    """
    cwd = tmp_path_factory.mktemp(f"workers-{request.param}")
    url = storage_url(request.param, cwd)
    name = unique_name()
    # Long enough trials (256 rows) that a running one is seen in storage between two looks.
    args = ("--trials", str(TOTAL), "--study", name, "--storage", url, "--max-train-samples", "256")
    with deleted_afterwards(name, url):
        a = _worker(tiny_model, cwd, *args, log="a")
        _frozen_outside_the_locks(a, name, url, cwd)
        try:
            b = _worker(tiny_model, cwd, *args, log="b")
            # Claimed, not running: b's tiny trials can start and finish between two looks.
            _until_running(b, name, url, cwd, "b", states=None)
        finally:
            os.kill(a.pid, signal.SIGCONT)
        procs = {"a": a, "b": b}
        for log, proc in procs.items():
            assert _wait(proc, cwd, log) == 0, (cwd / f"{log}.err").read_text()[-2000:]
        study = optuna.load_study(study_name=name, storage=open_storage(url, create=False))
        yield {
            "trials": study.trials,
            "pids": {str(p.pid) for p in procs.values()},
            "marker": json.loads((cwd / "studies" / name / "best-model" / "hpsearch.json").read_text()),
        }


def _frozen_outside_the_locks(proc: subprocess.Popen, name: str, url: str, cwd: Path) -> None:
    """Freeze ``proc`` once its trial runs, at a moment it holds no lock another worker needs.

    A worker frozen while it starts a trial holds the study lock, one frozen mid-append holds
    Optuna's journal lock, and one frozen while it saves its best model holds the lock a
    starting worker takes to tidy ``best-model/``: the other worker would then wait on it for
    as long as the freeze lasts. Under CPU load those moments are wide enough to hit, so:
    freeze, look, and thaw and try again if a lock is held.
    """
    deadline = time.monotonic() + WORKER_TIMEOUT
    while True:
        _until_running(proc, name, url, cwd, "a")
        os.kill(proc.pid, signal.SIGSTOP)
        if (
            _study_lock_is_free(url, name)
            and not _journal_lock_held(url)
            and _file_lock_is_free(cwd / "studies" / name / ".best-model.lock")
        ):
            return
        os.kill(proc.pid, signal.SIGCONT)
        assert time.monotonic() < deadline, "the worker held a lock at every look"
        time.sleep(0.5)


def _study_lock_is_free(url: str, name: str, wait: float = 2.0) -> bool:
    """Whether the study lock can be taken within ``wait`` seconds; it is let go at once.

    The taking runs in a thread: if the lock is held, the thread waits for it, takes it when
    its holder is thawed, and lets it go.
    """
    taken = threading.Event()

    def take() -> None:
        with study_lock(open_storage(url, create=False), url, name):
            taken.set()

    threading.Thread(target=take, daemon=True).start()
    return taken.wait(wait)


def _file_lock_is_free(path: Path) -> bool:
    """Whether the ``filelock`` lock at ``path`` can be taken at once; it is let go at once."""
    if not path.parent.is_dir():  # nothing saved yet: no one holds it
        return True
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    lock.release()
    return True


def _journal_lock_held(url: str) -> bool:
    """Whether Optuna's lock on a journal file is taken (a link beside the file while held)."""
    return url.startswith("journal:") and os.path.lexists(url[len("journal:") :] + ".lock")


def _until_running(
    proc: subprocess.Popen,
    name: str,
    url: str,
    cwd: Path,
    log: str,
    states: tuple[TrialState, ...] | None = (TrialState.RUNNING,),
) -> optuna.trial.FrozenTrial:
    """Wait until a trial of ``proc`` is running in storage (or in ``states``; None: any); that trial."""
    deadline = time.monotonic() + WORKER_TIMEOUT
    while (trial := _trial_of(proc.pid, name, url, states)) is None:
        assert proc.poll() is None and time.monotonic() < deadline, (cwd / f"{log}.err").read_text()[-2000:]
        time.sleep(0.25)  # not faster: a journal file has one lock, and readers would starve the worker
    return trial


def test_two_workers_together_reach_the_total(two_workers):
    trials = two_workers["trials"]
    finished = [t for t in trials if t.state in FINISHED]
    # A worker does not start a trial that the other's running trial may make unnecessary.
    assert len(finished) == TOTAL, [(t.number, t.state) for t in trials]
    assert len(finished) == len(trials)
    assert {t.user_attrs["worker"].rpartition(":")[2] for t in trials} == two_workers["pids"]


def test_two_workers_run_the_recipe_once_as_trial_0(two_workers):
    recipe = [t.number for t in two_workers["trials"] if t.user_attrs.get("recipe")]
    assert recipe == [0]


def test_two_workers_sample_different_parameters(two_workers):
    params = [json.dumps(t.params, sort_keys=True) for t in two_workers["trials"]]
    assert len(set(params)) == len(params), params


def test_the_best_model_folder_holds_the_best_trial_of_both_workers(two_workers):
    trials = {t.number: t for t in two_workers["trials"]}
    marker = two_workers["marker"]
    assert marker["value"] == max(t.value for t in trials.values())
    assert trials[marker["trial"]].value == marker["value"]
    assert trials[marker["trial"]].user_attrs["kept_model"] is True


# --------------------------------------------------------------------------- a killed worker


def _trial_of(
    pid: int, study_name: str, url: str, states: tuple[TrialState, ...] | None = (TrialState.RUNNING,)
) -> optuna.trial.FrozenTrial | None:
    worker = f"{socket.gethostname()}:{pid}"
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(url, create=False))
        running = study.get_trials(deepcopy=False, states=states)
    except Exception:  # not made yet, or the file is held by a writer
        return None
    return next((t for t in running if t.user_attrs.get("worker") == worker), None)


def test_a_killed_worker_s_trial_is_failed_by_the_next_run_and_not_counted(workdir, tiny_model, cli):
    url = "sqlite:///studies/hpsearch.db"
    # Full-size training data, so that the trial runs for a while after it shows as running.
    slow = ("--max-train-samples", "300")
    proc = _worker(tiny_model, workdir, "--trials", "1", *slow, log="killed")
    # The trial shows in storage as running: freeze the worker before reading it again, so the
    # trial cannot finish between being read as running and the kill. A worker frozen in the
    # middle of a write holds the SQLite file, and the read cannot tell: thaw it and look again.
    try:
        while True:
            _until_running(proc, "hpsearch", url, workdir, "killed")
            os.kill(proc.pid, signal.SIGSTOP)
            if (trial := _trial_of(proc.pid, "hpsearch", url)) is not None:
                break
            os.kill(proc.pid, signal.SIGCONT)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    code, out, err = cli(*tiny_run_args(tiny_model, *FAST, "--trials", "1", *slow))
    assert code == 0, err
    study = optuna.load_study(study_name="hpsearch", storage=url)
    dead = study.trials[trial.number]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs[schema.FAIL_REASON] == (
        f"worker {socket.gethostname()}:{proc.pid} is gone (process {proc.pid} has exited)"
    )
    assert [t.number for t in study.trials if t.state in FINISHED] == [trial.number + 1]
    # the killed trial was the recipe: it runs again, so the study still has its baseline
    assert study.trials[trial.number].user_attrs["recipe"] is True
    assert study.trials[trial.number + 1].user_attrs["recipe"] is True


# A worker that claims a trial and is killed at once: kill -9 mid-trial, with no timing involved.
KILLED_WORKER = """
import os, signal, sys
import optuna
from hpsearch import schema
from hpsearch.search.storage import open_storage
from hpsearch.search.workers import worker_id
study = optuna.create_study(study_name=sys.argv[2], storage=open_storage(sys.argv[1], create=True))
schema.claim(study.ask(), worker_id())
os.kill(os.getpid(), signal.SIGKILL)
"""


def _plain_optuna_storage(url: str) -> Any:
    """The storage at ``url`` as Optuna alone opens it, without hpsearch."""
    if url.startswith("journal:"):
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url[len("journal:") :]))
    if url.startswith("redis:"):
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalRedisBackend(url))
    # psycopg2 is the PostgreSQL driver the test extra installs; SQLAlchemy's default is psycopg 3.
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql", "redis"])
def test_a_killed_worker_s_trial_stores_why_it_failed_for_any_optuna_reader(tmp_path, kind):
    url = storage_url(kind, tmp_path)
    name = unique_name()
    with deleted_afterwards(name, url):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-c", KILLED_WORKER, url, name], env=env, timeout=120)
        assert proc.returncode == -signal.SIGKILL
        storage = open_storage(url, create=False)
        study = optuna.load_study(study_name=name, storage=storage)
        (trial,) = study.trials
        pid = schema.worker(trial).rpartition(":")[2]
        assert fail_dead_trials(study, storage=storage) == [0]
        failed = optuna.load_study(study_name=name, storage=_plain_optuna_storage(url)).trials[0]
        assert failed.state == TrialState.FAIL
        reason = f"worker {socket.gethostname()}:{pid} is gone (process {pid} has exited)"
        assert failed.user_attrs["fail_reason"] == reason
        assert schema.fail_reason(failed) == reason  # the stored reason, not one made up on reading


def test_a_silent_worker_s_trial_stores_how_long_it_was_silent(tmp_path):
    url = storage_url("sqlite", tmp_path)
    storage = open_storage(url, create=True)
    study = optuna.create_study(study_name="silent", storage=storage)
    trial = study.ask()
    # A worker on another machine, whose last heartbeat was 200 s ago: past the grace period.
    trial.set_user_attr(schema.WORKER, "elsewhere:123")
    trial.set_user_attr(schema.HEARTBEAT, time.time() - 200)
    assert fail_dead_trials(study, storage=storage) == [0]
    failed = optuna.load_study(study_name="silent", storage=url).trials[0]
    assert failed.state == TrialState.FAIL
    assert re.fullmatch(
        r"worker elsewhere:123 stopped answering \(last heartbeat 20\d s ago\)", failed.user_attrs["fail_reason"]
    )


# --------------------------------------------------------------------------- resuming


@pytest.fixture(scope="module")
def made_study(tiny_model, tmp_path_factory) -> dict[str, Any]:
    """A one-trial study made by `hpsearch run`, with absolute paths so any test can resume it."""
    from hpsearch.cli import main

    folder = tmp_path_factory.mktemp("resume")
    flags = ["--storage", f"sqlite:///{folder / 'studies' / 'hpsearch.db'}", "--workdir", str(folder / "studies")]
    assert main(tiny_run_args(tiny_model, *FAST, "--trials", "1", *flags)) == 0
    return {"flags": flags, "url": flags[1], "folder": folder}


def _snapshot(url: str) -> Any:
    study = optuna.load_study(study_name="hpsearch", storage=url)
    trials = [(t.number, t.state, t.params, t.value, t.user_attrs, t.datetime_complete) for t in study.trials]
    return trials, study.user_attrs


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("--epochs", "2"), "was made with epochs=1, this run has epochs=2"),
        (("--max-length", "16"), "was made with max_length=32, this run has max_length=16"),
        (("--model", "other-model"), "was made with model='"),
        # A study made under another pruner resumes only with that pruner named.
        (("--pruner", "best"), "was made with pruner='none', this run has pruner='best'"),
    ],
)
def test_resuming_with_other_settings_is_refused_and_changes_nothing(
    made_study, tiny_model, tmp_path, cli, change, named
):
    model = tiny_model
    if change[0] == "--model":  # the same weights in another folder are still another model setting
        model = tmp_path / change[1]
        model.symlink_to(tiny_model, target_is_directory=True)
        change = ()
    before = _snapshot(made_study["url"])
    code, out, err = cli(*tiny_run_args(model, *FAST, "--trials", "3", *made_study["flags"], *change))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], err
    assert "rerun with the same settings to resume, or pass a new --study" in lines[0]
    assert _snapshot(made_study["url"]) == before


def test_a_study_of_another_schema_version_is_refused_in_one_line(tiny_model, tmp_path, cli):
    flags = ["--storage", f"sqlite:///{tmp_path / 'hpsearch.db'}", "--workdir", str(tmp_path / "studies")]
    assert cli(*tiny_run_args(tiny_model, *FAST, "--trials", "1", *flags))[0] == 0
    study = optuna.load_study(study_name="hpsearch", storage=flags[1])
    stored = study.user_attrs[schema.STUDY_KEY]
    study.set_user_attr(schema.STUDY_KEY, {**stored, "schema": 1})
    before = _snapshot(flags[1])
    for command in (
        tiny_run_args(tiny_model, *FAST, "--trials", "2", *flags),
        ["trials", *flags],
        ["card", "best", *flags],
    ):
        code, _, err = cli(*command)
        assert code == 2
        assert err.strip() == (
            "hpsearch: error: study 'hpsearch' was written in hpsearch schema 1, this hpsearch reads schema "
            f"{schema.SCHEMA_VERSION}; start a new study (--study NAME or another --storage)"
        ), command
    assert _snapshot(flags[1]) == before


def test_a_study_made_under_the_last_epoch_rule_resumes_only_with_it(tiny_model, tmp_path, cli):
    # Resuming a study made with --checkpoint last under the default would score its trials
    # two ways, so it is refused with the setting named, and it resumes with --checkpoint last.
    flags = ["--storage", f"sqlite:///{tmp_path / 'hpsearch.db'}", "--workdir", str(tmp_path / "studies")]
    assert cli(*tiny_run_args(tiny_model, *FAST, "--trials", "1", *flags, "--checkpoint", "last"))[0] == 0
    before = _snapshot(flags[1])
    code, _, err = cli(*tiny_run_args(tiny_model, *FAST, "--trials", "2", *flags))
    assert code == 2
    assert "was made with checkpoint='last', this run has checkpoint='best'" in err, err
    assert _snapshot(flags[1]) == before
    code, _, err = cli(*tiny_run_args(tiny_model, *FAST, "--trials", "2", *flags, "--checkpoint", "last"))
    assert code == 0, err
    trials = optuna.load_study(study_name="hpsearch", storage=flags[1]).trials
    assert [t.user_attrs["checkpoint_rule"] for t in trials] == ["last", "last"]
