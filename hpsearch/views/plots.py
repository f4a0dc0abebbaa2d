"""Plots of a study as plotly figures, and PNG files of them for the model card.

:func:`figures` returns the study's figures by name; the card writes some of them beside
README.md as PNG (the Hub renders images, not plotly JSON) and the HTML report embeds
them live. PNG export goes through kaleido, which drives a Chrome or Chromium browser:
where none is installed :func:`render_pngs` raises :class:`PngUnavailable` with the
reason, and :func:`write_pngs` returns None, so a card still renders without its plots.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch import schema
from hpsearch.formatting import format_param, is_number, param_label

if TYPE_CHECKING:
    import plotly.graph_objects as go

logger = logging.getLogger(__name__)

# The order the card and the report show them in.
FIGURE_NAMES = ("history", "epochs", "importances", "parallel", "slice", "timeline")
# PNG size in layout pixels; scale 2 keeps the text sharp on the Hub's high-DPI pages.
PNG_WIDTH, PNG_HEIGHT, PNG_SCALE = 900, 500, 2

_STYLE = {  # line colour, dash, width by how a trial ended
    "complete": ("#1f77b4", "solid", 1.5),
    "best": ("#d62728", "solid", 3.5),
    "pruned": ("#9e9e9e", "dash", 1.2),
    "failed": ("#8c564b", "dot", 1.2),
}


class PngUnavailable(Exception):
    """No PNG engine: kaleido is missing or cannot find a Chrome to drive."""


def figures(study: optuna.Study, names: Iterable[str] = FIGURE_NAMES) -> dict[str, go.Figure]:
    """The study's plots, keyed by name, in :data:`FIGURE_NAMES` order.

    ``history``, ``parallel``, ``slice`` and ``timeline`` are Optuna's own plots;
    ``epochs`` draws every trial's per-epoch validation objective; ``importances`` is
    left out until at least two trials are complete and some parameter varies among them.

    Args:
        study: The study, opened on its storage.
        names: Which of :data:`FIGURE_NAMES` to make (all by default).
    """
    import plotly.graph_objects  # noqa: F401  (optuna.visualization needs plotly; fail here if absent)
    from optuna import visualization as vis

    wanted = set(names)
    unknown = wanted - set(FIGURE_NAMES)
    if unknown:
        raise ValueError(f"unknown figure names {sorted(unknown)}; expected some of {', '.join(FIGURE_NAMES)}")
    target_name = schema.objective_metric_name(schema.objective_name(study))
    makers = {
        "history": lambda: vis.plot_optimization_history(study, target_name=target_name),
        "epochs": lambda: epoch_curves(study),
        "importances": lambda: vis.plot_param_importances(study, target_name=target_name),
        "parallel": lambda: vis.plot_parallel_coordinate(study, target_name=target_name),
        "slice": lambda: vis.plot_slice(study, target_name=target_name),
        "timeline": lambda: vis.plot_timeline(study),
    }
    out: dict[str, go.Figure] = {}
    with warnings.catch_warnings():  # experimental-feature and few-trials notices: not the reader's concern
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        for name in FIGURE_NAMES:
            if name not in wanted or (name == "importances" and not enough_for_importances(study)):
                continue
            out[name] = makers[name]()
    return out


def enough_for_importances(study: optuna.Study) -> bool:
    """Importances need two complete trials and a parameter that took two values among them."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return False
    names = {n for t in done for n in t.params}
    return any(len({repr(t.params.get(n)) for t in done}) > 1 for n in names)


