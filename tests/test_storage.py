"""Storage URLs: each opens the storage it names, and every bad or unreachable one is one line.

PostgreSQL (127.0.0.1:5432, database ``test``) and Redis (127.0.0.1:6379) tests skip when the
server does not answer, or fail where HPSEARCH_REQUIRE_SERVICES names it (CI). Studies made
on them have unique names and are deleted afterwards.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import free_port, missing_service, tiny_run_args

from hpsearch.errors import StorageError
from hpsearch.search.storage import open_storage, redact
from hpsearch.search.study import load_study

PASSWORD = "pw-s3cret"
REDIS_DB = 15  # a database of its own: a Redis journal keeps every study of a database in one log


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def postgres_url() -> str:
    """The test PostgreSQL server's URL, as the first of its usual users that may log in."""
    if not _answers(5432):
        missing_service("postgres", "no PostgreSQL server answers at 127.0.0.1:5432")
    psycopg2 = pytest.importorskip("psycopg2")
    for user in ("postgres", "root"):
        try:
            psycopg2.connect(host="127.0.0.1", port=5432, user=user, dbname="test", connect_timeout=3).close()
        except psycopg2.OperationalError:
            continue
        return f"postgresql://{user}@127.0.0.1:5432/test"
    missing_service("postgres", "PostgreSQL at 127.0.0.1:5432 lets neither postgres nor root into database test")


def redis_url() -> str:
    if not _answers(6379):
        missing_service("redis", "no Redis server answers at 127.0.0.1:6379")
    redis = pytest.importorskip("redis")
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=3).ping()
    except redis.RedisError as e:
        missing_service("redis", f"Redis at 127.0.0.1:6379 does not answer PING: {e}")
    return f"redis://127.0.0.1:6379/{REDIS_DB}"


def storage_url(kind: str, folder: Path) -> str:
    """A URL of each kind; the file kinds live in ``folder``."""
    if kind == "sqlite":
        return f"sqlite:///{folder / 'hpsearch.db'}"
    if kind == "journal":
        return f"journal:{folder / 'hpsearch.journal'}"
    return postgres_url() if kind == "postgresql" else redis_url()


@contextlib.contextmanager
def deleted_afterwards(name: str, url: str) -> Iterator[None]:
    """Delete the study from a server afterwards, so that reruns start clean."""
    try:
        yield
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=open_storage(url, create=False))


def unique_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- opening


@pytest.mark.parametrize(
    ("kind", "storage_class", "backend"),
    [
        ("sqlite", "RDBStorage", None),
        ("journal", "JournalStorage", "JournalFileBackend"),
        ("postgresql", "RDBStorage", None),
        ("redis", "JournalStorage", "JournalRedisBackend"),
    ],
)
def test_each_url_opens_the_storage_it_names_and_a_study_round_trips(tmp_path, kind, storage_class, backend):
    url = storage_url(kind, tmp_path)
    name = unique_name()
    storage = open_storage(url, create=True)
    assert type(storage).__name__ == storage_class
    if backend is not None:
        assert type(storage._backend).__name__ == backend
    with deleted_afterwards(name, url):
        optuna.create_study(study_name=name, storage=storage).set_user_attr("hpsearch", {"k": [1, 2]})
        assert load_study(name, url).user_attrs["hpsearch"] == {"k": [1, 2]}


@pytest.mark.parametrize(
    ("url", "made"),
    [
        ("sqlite:///studies/hpsearch.db", "studies/hpsearch.db"),
        ("journal:runs/hpsearch.journal", "runs/hpsearch.journal"),
    ],
)
def test_run_makes_the_file_and_its_folder_relative_to_the_current_directory(workdir, url, made):
    open_storage(url, create=True)
    assert (workdir / made).is_file()


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        (None, "no study storage at 'studies/hpsearch.db'; run `hpsearch run` first or pass --storage"),
        ("journal:studies/hpsearch.journal", "no journal file at 'studies/hpsearch.journal'; run `hpsearch run` first"),
    ],
)
def test_inspecting_a_missing_storage_is_one_line_and_creates_nothing(workdir, cli, storage, message):
    code, out, err = cli("trials", *(["--storage", storage] if storage else []))
    assert code == 2
    assert _one_line(err).startswith(f"hpsearch: error: {message}")
    assert list(workdir.iterdir()) == []


