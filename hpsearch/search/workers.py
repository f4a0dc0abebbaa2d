"""Workers sharing a study: who runs a trial, and finding the trials of workers that died.

Every running trial names its worker (``host:pid``) and writes a heartbeat, a Unix time,
every :data:`HEARTBEAT_SECONDS` (trial attribute ``heartbeat``). A worker about to count the
study's trials first fails the running trials whose worker is gone: a process on this
host that no longer exists (``kill -9`` is seen at once), or any trial whose heartbeat is
older than :data:`GRACE_SECONDS` (a worker on another machine that died or lost its
storage). This works the same on every storage, SQLite, journal files, PostgreSQL and Redis.

Given the storage the study was opened on, the worker that fails such a trial first stores
why on it (``fail_reason``, as :func:`hpsearch.schema.record_failure` does), so that
optuna-dashboard and any Optuna reader see the reason beside the state.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpsearch import schema

HEARTBEAT_SECONDS = 30.0
# A trial silent this long counts as dead: four missed heartbeats, so a busy storage or a
# long evaluation does not fail a live trial.
GRACE_SECONDS = 120.0


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial, interval: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Keep ``trial``'s heartbeat fresh while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            # A missed beat (a busy or briefly unreachable storage) is retried next time;
            # only GRACE_SECONDS of silence fails the trial.
            with contextlib.suppress(Exception):
                schema.beat(trial)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_dead_trials(
    study: optuna.Study, *, storage: optuna.storages.BaseStorage, grace: float = GRACE_SECONDS
) -> list[int]:
    """Fail the running trials whose worker is gone (see the module docstring); their numbers.

    Args:
        study: The study to look through.
        storage: The storage ``study`` was opened on: each trial's reason is stored on the
            trial before it is told failed, so every reader of the storage sees why (Optuna's
            study has no public way to write to a trial that another process asked for).
        grace: Seconds of heartbeat silence after which a trial counts as dead.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _why_dead(trial, grace)
        if reason is None:
            continue
        # Another worker may fail it first: then it is no longer ours to change. The reason
        # goes first, as a finished trial takes no more attributes.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, ValueError):
            _record_failure(storage, study, trial.number, reason)
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(trial.number)
    return failed


def _record_failure(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int, reason: str) -> None:
    """:func:`hpsearch.schema.record_failure` for trial ``number``, which this process did not ask for."""
    key = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)
    storage.set_trial_user_attr(key, schema.FAIL_REASON, reason)


def _why_dead(trial: optuna.trial.FrozenTrial, grace: float) -> str | None:
    """Why ``trial``'s worker counts as dead, in words; None while it may still be running it."""
    who = schema.worker(trial)
    name = f"worker {who}" if who else "its worker"
    host, _, pid = (who or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid():
        return None if _alive(int(pid)) else f"{name} is gone (process {pid} has exited)"
    last, since = schema.heartbeat(trial), "last heartbeat"
    if last is None and trial.datetime_start is not None:
        last, since = trial.datetime_start.timestamp(), "no heartbeat; started"
    silent = None if last is None else time.time() - last
    return None if silent is None or silent <= grace else f"{name} stopped answering ({since} {silent:.0f} s ago)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed worker whose parent (a pool's) has not reaped it yet is a zombie: dead.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
