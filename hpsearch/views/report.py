"""A study as one self-contained HTML file: a summary, the trials and every plot.

    hpsearch report                              # studies/hpsearch/report.html
    hpsearch report --study sst2 --output sst2.html

The page embeds plotly.js once, so it opens offline and can be mailed. The
figures are :func:`hpsearch.views.plots.figures`: optimisation history, per-epoch curves of all
trials (pruned ones dashed, ending where they stopped), parameter importances (once two
trials are complete), parallel coordinates, slices and the timeline. The file is written
to a temporary file beside the target and renamed over it, so a reader never sees half a
report.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna

from hpsearch import __version__, schema
from hpsearch.config import SearchConfig
from hpsearch.errors import HpsearchError
from hpsearch.formatting import format_param, param_label
from hpsearch.layout import StudyLayout
from hpsearch.search.storage import redact
from hpsearch.search.study import load_study, open_confirmation
from hpsearch.views.confirmation import outcome_lines, rows
from hpsearch.views.plots import figures
from hpsearch.views.trials import trial_records

_TITLES = {
    "history": "Optimisation history",
    "epochs": "Per-epoch validation curves",
    "importances": "Parameter importances",
    "parallel": "Parallel coordinates",
    "slice": "Slices",
    "timeline": "Timeline",
}
_CAPTIONS = {
    "history": "Each complete trial's objective, and the best so far.",
    "epochs": "Every trial's validation objective after each epoch; pruned trials are dashed and end with ✕ where they stopped.",
    "importances": "How much of the objective's variation each parameter explains (fANOVA over complete trials).",
    "parallel": "Each complete trial's parameters and objective, one line per trial.",
    "slice": "The objective against each parameter.",
    "timeline": "When each trial ran, coloured by how it ended.",
}


class ReportError(HpsearchError):
    """The report cannot be written where asked."""


def write_report(config: SearchConfig, *, output: str | Path | None = None) -> Path:
    """Write the study's HTML report and return its path.

    Args:
        config: Names the study, its storage and its work folder.
        output: The HTML file (default ``studies/<study>/report.html``); an existing
            folder gets ``report.html`` inside it.

    Raises:
        StorageError: The storage or the study does not exist.
        ReportError: The file cannot be written there.
    """
    study = load_study(config.study, config.storage)
    path = _target(config, output)
    html = render_report(study, confirmation=open_confirmation(study, config.storage))
    _write_atomically(path, html)
    return path


def render_report(study: optuna.Study, *, confirmation: Any = None) -> str:
    """The report's HTML text; ``confirmation`` (hpsearch.search.seeds) adds its table."""
    import jinja2
    import plotly.io as pio

    with warnings.catch_warnings():  # Optuna warns about experimental plots and empty studies
        warnings.simplefilter("ignore")
        figs = figures(study)
    plots = []
    for i, (name, fig) in enumerate(figs.items()):
        div = pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=i == 0,  # plotly.js once, inline, before the first plot
            div_id=f"plot-{name}",
            config={"responsive": True, "displaylogo": False},
            default_height="520px",
        )
        plots.append({"name": name, "title": _TITLES.get(name, name), "caption": _CAPTIONS.get(name, ""), "html": div})
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    seeds = None
    if confirmation is not None:
        seeds = {
            "done": confirmation.done,
            "pending": confirmation.pending,
            "rows": rows(confirmation),
            "lines": outcome_lines(confirmation),
        }
    return env.from_string(_TEMPLATE).render(
        **_summary(study), plots=plots, missing=[n for n in _TITLES if n not in figs], seeds=seeds
    )


# --------------------------------------------------------------------------- summary


def _summary(study: optuna.Study) -> dict[str, Any]:
    settings = schema.read_settings(study)
    objective = schema.objective_metric_name(settings.objective)
    records = trial_records(study)
    best = next((r for r in records if r["best"]), None)
    recipe_trial = schema.recipe_trial(study.get_trials(deepcopy=False))
    recipe = None if recipe_trial is None else next(r for r in records if r["number"] == recipe_trial.number)
    counts = {state: sum(r["state"] == state for r in records) for state in ("complete", "pruned", "failed", "running")}
    comparison = None
    if best is not None and recipe is not None and recipe["value"] is not None:
        gain = best["value"] - recipe["value"]
        relative = f" ({gain / recipe['value']:+.1%})" if recipe["value"] else ""
        comparison = (
            "the recipe itself is the best trial" if best is recipe else f"{gain:+.4f}{relative} over the recipe"
        )
    params = list(dict.fromkeys(k for r in records for k in r["params"]))
    return {
        "study": study.study_name,
        "objective": objective,
        "model": settings.base_model,
        "data": settings.data.name,
        "storage": redact(settings.config["storage"]),
        "best": best,
        "recipe": recipe,
        "comparison": comparison,
        "counts": counts,
        "total": len(records),
        "params": [{"name": p, "label": param_label(p)} for p in params],
        "rows": [_row(r, params) for r in records],
        "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
    }


def _row(record: dict[str, Any], params: list[str]) -> dict[str, Any]:
    marks = " ".join(m for m, on in (("★ best", record["best"]), ("recipe", record[schema.RECIPE])) if on)
    shipped = record[schema.SHIPPED_EPOCH]
    return {
        "number": record["number"],
        "state": record["state"],
        "value": "" if record["value"] is None else f"{record['value']:.4f}",
        "trained": "" if record["epoch"] is None else record["epoch"],
        "shipped": "" if shipped is None else shipped,
        "params": [format_param(record["params"].get(p)) for p in params],
        "duration": "" if record["duration_s"] is None else f"{record['duration_s']:.1f} s",
        "note": "; ".join(x for x in (marks, record["reason"] or "") if x),
        "best": record["best"],
    }


