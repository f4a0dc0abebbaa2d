"""optuna-dashboard on a study's storage, with a summary note, epoch tables and artifacts.

    hpsearch dashboard                           # http://127.0.0.1:8080/dashboard/
    hpsearch dashboard --study sst2 --port 8081  # another study, another port

:func:`serve` opens the study (a missing storage or study is an error), binds the port (a
port in use is an error), refreshes what the dashboard shows, prints the URL and serves
until Ctrl-C. It only reads the storage apart from those notes and artifacts, so it runs
beside ``hpsearch run`` on the same storage: running trials show their epochs so far.

What the dashboard shows beyond Optuna's own records, all through optuna-dashboard's and
Optuna's public functions:

- the study note: recipe, search space, best trial against the recipe trial, counts and
  where the best model is (:func:`write_note`, text from :mod:`hpsearch.views.notes`);
- a note on every trial a run finishes, with its per-epoch validation metrics as a table;
- the per-epoch curves of every trial, as a plot on the study page;
- the kept model's card and plots as artifacts of the study, stored under
  ``studies/<study>/artifacts/`` (:mod:`hpsearch.views.artifacts`). They belong to a trial,
  but Optuna takes no attribute on a finished trial, so the study holds them, each named
  after its trial (``trial-3-README.md``).

``hpsearch run`` keeps all of it current through :class:`DashboardNotes`; :func:`serve`
refreshes the study's part when it starts (:func:`refresh`).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.trial import FrozenTrial

from hpsearch.config import SearchConfig
from hpsearch.errors import HpsearchError, first_line
from hpsearch.events import RunInfo, RunListener
from hpsearch.search.signals import on_stop_signals
from hpsearch.search.storage import open_storage, redact
from hpsearch.search.study import load_study, open_confirmation
from hpsearch.views.artifacts import artifact_store, upload_kept_card
from hpsearch.views.notes import epoch_note, study_note
from hpsearch.views.plots import epoch_curves

EPOCH_PLOT_ID = "epochs"  # the per-epoch curves' id among the study's dashboard plots


class DashboardError(HpsearchError):
    """The dashboard cannot start: the port is taken or the host cannot be bound."""


# --------------------------------------------------------------------------- serving


def serve(config: SearchConfig, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard on ``config``'s study until Ctrl-C.

    Prints the dashboard's URL on stdout once the port is bound.

    Raises:
        StorageError: The storage or the study does not exist.
        DashboardError: The port is in use or the host cannot be bound.
    """
    import optuna_dashboard

    study = load_study(config.study, config.storage)
    app = optuna_dashboard.wsgi(open_storage(config.storage, create=False), artifact_store=artifact_store(config))
    server = _bind(app, host, port)
    try:
        # Ctrl-C or SIGTERM is how a user or a service manager stops it: exit 0.
        with on_stop_signals(_stop), contextlib.suppress(KeyboardInterrupt):
            _refresh_best_effort(study, config)
            print(f"{_url(host, server.server_port)}/dashboard/", flush=True)
            print(
                f"serving study {config.study!r} from {redact(config.storage)}; Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            server.serve_forever()
    finally:
        server.server_close()


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    # The browser asks for several things at once; a single-threaded server serialises them.
    daemon_threads = True


class _ThreadedServer6(_ThreadedServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # no line per request
        pass


def _bind(app: Any, host: str, port: int) -> WSGIServer:
    server_class = _ThreadedServer6 if ":" in host else _ThreadedServer
    try:
        return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except socket.gaierror as e:
        raise DashboardError(
            f"cannot bind host {host!r}: {e.strerror}; pass --host 127.0.0.1 or another address of this machine"
        ) from None
    except OverflowError:
        raise DashboardError(f"port {port}: expected a number from 1 to 65535; pass --port") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise DashboardError(f"port {port} on {host} is in use; pass --port") from None
        if e.errno == errno.EACCES:
            raise DashboardError(f"port {port} on {host} needs privileges; pass --port above 1023") from None
        raise DashboardError(
            f"cannot bind {host}:{port}: {e.strerror}; pass --host 127.0.0.1 or another --port"
        ) from None


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _refresh_best_effort(study: optuna.Study, config: SearchConfig) -> None:
    """Notes and artifacts are a courtesy: a busy or read-only storage must not stop the dashboard."""
    try:
        refresh(study, config)
    except Exception as e:  # e.g. "database is locked" while a run writes, or a read-only file
        print(
            f"hpsearch: note: the study's notes were not refreshed ({first_line(e)[:200]})", file=sys.stderr, flush=True
        )


# --------------------------------------------------------------------------- during a run


class DashboardNotes(RunListener):
    """Keeps the dashboard current while ``hpsearch run`` runs: after every trial, the study
    note, that trial's epoch note, the epoch plot and the kept model's card.

    Workers take the study's lock (:attr:`RunInfo.lock`) for these writes, so that two never
    interleave the pieces of one note. A failure is reported once on stderr and the search
    goes on.

    Args:
        config: The run's configuration: where the best model and the artifacts are.
    """

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        self.failed = False
        self._active = True
        self._lock: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
        self._figure: str | None = None  # the epoch plot's JSON as last saved, to skip an unchanged one
        self._study: optuna.Study | None = None  # the search study, from run_start

    def run_start(self, run: RunInfo) -> None:
        self._active = run.kind == "search"  # the notes are the search study's
        if self._active:
            self._lock, self._study = run.lock, run.study
            self._guarded(lambda: self._refresh(run.study))

    def trial_end(self, trial: optuna.Trial, frozen: FrozenTrial) -> None:
        if self._active:
            self._guarded(lambda: self._after_trial(trial, frozen))

    def _after_trial(self, trial: optuna.Trial, frozen: FrozenTrial) -> None:
        import optuna_dashboard

        body = epoch_note(frozen)
        if body is not None:
            optuna_dashboard.save_note(trial, body)
        self._refresh(self._study or trial.study)  # a race's seed run is <study>.confirm's: the note is the search's

    def _refresh(self, study: optuna.Study) -> None:
        self._figure = refresh(study, self.config, figure=self._figure)

    def _guarded(self, write: Callable[[], object]) -> None:
        try:
            with self._lock():
                write()
        except Exception as e:  # noqa: BLE001 - notes are a courtesy; the search matters more
            if not self.failed:
                print(
                    f"hpsearch: note: the dashboard notes were not refreshed ({first_line(e)}); the search goes on",
                    file=sys.stderr,
                    flush=True,
                )
            self.failed = True


def refresh(study: optuna.Study, config: SearchConfig, *, figure: str | None = None) -> str:
    """Bring the study's part of the dashboard up to date: the kept model's card and plots
    (when ``hpsearch card`` has written them), the epoch plot and the study note.

    Args:
        study: The study, opened on its storage.
        config: Names the work folder of the best model and the artifacts.
        figure: The epoch plot's JSON as last saved; the plot is saved only if it differs.

    Returns:
        The epoch plot's JSON now saved.
    """
    names = upload_kept_card(study, config)
    text = save_epoch_plot(study, previous=figure)
    write_note(study, workdir=config.workdir, card=names, confirmation=open_confirmation(study, config.storage))
    return text


def write_note(
    study: optuna.Study, *, workdir: str | Path | None = None, card: list[str] | None = None, confirmation: Any = None
) -> str:
    """Set the study's dashboard note to :func:`~hpsearch.views.notes.study_note`, and return it.

    ``card`` names the kept model's card among the study's artifacts, if it has one there.
    """
    import optuna_dashboard

    body = study_note(study, workdir=workdir, card=card, confirmation=confirmation)
    if optuna_dashboard.get_note(study) != body:  # no new note version when nothing changed
        optuna_dashboard.save_note(study, body)
    return body


def save_epoch_plot(study: optuna.Study, *, previous: str | None = None) -> str:
    """Show every trial's validation objective by epoch on the study's dashboard page.

    The figure is saved unless its JSON equals ``previous``; returns its JSON.
    """
    import optuna_dashboard

    figure = epoch_curves(study)
    text = figure.to_json()
    if text != previous:
        optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=EPOCH_PLOT_ID)
    return text
