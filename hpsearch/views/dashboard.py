"""optuna-dashboard on a study's storage, with a summary note, epoch tables and artifacts.

    hpsearch dashboard                           # http://127.0.0.1:8080/dashboard/
    hpsearch dashboard --study sst2 --port 8081  # another study, another port

:func:`serve` opens the study (a missing storage or study is an error), binds the port (a
port in use is an error), refreshes what the dashboard shows, prints the URL and serves
until Ctrl-C. It only reads the storage apart from those notes and artifacts, so it runs
beside ``hpsearch run`` on the same storage: running trials show their epochs so far.

What the dashboard shows beyond Optuna's own records:

- the study note: recipe, search space, best trial against the recipe trial, counts and
  where the best model is (:func:`write_note`);
- a note on every finished trial with its per-epoch validation metrics as a table;
- the kept model's card and plots as artifacts of its trial, stored under
  ``studies/<study>/artifacts/`` (:func:`upload_card_artifacts`).

:func:`after_run` brings all of it up to date; ``hpsearch run`` calls it after every trial
(:class:`LiveRefresh`), and :func:`serve` when it starts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mimetypes
import socket
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.config import Param, SearchConfig
from hpsearch.errors import HpsearchError, first_line
from hpsearch.search.storage import redact
from hpsearch.search.study import STUDY_ATTR, load_study, on_stop_signals, study_dir
from hpsearch.views.trials import EPOCHS_ATTR, best_trial, end_reason, format_param, recipe_trial, shipped_best_after_stop

ARTIFACTS_DIR = "artifacts"  # studies/<study>/artifacts/: the artifact store's files
# optuna-dashboard lists a trial's artifacts from study attributes under this prefix as well
# as from the trial's own; Optuna refuses attributes on a finished trial, so cards (written
# after the trial ends) go here.
_TRIAL_ARTIFACTS_PREFIX = "dashboard:artifacts:"
_PLOT_PREFIX = "dashboard:plot_data:"  # where save_plotly_graph_object keeps a figure's JSON
EPOCH_PLOT_ID = "epochs"  # the per-epoch curves' id among the study's dashboard plots
_CARD_FILES = ("README.md",)
_PLOT_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg")
_METRICS = ("train_loss", "eval_loss", "f1", "accuracy", "precision", "recall")


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
    app = optuna_dashboard.wsgi(study._storage, artifact_store=artifact_store(config))
    server = _bind(app, host, port)
    try:
        # Ctrl-C or SIGTERM is how a user or a service manager stops it: exit 0.
        with on_stop_signals(_stop), contextlib.suppress(KeyboardInterrupt):
            _refresh_best_effort(study, config)
            print(f"{_url(host, server.server_port)}/dashboard/", flush=True)
            print(f"serving study {config.study!r} from {redact(config.storage)}; Ctrl-C to stop", file=sys.stderr, flush=True)
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
        raise DashboardError(f"cannot bind host {host!r}: {e.strerror}; pass --host 127.0.0.1 or another address of this machine") from None
    except OverflowError:
        raise DashboardError(f"port {port}: expected a number from 1 to 65535; pass --port") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise DashboardError(f"port {port} on {host} is in use; pass --port") from None
        if e.errno == errno.EACCES:
            raise DashboardError(f"port {port} on {host} needs privileges; pass --port above 1023") from None
        raise DashboardError(f"cannot bind {host}:{port}: {e.strerror}; pass --host 127.0.0.1 or another --port") from None


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _refresh_best_effort(study: optuna.Study, config: SearchConfig) -> None:
    """Notes and artifacts are a courtesy: a busy or read-only storage must not stop the dashboard."""
    try:
        after_run(study, config)
    except Exception as e:  # e.g. "database is locked" while a run writes, or a read-only file
        print(f"hpsearch: note: the study's notes were not refreshed ({first_line(e)[:200]})", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- what the dashboard shows


class LiveRefresh:
    """A study callback that runs :func:`after_run` after every trial, so the dashboard follows
    a running search: the note's best trial and counts, the new trial's epoch table, the plot.

    Workers take the study's lock for it, so that two never interleave the pieces of one
    note. A failure is reported once and the search goes on.
    """

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        self.failed = False

    def __call__(self, study: Any, trial: FrozenTrial) -> None:
        try:
            with study.lock():
                after_run(study, self.config)
        except Exception as e:  # noqa: BLE001 - notes are a courtesy; the search matters more
            if not self.failed:
                print(f"hpsearch: note: the dashboard notes were not refreshed ({first_line(e)}); the search goes on", file=sys.stderr, flush=True)
            self.failed = True


def after_run(study: optuna.Study, config: SearchConfig) -> None:
    """Bring the dashboard's view up to date: run after every trial of ``hpsearch run`` and by :func:`serve`.

    Writes the study note and the finished trials' epoch notes, and uploads the kept
    model's card and plots (``studies/<study>/best-model/README.md`` and its images) to
    its trial when a card has been written.
    """
    _name_objective(study)
    write_note(study, workdir=config.workdir)
    write_epoch_notes(study)
    save_epoch_plot(study)
    folder = study_dir(config) / "best-model"
    kept = _kept_trial(folder)
    files = card_files(folder)
    # A folder left from an older study of the same name may name a trial this one lacks.
    if kept is not None and files and kept < len(study.get_trials(deepcopy=False)):
        upload_card_artifacts(study, kept, files, artifact_dir=artifact_dir(config))


def artifact_dir(config: SearchConfig) -> Path:
    """``studies/<study>/artifacts/``: where the artifact store keeps the files."""
    return study_dir(config) / ARTIFACTS_DIR


def artifact_store(config: SearchConfig) -> optuna.artifacts.FileSystemArtifactStore:
    """The study's artifact store (its folder is made by the first upload)."""
    return optuna.artifacts.FileSystemArtifactStore(artifact_dir(config))


