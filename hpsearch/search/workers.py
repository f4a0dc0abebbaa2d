"""Workers sharing a study: who runs a trial, and finding the trials of workers that died.

Every running trial names its worker (``host:pid``) and writes a heartbeat, a Unix time,
every :data:`HEARTBEAT_SECONDS` (trial attribute ``heartbeat``). A worker about to count the
study's trials first fails the running trials whose worker is gone: a process on this
host that no longer exists (``kill -9`` is seen at once), or any trial whose heartbeat is
older than :data:`GRACE_SECONDS` (a worker on another machine that died or lost its
storage). This works the same on every storage, SQLite, journal files, PostgreSQL and Redis.
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


def fail_dead_trials(study: optuna.Study, *, grace: float = GRACE_SECONDS) -> list[int]:
    """Fail the running trials whose worker is gone (see the module docstring); their numbers."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_dead(trial, grace):
            continue
        # Another worker may fail it first: then it is no longer ours to change.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, ValueError):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(trial.number)
    return failed


def _is_dead(trial: optuna.trial.FrozenTrial, grace: float) -> bool:
    host, _, pid = (schema.worker(trial) or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid():
        return not _alive(int(pid))
    last = schema.heartbeat(trial)
    if last is None and trial.datetime_start is not None:
        last = trial.datetime_start.timestamp()
    return last is not None and time.time() - last > grace


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
