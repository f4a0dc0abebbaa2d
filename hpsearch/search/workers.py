"""Several workers on one study: who is still alive, and starting exactly the trials needed.

``--trials N`` is the study's total of finished trials, whatever number of workers share it.
A worker about to start a trial takes a lock that every worker of the study shares, counts
the finished trials and the ones others are running, and starts one only if the total
still needs it; otherwise it releases the lock and waits for the running trials (one of
them may fail, and then a trial is needed again). Counting and starting under one lock is
what keeps two workers that finish together from both starting the last trial.

The lock lives where the study does:

- SQLite and journal files: ``flock`` on ``<file>.hpsearch-lock`` beside the file
  (workers on one machine, as these storages require).
- PostgreSQL: a transaction-level advisory lock (``pg_advisory_xact_lock``), released by
  the server if the worker dies.
- Redis: a redis-py lock that expires by itself if its holder dies.
- Other databases (MySQL and the rest): no lock; two workers finishing at the same moment
  may then run one trial more than the total.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

# Seconds between looks at the study while the trials others run may reach the total.
POLL_SECONDS = 2.0
# Seconds a Redis lock lives if its holder dies while holding it (holding takes milliseconds).
_REDIS_LOCK_TTL = 60


class TotalReached(Exception):
    """The study holds its total of finished trials: no trial is started."""


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark failed the running trials whose worker process on this host has died.

    RDB storages also find dead workers elsewhere by their heartbeat (after a grace
    period); this catches a ``kill -9`` on this machine at once, on any storage.
    """
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get("worker", ""))
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        storage = study._storage
        # Another worker starting now may fail it first; then the trial is no longer ours to change.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"worker {worker} died while the trial ran")
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed.append(trial.number)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CountedStudy(optuna.Study):
    """A study whose :meth:`ask` starts a trial only while the total needs one.

    ``study.optimize`` asks for each trial, so the check covers every trial it starts.
    :meth:`ask` raises :class:`TotalReached` when the study is done, and ends the wait
    the same way once ``deadline`` (a ``time.monotonic()`` value) has passed.
    """

    def __init__(
        self,
        study_name: str,
        storage: optuna.storages.BaseStorage,
        *,
        url: str,
        total: int,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        reporter: Any = None,
        deadline: float | None = None,
        poll: float = POLL_SECONDS,
    ) -> None:
        super().__init__(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        self.total, self.reporter, self.deadline, self.poll = total, reporter, deadline, poll
        # The storage as opened, not the cache the study wraps it in: the lock needs its engine.
        self._opened, self._url = storage, url

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The study's lock (:func:`study_lock`): also for writes workers must not interleave."""
        return study_lock(self._opened, self._url, self.study_name)

    def ask(self, fixed_distributions: dict[str, BaseDistribution] | None = None) -> optuna.Trial:
        announced = False
        while True:
            with self.lock():
                finished, running = self._census()
                if finished >= self.total:
                    raise TotalReached
                if finished + running < self.total:
                    return super().ask(fixed_distributions)
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise TotalReached
            if not announced and self.reporter is not None:
                self.reporter.waiting(running, self.total - finished)
                announced = True
            time.sleep(self.poll)

    def done(self) -> bool:
        """Whether the study holds its total (without waiting for anyone)."""
        return self._census()[0] >= self.total

    def _census(self) -> tuple[int, int]:
        """Finished trials and running ones, after failing those of dead workers."""
        fail_dead_trials(self)
        optuna.storages.fail_stale_trials(self)
        # One read for both counts: a trial that ends between two reads would be in neither.
        states = [t.state for t in self.get_trials(deepcopy=False)]
        return sum(s in FINISHED for s in states), states.count(TrialState.RUNNING)


@contextlib.contextmanager
def study_lock(storage: Any, url: str, study_name: str) -> Iterator[None]:
    """The lock every worker of ``study_name`` on the storage at ``url`` takes to start a trial."""
    from hpsearch.search.storage import sqlite_path

    path = sqlite_path(url)
    if path is None and url.startswith("journal:"):
        path = Path(url[len("journal:"):])
    if path is not None:
        with _file_lock(path.with_name(path.name + ".hpsearch-lock")):
            yield
        return
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in ("postgresql", "postgres") and isinstance(storage, optuna.storages.RDBStorage):
        with _pg_lock(storage, study_name):
            yield
        return
    if scheme in ("redis", "rediss"):
        with _redis_lock(url, study_name):
            yield
        return
    yield


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _lock_key(study_name: str) -> int:
    """A signed 64-bit key, the same in every process (``hash()`` is salted per process)."""
    digest = hashlib.blake2b(f"hpsearch:{study_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def _pg_lock(storage: optuna.storages.RDBStorage, study_name: str) -> Iterator[None]:
    import sqlalchemy

    # Held until this transaction ends; the server drops it with the connection of a dead worker.
    with storage.engine.begin() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(study_name)})
        yield


@contextlib.contextmanager
def _redis_lock(url: str, study_name: str) -> Iterator[None]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        with client.lock(f"hpsearch:{study_name}:start-trial", timeout=_REDIS_LOCK_TTL):
            yield
    finally:
        client.close()
