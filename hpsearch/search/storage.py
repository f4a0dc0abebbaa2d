"""Where a study lives: one URL in, an Optuna storage out.

- ``sqlite:///studies/hpsearch.db`` (the default; relative to the current directory)
- ``postgresql://user:password@host:port/db`` and any other SQLAlchemy URL Optuna takes
  (``postgres://`` too; with no driver named, psycopg 3 if installed, else psycopg2)
- ``journal:PATH``: an append-only journal file, safe for several workers on one disk
- ``redis://host:port/db``: a journal kept in Redis

Several ``hpsearch run`` processes (workers) share a study on any of them: see
:mod:`hpsearch.search.workers` for how they find each other's dead trials and
:mod:`hpsearch.search.locks` for how they keep to the total.
"""

from __future__ import annotations

import functools
import importlib.util
import random
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from hpsearch.errors import StorageError, first_line

if TYPE_CHECKING:
    import optuna

# Seconds to wait for a database or Redis server before giving up with an error.
CONNECT_TIMEOUT = 10
# Seconds a SQLite write waits for another process's write to end.
SQLITE_BUSY_SECONDS = 60
# Times to open a new database that other workers are setting up at the same moment.
_SCHEMA_TRIES = 5

_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql", "journal", "redis", "rediss")


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``: safe for output, cards and notes."""
    from sqlalchemy.engine import make_url

    if url.count("@") > 1:  # an unquoted "@" in the password, which URL parsers split at
        return re.sub(r"//([^:/@]*):.*@", r"//\1:***@", url)
    try:
        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy reads (journal:PATH, a bad port): hide any userinfo
        return re.sub(r"//([^:/@]*):[^/@]*@", r"//\1:***@", url)
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


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
    if scheme == "sqlite" and not url[len("sqlite:///") :].strip():
        raise StorageError(f"storage {redact(url)!r}: expected a database file after the slashes: sqlite:///PATH")
    if scheme == "journal" and not url[len("journal:") :].strip():
        raise StorageError(f"storage {redact(url)!r}: expected journal:PATH")
    if scheme not in ("sqlite", "journal"):
        _check_server_url(url)


def _check_server_url(url: str) -> None:
    if not url.split(":", 1)[1].startswith("//"):
        raise StorageError(f"storage {redact(url)!r}: expected SCHEME://[user[:password]@]host[:port]/NAME")
    try:
        _ = urlsplit(url).port  # raises ValueError for a port that is not a number
    except ValueError:
        raise StorageError(f"storage {redact(url)!r}: the port is not a number from 0 to 65535") from None


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
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
            return _journal_file(Path(url[len("journal:") :]), create)
        if scheme in ("redis", "rediss"):
            _need_module("redis", "Redis", "redis")
            return _journal_redis(url)
        if scheme in ("postgresql", "postgres"):
            _need_module("psycopg2", "PostgreSQL", "postgres", alternative="psycopg")
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
        raise StorageError(f"storage {redact(url)!r} cannot be opened: {_redacted_first_line(e, url)}") from None


def with_retries(storage: Any, url: str, seconds: float) -> Any:
    """Make ``storage`` ride out an outage: a call that loses its server (a restart, a dropped
    connection) is retried with backoff for up to ``seconds``, then fails with one line.

    Every public method of Optuna's storage interface is retried, on the storage's own class;
    a write that reached the server before its connection dropped is not repeated twice in
    effect (Optuna refuses to change a finished trial, and an orphan trial is failed by the
    workers' heartbeat check).
    """
    if seconds <= 0:
        return storage
    import optuna

    cls = type(storage)
    names = [
        n
        for n in dir(optuna.storages.BaseStorage)
        if not n.startswith("_") and n not in ("check_trial_is_updatable", "remove_session")
    ]
    methods = {n: _retrying(getattr(cls, n), url, seconds) for n in names if callable(getattr(cls, n, None))}
    storage.__class__ = type(f"Retrying{cls.__name__}", (cls,), methods)
    return storage


def call_with_retries(function: Any, url: str, seconds: float) -> Any:
    """``function()``, retried through an outage of the storage at ``url`` as :func:`with_retries` does."""
    return _retrying(lambda _: function(), url, seconds)(None)


def _retrying(method: Any, url: str, seconds: float) -> Any:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        deadline, delay = None, 0.5
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as e:
                if not is_outage(e):
                    raise
                now = time.monotonic()
                deadline = deadline or now + seconds
                if now >= deadline:
                    raise StorageError(
                        f"storage {redact(url)} stopped answering and did not come back within {seconds:g} s "
                        f"({_redacted_first_line(e, url)}); run the same command once it is back"
                    ) from None
                time.sleep(min(delay, deadline - now))
                delay = min(delay * 2, 8.0)

    return call


def is_outage(error: Exception) -> bool:
    """A lost or refused connection to the storage's server, not a bad request."""
    import sqlalchemy.exc

    if isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        return "locked" not in str(error)  # SQLite's busy file has a timeout of its own
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True
    if importlib.util.find_spec("redis") is not None:
        import redis.exceptions

        if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            return True
    return isinstance(error, ConnectionError)


def _need_module(module: str, server: str, extra: str, *, alternative: str | None = None) -> None:
    found = importlib.util.find_spec(module) is not None
    if not found and alternative is not None:
        found = importlib.util.find_spec(alternative) is not None
    if not found:
        raise StorageError(f"a {server} storage needs the {module!r} package; pip install 'hpsearch[{extra}]'")


def _rdb(url: str) -> optuna.storages.RDBStorage:
    import optuna
    import sqlalchemy.exc

    engine_kwargs: dict[str, Any] = {}
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("postgres", "postgresql"):
        # SQLAlchemy 2.1 takes a bare postgresql:// to mean psycopg 3; use whichever driver is here.
        driver = "psycopg" if importlib.util.find_spec("psycopg") is not None else "psycopg2"
        url = f"postgresql+{driver}:{url.split(':', 1)[1]}"
    if url.startswith("sqlite"):
        # Workers on one machine (--workers, --devices) write one file: wait for its lock
        # rather than fail with "database is locked" after sqlite3's default of 5 s.
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    tries = _SCHEMA_TRIES
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except sqlalchemy.exc.DatabaseError as e:
            # Workers opening a new database together race to create Optuna's tables and
            # version row; the losers fail on a duplicate. By the next try the tables are there.
            tries -= 1
            if tries == 0 or not _lost_schema_race(e):
                raise
            time.sleep(0.2 + random.random())


def _lost_schema_race(error: Exception) -> bool:
    import sqlalchemy.exc

    if isinstance(error, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)):
        return True
    return isinstance(error, sqlalchemy.exc.OperationalError) and "already exists" in str(error)  # SQLite


def _journal_file(path: Path, create: bool) -> optuna.storages.JournalStorage:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not create and not path.is_file():
        raise StorageError(f"no journal file at {str(path)!r}; run `hpsearch run` first or pass --storage")
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _journal_redis(url: str) -> optuna.storages.JournalStorage:
    import redis
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalRedisBackend

    # Fail now, with a clear line, rather than mid-trial; redis-py would wait for ever.
    with redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT) as probe:
        probe.ping()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return JournalStorage(JournalRedisBackend(url))


def _redacted_first_line(error: Exception, url: str) -> str:
    line = first_line(error)
    parts = urlsplit(url) if "://" in url else None
    if parts is not None and parts.password:
        for secret in {parts.password, unquote(parts.password)}:
            line = line.replace(secret, "***")
    return line
