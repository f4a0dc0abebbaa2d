"""Where a study lives: one URL in, an Optuna storage out.

- ``sqlite:///studies/hpsearch.db`` (the default; relative to the current directory)
- ``postgresql://user:password@host/db`` and any other SQLAlchemy URL Optuna takes
- ``journal:PATH``: an append-only journal file, safe for several workers on one disk
- ``redis://host:port/db``: a journal kept in Redis

RDB storages keep a heartbeat, so a worker that dies mid-trial leaves a trial that the next
run marks failed; every storage also records the worker's host and pid on each trial.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from hpsearch.errors import StorageError

if TYPE_CHECKING:
    import optuna

# Seconds between heartbeats, and how long one may be missed before a trial counts as dead.
HEARTBEAT_INTERVAL = 30
GRACE_PERIOD = 120

_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql", "journal", "redis", "rediss")


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``: safe for output, cards and notes."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def check_url(url: str) -> None:
    """Reject a malformed URL before any work starts."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""
    if scheme not in _SCHEMES:
        raise StorageError(
            f"storage {redact(url)!r}: expected a URL such as sqlite:///studies/hpsearch.db, "
            "postgresql://user@host/db, journal:PATH or redis://host:6379"
        )
    if scheme == "sqlite" and not url.startswith("sqlite:///"):
        raise StorageError(f"storage {redact(url)!r}: a SQLite URL has three slashes: sqlite:///PATH")
    if scheme == "journal" and not url[len("journal:"):].strip():
        raise StorageError(f"storage {redact(url)!r}: expected journal:PATH")


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        return None if path in ("", ":memory:") else Path(path)
    return None


def open_storage(url: str, *, create: bool) -> optuna.storages.BaseStorage:
    """Open the storage at ``url``.

    Args:
        url: A storage URL (see the module docstring).
        create: Make a missing SQLite database or journal file (``run``); inspection
            commands pass False, so that a mistyped path is an error, not a new empty file.

    Raises:
        StorageError: The URL is malformed, the file is missing, or the server does not answer.
    """
    check_url(url)
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    try:
        if scheme == "journal":
            return _journal_file(Path(url[len("journal:"):]), create)
        if scheme in ("redis", "rediss"):
            return _journal_redis(url)
        path = sqlite_path(url)
        if path is not None:
            if not create and not path.is_file():
                raise StorageError(f"no study storage at {str(path)!r}; run `hpsearch run` first or pass --storage")
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
        return _rdb(url)
    except StorageError:
        raise
    except Exception as e:
        raise StorageError(f"storage {redact(url)!r} cannot be opened: {_first_line(e, url)}") from None


def _rdb(url: str) -> optuna.storages.RDBStorage:
    import optuna

    engine_kwargs: dict[str, Any] = {}
    if not url.startswith("sqlite"):
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}} if url.startswith("postgres") else {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=HEARTBEAT_INTERVAL,
        grace_period=GRACE_PERIOD,
    )


def _journal_file(path: Path, create: bool) -> optuna.storages.JournalStorage:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not create and not path.is_file():
        raise StorageError(f"no journal file at {str(path)!r}; run `hpsearch run` first or pass --storage")
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _journal_redis(url: str) -> optuna.storages.JournalStorage:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalRedisBackend

    backend = JournalRedisBackend(url)
    backend._redis.ping()  # fail now, with a clear line, rather than mid-trial
    return JournalStorage(backend)


def _first_line(error: Exception, url: str) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    parts = urlsplit(url) if "://" in url else None
    if parts is not None and parts.password:
        line = line.replace(parts.password, "***")
    return line[:300]