def card_files(folder: Path) -> list[Path]:
    """A card folder's README.md and the plots beside it (not the weights or the tokenizer)."""
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        return []
    plots = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _PLOT_SUFFIXES)
    return [folder / name for name in _CARD_FILES if (folder / name).is_file()] + plots


def upload_card_artifacts(study: optuna.Study, trial_number: int, paths: Iterable[str | Path], *, artifact_dir: Path) -> dict[str, str]:
    """Attach files to trial ``trial_number`` as artifacts the dashboard lists and serves.

    A file whose name the trial already has replaces that artifact's content (same
    artifact id), so uploading a rewritten card again does not add a second copy.

    Args:
        study: The study, opened on its storage.
        trial_number: The trial the files belong to (finished or not).
        paths: The files; their base names are what the dashboard shows.
        artifact_dir: The artifact store's folder, ``studies/<study>/artifacts``
            (:func:`artifact_dir`); :func:`serve` reads from the same folder.

    Returns:
        File name → artifact id.
    """
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, trial_number)
    Path(artifact_dir).mkdir(parents=True, exist_ok=True)
    store = optuna.artifacts.FileSystemArtifactStore(artifact_dir)
    existing = {meta["filename"]: meta["artifact_id"] for meta in reversed(trial_artifacts(study, trial_number))}
    uploaded = {}
    for path in map(Path, paths):
        artifact_id = existing.get(path.name) or str(uuid.uuid4())
        mimetype, encoding = mimetypes.guess_type(path.name)
        if path.suffix.lower() == ".md":
            mimetype = "text/markdown"
        meta = {"artifact_id": artifact_id, "filename": path.name, "mimetype": mimetype or "application/octet-stream", "encoding": encoding}
        with path.open("rb") as f:
            store.write(artifact_id, f)  # the file first, so a listed artifact is always there
        storage.set_study_system_attr(study._study_id, f"{_TRIAL_ARTIFACTS_PREFIX}{trial_id}:{artifact_id}", json.dumps(meta))
        uploaded[path.name] = artifact_id
    return uploaded


def trial_artifacts(study: optuna.Study, trial_number: int) -> list[dict[str, Any]]:
    """The artifacts that :func:`upload_card_artifacts` attached to a trial (``artifact_id``, ``filename``, ...)."""
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, trial_number)
    prefix = f"{_TRIAL_ARTIFACTS_PREFIX}{trial_id}:"
    attrs = storage.get_study_system_attrs(study._study_id)
    return [json.loads(value) for key, value in sorted(attrs.items()) if key.startswith(prefix)]