def epoch_curves(study: optuna.Study) -> go.Figure:
    """Every trial's validation objective by epoch.

    Complete trials are solid blue lines and the best one thick red; pruned trials are
    grey dashes ending in an ✕ at the epoch they stopped; failed trials with rows are
    brown dots ending in a ◆.
    """
    import plotly.graph_objects as go

    metric = schema.objective_name(study)
    trials = study.get_trials(deepcopy=False)
    best = schema.best_trial(trials)
    best_number = best.number if best is not None else None
    fig = go.Figure()
    shown: set[str] = set()
    # Draw the best trial last so it sits on top of the others.
    for trial in sorted(trials, key=lambda t: t.number == best_number):
        rows = [r for r in schema.rows(trial) if is_number(r[metric])]
        if not rows:
            continue
        kind = _kind(trial, best_number)
        if kind is None:
            continue
        colour, dash, width = _STYLE[kind]
        end_symbol = {"pruned": "x", "failed": "diamond"}.get(kind, "circle")
        symbols = ["circle"] * (len(rows) - 1) + [end_symbol]
        sizes = [5] * (len(rows) - 1) + [11 if kind in ("pruned", "failed") else 7]
        fig.add_trace(
            go.Scatter(
                x=[r["epoch"] for r in rows],
                y=[r[metric] for r in rows],
                mode="lines+markers",
                name=f"best: trial {trial.number}" if kind == "best" else _LEGEND[kind],
                legendgroup=kind,
                showlegend=kind == "best" or kind not in shown,
                line={"color": colour, "dash": dash, "width": width},
                marker={"color": colour, "symbol": symbols, "size": sizes},
                opacity=1.0 if kind == "best" else 0.75,
                hovertemplate=_hover(trial, kind, metric),
            )
        )
        shown.add(kind)
    fig.update_layout(
        title=f"Validation {metric} by epoch, every trial",
        xaxis_title="epoch",
        yaxis_title=schema.objective_metric_name(metric),
        xaxis={"tickmode": "linear", "tick0": 1, "dtick": 1},
        legend={"title": None},
        template="plotly_white",
    )
    return fig


_LEGEND = {"complete": "complete", "pruned": "pruned (✕ where it stopped)", "failed": "failed (◆ where it stopped)"}


def _kind(trial: FrozenTrial, best_number: int | None) -> str | None:
    if trial.number == best_number:
        return "best"
    return (
        schema.state_name(trial) if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) else None
    )


def _hover(trial: FrozenTrial, kind: str, metric: str) -> str:
    params = "<br>".join(f"{param_label(k)}={format_param(v)}" for k, v in trial.params.items())
    head = f"trial {trial.number} ({'best' if kind == 'best' else kind})"
    return f"{head}<br>epoch %{{x}}<br>{metric} %{{y:.4f}}<br>{params}<extra></extra>"


# --------------------------------------------------------------------------- PNG files


def render_pngs(figs: Mapping[str, go.Figure], folder: str | Path) -> list[Path]:
    """Write ``<folder>/<name>.png`` for every figure, in one kaleido browser session.

    Raises:
        PngUnavailable: kaleido is missing, or it found no Chrome/Chromium to drive
            (the message says how to install one).
    """
    import plotly.io as pio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png" for name in figs]
    if not paths:
        return []
    try:
        pio.write_images(list(figs.values()), paths, width=PNG_WIDTH, height=PNG_HEIGHT, scale=PNG_SCALE)
    except Exception as e:
        reason = _engine_problem(e)
        if reason is None:
            raise
        for path in paths:  # never leave half a set behind
            path.unlink(missing_ok=True)
        raise PngUnavailable(reason) from None
    return paths


def write_pngs(figs: Mapping[str, go.Figure], folder: str | Path) -> list[Path] | None:
    """Like :func:`render_pngs`, but returns None (and logs why) when no PNG engine exists."""
    try:
        return render_pngs(figs, folder)
    except PngUnavailable as e:
        logger.info("plots skipped: %s", e)
        return None


def _engine_problem(error: Exception) -> str | None:
    """A one-line reason if ``error`` means "no PNG engine here"; None for anything else."""
    text = str(error)
    chrome = type(error).__name__ == "ChromeNotFoundError" or "chrome" in text.lower()
    if chrome:
        return (
            "kaleido found no Chrome or Chromium to render PNG files "
            "(install one, e.g. `plotly_get_chrome` or `apt-get install chromium`)"
        )
    if "kaleido" in text.lower() and isinstance(error, RuntimeError | ImportError | ValueError):
        first = (text.strip().splitlines() or [type(error).__name__])[0]
        return f"no PNG engine: {first}"
    try:
        from choreographer.errors import BrowserClosedError, BrowserFailedError
    except ImportError:
        return None
    if isinstance(error, BrowserFailedError | BrowserClosedError):
        first = (text.strip().splitlines() or [type(error).__name__])[0]
        return f"the browser kaleido drives could not start: {first}"
    return None
