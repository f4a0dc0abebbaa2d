"""The study lock: what every worker of a study takes to count trials and start one.

Counting and starting under one lock is what keeps two workers that finish together from
both starting the last trial (:mod:`hpsearch.search.loop`). The lock lives where the study
does:

- SQLite and journal files: a file lock (``filelock``) on ``<file>.hpsearch-lock`` beside
  the file, for workers on one machine, as these storages require;
- PostgreSQL: a transaction-level advisory lock, which the server drops with the
  connection of a worker that dies holding it;
- Redis: a redis-py lock that expires by itself if its holder dies;
- other databases (MySQL and the rest): no lock; workers finishing at the same moment may
  then run a trial beyond the total.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from hpsearch.search.storage import call_with_retries, is_outage, sqlite_path

# Seconds a Redis lock lives if its holder dies while holding it (holding takes milliseconds).
_REDIS_LOCK_TTL = 60


def lock_file(url: str) -> Path | None:
    """``<file>.hpsearch-lock`` beside a SQLite or journal file; None for a server storage."""
    path = sqlite_path(url)
    if path is None and url.startswith("journal:"):
        path = Path(url[len("journal:") :])
    return None if path is None else path.with_name(path.name + ".hpsearch-lock")


@contextlib.contextmanager
def retrying_study_lock(storage: Any, url: str, study_name: str, *, seconds: float) -> Iterator[None]:
    """:func:`study_lock`, taken through a storage outage of up to ``seconds``.

    A server that restarts while the lock is held has dropped it already: the error its
    release raises then is no news.
    """
    stack = contextlib.ExitStack()
    call_with_retries(lambda: stack.enter_context(study_lock(storage, url, study_name)), url, seconds)
    try:
        yield
    finally:
        try:
            stack.close()
        except Exception as e:
            if not is_outage(e):
                raise


@contextlib.contextmanager
def study_lock(storage: Any, url: str, study_name: str) -> Iterator[None]:
    """Hold the lock of ``study_name`` on the storage at ``url`` (opened as ``storage``)."""
    path = lock_file(url)
    if path is not None:
        from filelock import FileLock

        with FileLock(path):
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


def _lock_key(study_name: str) -> int:
    """A signed 64-bit key, the same in every process (``hash()`` is salted per process)."""
    digest = hashlib.blake2b(f"hpsearch:{study_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def _pg_lock(storage: optuna.storages.RDBStorage, study_name: str) -> Iterator[None]:
    import sqlalchemy

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