# --------------------------------------------------------------------------- writing


def _target(config: SearchConfig, output: str | Path | None) -> Path:
    path = Path(output) if output is not None else StudyLayout.of(config).report
    if path.is_dir():
        path = path / StudyLayout.of(config).report.name
    return path


def _write_atomically(path: Path, text: str) -> None:
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ReportError(
            f"cannot write the report to {str(path)!r}: {str(blocker)!r} is a file, not a folder; pass --output with a writable file path"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise ReportError(
            f"cannot write the report to {str(path)!r}: {e.strerror}; pass --output with a writable file path"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report is for sharing
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ReportError(
            f"cannot write the report to {str(path)!r}: {e.strerror}; pass --output with a writable file path"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="hpsearch {{ version }}">
<title>hpsearch report: {{ study }}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px; padding: 1.5rem; color: #222; }
  h1 { font-size: 1.6rem; margin-bottom: .2rem; }
  h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
  .meta { color: #666; font-size: .9rem; }
  .cards { display: flex; flex-wrap: wrap; gap: 1rem; margin: 1rem 0; }
  .card { border: 1px solid #ddd; border-radius: 6px; padding: .7rem 1rem; min-width: 11rem; }
  .card b { display: block; font-size: 1.4rem; }
  table { border-collapse: collapse; font-size: .85rem; width: 100%; }
  th, td { border-bottom: 1px solid #eee; padding: .3rem .5rem; text-align: right; white-space: nowrap; }
  th:last-child, td:last-child, td.state, th.state { text-align: left; white-space: normal; }
  tr.best { background: #fff3f3; font-weight: 600; }
  .caption { color: #555; font-size: .9rem; margin: .3rem 0 .6rem; }
  .plot { min-height: 520px; }
</style>
</head>
<body>
<h1>hpsearch study <code>{{ study }}</code></h1>
<div class="meta">Objective: {{ objective }}, maximised · model {{ model }} · data {{ data }} · storage {{ storage }} · written {{ generated }} by hpsearch {{ version }}</div>
<div class="cards" id="summary">
  <div class="card">best trial<b>{% if best %}#{{ best.number }}: {{ "%.4f"|format(best.value) }}{% else %}none yet{% endif %}</b>{{ objective }}</div>
  <div class="card">recipe trial<b>{% if recipe and recipe.value is not none %}#{{ recipe.number }}: {{ "%.4f"|format(recipe.value) }}{% elif recipe %}#{{ recipe.number }}: {{ recipe.state }}{% else %}none{% endif %}</b>{{ comparison or "no comparison yet" }}</div>
  <div class="card">trials<b>{{ total }}</b>{{ counts.complete }} complete · {{ counts.pruned }} pruned · {{ counts.failed }} failed{% if counts.running %} · {{ counts.running }} running{% endif %}</div>
</div>
{% if best %}
<p>Best parameters: {% for name, value in best.params.items() %}<code>{{ name }}={{ value }}</code>{{ ", " if not loop.last }}{% endfor %}.</p>
{% endif %}
{% if seeds %}
<h2 id="confirmation">Seed confirmation ({{ "confirmed" if seeds.done else seeds.pending ~ " runs to go" }})</h2>
<table>
<thead><tr><th>trial</th><th>seeds</th><th>{{ objective }} mean ± std</th><th>min</th><th>max</th><th>test mean ± std</th><th>failures</th><th>runs (seed:score)</th><th>note</th></tr></thead>
<tbody>
{% for r in seeds.rows %}
<tr{% if r.winner %} class="best"{% endif %}><td>{{ r.trial }}</td><td>{{ r.seeds }}</td><td>{{ r.mean }}</td><td>{{ r.min }}</td><td>{{ r.max }}</td><td>{{ r.test }}</td><td>{{ r.failures }}</td><td>{{ r.runs }}</td><td>{{ r.note }}</td></tr>
{% endfor %}
</tbody>
</table>
{% for line in seeds.lines %}
<p>{{ line }}</p>
{% endfor %}
{% endif %}
{% for plot in plots %}
<h2 id="{{ plot.name }}">{{ plot.title }}</h2>
<div class="caption">{{ plot.caption }}</div>
<div class="plot">{{ plot.html|safe }}</div>
{% endfor %}
{% if "importances" in missing %}
<h2 id="importances">Parameter importances</h2>
<div class="caption">Not yet: importances need two complete trials whose parameters differ.</div>
{% endif %}
<h2 id="trials">Trials</h2>
<table>
<thead><tr><th>#</th><th class="state">state</th><th>{{ objective }}</th><th title="epochs the trial trained">epochs</th><th title="the epoch whose model and score the trial ships">shipped</th>{% for p in params %}<th title="{{ p.name }}">{{ p.label }}</th>{% endfor %}<th>time</th><th>note</th></tr></thead>
<tbody>
{% for r in rows %}
<tr{% if r.best %} class="best"{% endif %}><td>{{ r.number }}</td><td class="state">{{ r.state }}</td><td>{{ r.value }}</td><td>{{ r.trained }}</td><td>{{ r.shipped }}</td>{% for v in r.params %}<td>{{ v }}</td>{% endfor %}<td>{{ r.duration }}</td><td>{{ r.note }}</td></tr>
{% endfor %}
</tbody>
</table>
</body>
</html>
"""