def write_note(study: optuna.Study, *, workdir: str | Path | None = None) -> str:
    """Set the study's dashboard note to a summary of the search, and return it.

    The summary: the objective, model and data, the best trial against the recipe trial,
    the counts of trials by state, where the best model is, the recipe and the space.
    ``workdir`` (default: the one the study was run with) locates ``<study>/best-model``.
    """
    import optuna_dashboard

    body = study_note(study, workdir=workdir)
    if optuna_dashboard.get_note(study) != body:  # no new note version when nothing changed
        optuna_dashboard.save_note(study, body)
    return body


def write_epoch_notes(study: optuna.Study) -> int:
    """Give each finished trial a note with its per-epoch metrics table; returns how many changed.

    A finished trial's rows no longer change, so after the first time only new trials are written.
    """
    import optuna_dashboard

    current = _trial_notes(study)
    changed = 0
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for frozen in study.get_trials(deepcopy=False, states=finished):
        body = epoch_note(frozen)
        if body is None or current(frozen._trial_id) == body:
            continue
        optuna_dashboard.save_note(optuna.Trial(study, frozen._trial_id), body)
        changed += 1
    return changed


def _trial_notes(study: optuna.Study) -> Any:
    """A function from trial id to that trial's note, reading the study's attributes once."""
    import optuna_dashboard

    try:  # one read for all trials; the public get_note reads every attribute per trial
        from optuna_dashboard._note import get_note_from_system_attrs
    except ImportError:  # pragma: no cover - a later optuna-dashboard
        return lambda trial_id: optuna_dashboard.get_note(optuna.Trial(study, trial_id))
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return lambda trial_id: get_note_from_system_attrs(attrs, trial_id)["body"]


def save_epoch_plot(study: optuna.Study) -> bool:
    """Show every trial's validation objective by epoch on the study's dashboard page.

    Returns whether the stored figure changed (it is rewritten only then).
    """
    import optuna_dashboard

    from hpsearch.views.plots import epoch_curves

    figure = epoch_curves(study)
    text = figure.to_json()
    prefix = f"{_PLOT_PREFIX}{EPOCH_PLOT_ID}:"
    attrs = study._storage.get_study_system_attrs(study._study_id)
    chunks = sorted(((int(k[len(prefix):]), v) for k, v in attrs.items() if k.startswith(prefix) and k[len(prefix):].isdigit()))
    if "".join(v for _, v in chunks) == text:
        return False
    optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=EPOCH_PLOT_ID)
    return True


def _name_objective(study: optuna.Study) -> None:
    """Studies made before objectives had names get one from their stored configuration."""
    if study.metric_names is None:
        objective = _info(study).get("config", {}).get("objective", "f1")
        study.set_metric_names([f"validation {objective}"])


# --------------------------------------------------------------------------- note text


def study_note(study: optuna.Study, *, workdir: str | Path | None = None) -> str:
    """The study note's Markdown (see :func:`write_note`)."""
    info = _info(study)
    config = info.get("config", {})
    objective = (study.metric_names or [f"validation {config.get('objective', 'f1')}"])[0]
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    recipe = recipe_trial(trials)
    lines = [f"## hpsearch study `{study.study_name}`", ""]
    facts = [f"Objective: **{objective}**, maximised."]
    if info.get("base_model"):
        facts.append(f"Model: `{info['base_model']}`.")
    data = info.get("data", {})
    if data.get("name"):
        sizes = ", ".join(f"{k} {v}" for k, v in data.get("sizes", {}).items())
        facts.append(f"Data: {data['name']}" + (f" ({sizes})." if sizes else "."))
    lines += [" ".join(facts), "", "### Result", ""]
    lines += _result_lines(best, recipe, objective)
    lines += ["", _counts(trials), ""]
    lines += _best_model_lines(study, config, workdir)
    if config.get("recipe"):
        lines += ["", "### Recipe", "", "| argument | value |", "|---|---|"]
        lines += [f"| `{k}` | {format_param(v)} |" for k, v in config["recipe"].items()]
    if config.get("space"):
        lines += ["", "### Search space", "", "| parameter | range | recipe | best trial |", "|---|---|---|---|"]
        for name, spec in config["space"].items():
            lines.append(
                f"| `{name}` | {Param(name, **spec).describe()} | {format_param(config.get('recipe', {}).get(name))} | "
                f"{format_param(best.params.get(name)) if best is not None else ''} |"
            )
    lines += ["", f"Storage: `{redact(config.get('storage', '')) or '?'}`. Per-epoch metrics: each trial's note and its `epochs` attribute."]
    return "\n".join(lines) + "\n"


