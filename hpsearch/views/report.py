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
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import optuna

from hpsearch import __version__, schema
from hpsearch.analysis.cost import CostTotal, total_cost
from hpsearch.config import SearchConfig
from hpsearch.errors import HpsearchError
from hpsearch.files import write_atomically
from hpsearch.formatting import format_param, human_energy, human_seconds, is_number, param_label
from hpsearch.layout import StudyLayout
from hpsearch.search.storage import redact
from hpsearch.search.study import load_study, open_confirmation
from hpsearch.views.confirmation import outcome_lines, rows
from hpsearch.views.confirmation import title as seeds_title
from hpsearch.views.plots import figures
from hpsearch.views.trials import trial_records

_TEMPLATE_NAME = "report.html.j2"
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
    "epochs": (
        "Every trial's validation objective after each epoch; "
        "pruned trials are dashed and end with ✕ where they stopped."
    ),
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
        title, caption = _TITLES.get(name, name), _CAPTIONS.get(name, "")
        plots.append({"name": name, "title": title, "caption": caption, "html": div})
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    seeds = None
    if confirmation is not None:
        seeds = {
            "title": seeds_title(confirmation),
            "done": confirmation.done,
            "pending": confirmation.pending,
            "rows": rows(confirmation),
            "lines": outcome_lines(confirmation),
        }
    summary = _summary(study)
    confirm_runs = list(confirmation.units.values()) if confirmation is not None else []
    summary["cost"] = _cost(total_cost([*study.get_trials(deepcopy=False), *confirm_runs]))
    return env.from_string(_template()).render(
        **summary, plots=plots, missing=[n for n in _TITLES if n not in figs], seeds=seeds
    )


def _template() -> str:
    """The page's Jinja2 template, ``hpsearch/views/templates/report.html.j2``."""
    return resources.files(__package__).joinpath("templates", _TEMPLATE_NAME).read_text(encoding="utf-8")


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
        "energy": any(is_number((r[schema.COST] or {}).get("energy_kwh")) for r in records),
        "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
    }


def _row(record: dict[str, Any], params: list[str]) -> dict[str, Any]:
    marks = " ".join(m for m, on in (("★ best", record["best"]), ("recipe", record[schema.RECIPE])) if on)
    shipped = record[schema.SHIPPED_EPOCH]
    energy = (record[schema.COST] or {}).get("energy_kwh")
    return {
        "number": record["number"],
        "state": record["state"],
        "value": "" if record["value"] is None else f"{record['value']:.4f}",
        "trained": "" if record["epoch"] is None else record["epoch"],
        "shipped": "" if shipped is None else shipped,
        "params": [format_param(record["params"].get(p)) for p in params],
        "duration": "" if record["duration_s"] is None else f"{record['duration_s']:.1f} s",
        "energy": human_energy(energy) if is_number(energy) else "",
        "note": "; ".join(x for x in (marks, record["reason"] or "") if x),
        "best": record["best"],
    }


def _cost(total: CostTotal | None) -> dict[str, str] | None:
    """The summary's cost card: CO2 and energy where codecarbon measured, else the time."""
    if total is None:
        return None
    runs = f"{total.runs} runs, {human_seconds(total.wall_seconds)}"
    if total.co2_g is None:
        return {"headline": human_seconds(total.wall_seconds), "detail": f"{total.runs} runs; energy not measured"}
    return {"headline": f"{total.co2_g:.3g} g CO2eq", "detail": f"{human_energy(total.energy_kwh)} · {runs}"}


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
            f"cannot write the report to {str(path)!r}: {str(blocker)!r} is a file, not a folder; "
            "pass --output with a writable file path"
        )
    try:
        write_atomically(path, text)  # permissions from the umask, as for any new file: a report is for sharing
    except OSError as e:
        raise ReportError(
            f"cannot write the report to {str(path)!r}: {e.strerror}; pass --output with a writable file path"
        ) from None