def test_inspecting_a_missing_study_names_the_studies_there(tmp_path, cli):
    url = storage_url("journal", tmp_path)
    optuna.create_study(study_name="first", storage=open_storage(url, create=True))
    code, _, err = cli("trials", "--study", "second", "--storage", url)
    assert code == 2
    assert _one_line(err) == f"hpsearch: error: no study named 'second' in {url} (studies there: first); pass --study"


# --------------------------------------------------------------------------- bad URLs


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("studies/hpsearch.db", "expected a URL such as sqlite:///studies/hpsearch.db"),
        ("postgress://u@127.0.0.1/test", "expected a URL such as"),
        ("sqlite://studies/hpsearch.db", "a SQLite URL has three slashes: sqlite:///PATH"),
        ("sqlite:///", "expected a database file after the slashes: sqlite:///PATH"),
        ("journal:", "expected journal:PATH"),
        ("postgresql:test", "expected SCHEME://"),
        ("redis://127.0.0.1:port/0", "the port is not a number"),
    ],
)
def test_a_malformed_url_is_one_line_and_run_creates_nothing(workdir, tiny_model, cli, url, message):
    code, out, err = cli(*tiny_run_args(tiny_model, "--trials", "1", "--storage", url))
    assert code == 2
    assert message in _one_line(err)
    assert list(workdir.iterdir()) == []


def _closed_port_url(scheme: str) -> str:
    user = "hpsearch" if scheme == "postgresql" else ""
    return f"{scheme}://{user}:{PASSWORD}@127.0.0.1:{free_port()}/" + ("test" if scheme == "postgresql" else "0")


@pytest.mark.parametrize("scheme", ["postgresql", "redis"])
@pytest.mark.parametrize("command", ["run", "trials"])
def test_an_unreachable_server_is_one_line_without_the_password(workdir, tiny_model, cli, scheme, command):
    url = _closed_port_url(scheme)
    args = tiny_run_args(tiny_model, "--trials", "1") if command == "run" else ["trials"]
    code, out, err = cli(*args, "--storage", url)
    assert code == 2
    line = _one_line(err)
    assert f"storage '{redact(url)}' cannot be opened" in line
    assert PASSWORD not in out + err
    assert list(workdir.iterdir()) == []


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.mark.parametrize(("scheme", "path"), [("postgresql", "test"), ("redis", "0")])
def test_a_server_that_never_answers_fails_after_the_connect_timeout(
    workdir, cli, monkeypatch, silent_server, scheme, path
):
    pytest.importorskip("psycopg2" if scheme == "postgresql" else "redis")
    monkeypatch.setattr("hpsearch.search.storage.CONNECT_TIMEOUT", 2)  # libpq's least
    url = f"{scheme}://u:{PASSWORD}@127.0.0.1:{silent_server}/{path}"
    code, out, err = cli("trials", "--storage", url)
    assert code == 2
    assert "cannot be opened" in _one_line(err)
    assert "timeout" in err.lower()
    assert PASSWORD not in out + err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://me:pw@db.example:5432/hp", "postgresql://me:***@db.example:5432/hp"),
        ("postgresql://me:p@ss@db.example/hp", "postgresql://me:***@db.example/hp"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("postgresql://me@db.example/hp", "postgresql://me@db.example/hp"),
        ("sqlite:///studies/hpsearch.db", "sqlite:///studies/hpsearch.db"),
        ("journal:studies/hp.journal", "journal:studies/hp.journal"),
    ],
)
def test_redact_hides_only_the_password(url, shown):
    assert redact(url) == shown


def test_open_storage_without_create_is_an_error_for_a_missing_file(tmp_path):
    with pytest.raises(StorageError, match=r"^no study storage at '.*missing\.db'; run `hpsearch run` first"):
        open_storage(f"sqlite:///{tmp_path / 'missing.db'}", create=False)
    assert list(tmp_path.iterdir()) == []