def epoch_note(trial: FrozenTrial) -> str | None:
    """A finished trial's note: its per-epoch metrics as a Markdown table, and how it ended."""
    rows = trial.user_attrs.get(EPOCHS_ATTR) or []
    reason = end_reason(trial)
    if not rows and not reason:
        return None
    lines = [f"### Trial {trial.number}" + (" (the recipe)" if trial.user_attrs.get("recipe") else ""), ""]
    if rows:
        lines += ["| epoch | step | " + " | ".join(m.replace("_", " ") for m in _METRICS) + " |", "|---:" * (2 + len(_METRICS)) + "|"]
        for row in rows:
            lines.append(f"| {row.get('epoch', '')} | {row.get('step', '')} | " + " | ".join(_num(row.get(m)) for m in _METRICS) + " |")
        lines.append("")
    shipped = trial.user_attrs.get("shipped_epoch")
    if shipped is not None:
        rule = trial.user_attrs.get("checkpoint_rule", "last")
        best = rule == "last" and shipped_best_after_stop(trial)
        lines.append(f"Shipped epoch {shipped}" + (", its best: a trial stopped early ships its best epoch" if best else "") + f" (checkpoint rule: {rule}).")
    if reason:
        text = str(reason).rstrip(".")
        lines.append(f"Failed: {text}." if trial.state == TrialState.FAIL else f"{text[:1].upper()}{text[1:]}.")
    return "\n".join(lines).rstrip() + "\n"


def _result_lines(best: FrozenTrial | None, recipe: FrozenTrial | None, objective: str) -> list[str]:
    if best is None:
        return ["No trial has completed yet."]
    lines = [f"| | trial | {objective} |", "|---|---:|---:|", f"| best | {best.number} | {best.value:.4f} |"]
    if recipe is not None and recipe.state == TrialState.COMPLETE:
        lines.append(f"| recipe | {recipe.number} | {recipe.value:.4f} |")
        gain = best.value - recipe.value
        relative = f" ({gain / recipe.value:+.1%})" if recipe.value else ""
        verdict = "the recipe itself is the best trial" if best.number == recipe.number else f"the best trial beats the recipe by {gain:+.4f}{relative}"
        lines += ["", f"{objective}: {verdict}."]
    elif recipe is not None:
        lines += ["", f"The recipe trial ({recipe.number}) is {_state(recipe)}: no comparison yet."]
    return lines


def _best_model_lines(study: optuna.Study, config: dict[str, Any], workdir: str | Path | None) -> list[str]:
    folder = Path(workdir if workdir is not None else config.get("workdir", "studies")) / study.study_name / "best-model"
    kept = _kept_trial(folder)
    if kept is None:
        return ["No model has been kept yet."]
    marker = json.loads((folder / "hpsearch.json").read_text(encoding="utf-8"))
    epoch = f", epoch {marker['epoch']}" if "epoch" in marker else ""
    card = " Its card and plots are artifacts of that trial." if card_files(folder) else f" Write its card with `hpsearch card best --study {study.study_name}`."
    return [f"Best model: `{folder}/` (trial {kept}{epoch}).{card}"]


def _kept_trial(folder: Path) -> int | None:
    try:
        return int(json.loads((Path(folder) / "hpsearch.json").read_text(encoding="utf-8"))["trial"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _counts(trials: list[FrozenTrial]) -> str:
    order = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)
    counts = {s: sum(t.state == s for t in trials) for s in order}
    # complete, pruned and failed always; running and waiting only when there are some
    parts = [f"{n} {_STATE_WORDS[s]}" for s, n in counts.items() if n or s in order[:3]]
    return f"Trials: {len(trials)} in all: " + ", ".join(parts) + "."


_STATE_WORDS = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


def _state(trial: FrozenTrial) -> str:
    return _STATE_WORDS.get(trial.state, trial.state.name.lower())


def _info(study: optuna.Study) -> dict[str, Any]:
    return dict(study.user_attrs.get(STUDY_ATTR, {}))






def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))
