"""The Markdown of the dashboard's notes: a summary of the study, and each trial's epochs.

:mod:`hpsearch.views.dashboard` writes them; this module only turns stored records into
text. Parameters are named as in the configuration (``learning_rate``), with the short
label the tables use (:func:`~hpsearch.views.trials.param_label`) beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch import schema
from hpsearch.bestmodel import Marker
from hpsearch.config import Param
from hpsearch.formatting import fixed4, format_param, param_label
from hpsearch.layout import StudyLayout
from hpsearch.search.storage import redact
from hpsearch.views.confirmation import note_lines

# The epoch table's columns after epoch and step: the losses, then the card's metrics.
_COLUMNS = ("train_loss", "eval_loss", *schema.METRICS)


def best_model_dir(study: optuna.Study, workdir: str | Path | None = None) -> Path:
    """The kept model's folder; ``workdir`` defaults to the one the study was run with."""
    root = workdir if workdir is not None else schema.read_settings(study).config["workdir"]
    return StudyLayout(Path(root), study.study_name).best_model


def study_note(
    study: optuna.Study, *, workdir: str | Path | None = None, card: list[str] | None = None, confirmation: Any = None
) -> str:
    """The study note: objective, model and data, best against recipe, counts, best model, recipe, space.

    Args:
        study: The study, opened on its storage.
        workdir: Where ``<study>/best-model`` is (default: the study's own).
        card: The names the kept model's card and plots have among the study's artifacts;
            None (or empty) while no card is written.
    """
    settings = schema.read_settings(study)
    config = settings.config
    objective = schema.objective_metric_name(settings.objective)
    trials = study.get_trials(deepcopy=False)
    best = schema.best_trial(trials)
    recipe = schema.recipe_trial(trials)
    sizes = ", ".join(f"{k} {v}" for k, v in settings.data.sizes.items())
    lines = [f"## hpsearch study `{study.study_name}`", ""]
    lines += [
        f"Objective: **{objective}**, maximised. Model: `{settings.base_model}`. Data: {settings.data.name} ({sizes}).",
        "",
    ]
    lines += ["### Result", "", *_result_lines(best, recipe, objective), "", _counts(trials), ""]
    lines += _best_model_lines(study, best_model_dir(study, workdir), card)
    if confirmation is not None:  # hpsearch.search.seeds.Confirmation, after `hpsearch confirm`
        lines += ["", *note_lines(confirmation)]
    lines += ["", "### Recipe", "", "| argument | value |", "|---|---|"]
    lines += [f"| `{k}` | {format_param(v)} |" for k, v in config["recipe"].items()]
    if config["space"]:
        lines += ["", "### Search space", "", "| parameter | range | recipe | best trial |", "|---|---|---|---|"]
        for name, spec in config["space"].items():
            label = "" if param_label(name) == name else f" ({param_label(name)})"
            lines.append(
                f"| `{name}`{label} | {Param(name, **spec).describe()} | {format_param(config['recipe'].get(name))} | "
                f"{format_param(best.params.get(name)) if best is not None else ''} |"
            )
    lines += [
        "",
        f"Storage: `{redact(config['storage'])}`. "
        f"Per-epoch metrics: each trial's note and its `{schema.EPOCHS}` attribute.",
    ]
    return "\n".join(lines) + "\n"


def epoch_note(trial: FrozenTrial) -> str | None:
    """A finished trial's note: its per-epoch validation metrics as a table, and how it ended."""
    epochs = schema.rows(trial)
    reason = schema.end_reason(trial)
    if not epochs and not reason:
        return None
    lines = [f"### Trial {trial.number}" + (" (the recipe)" if schema.is_recipe(trial) else ""), ""]
    if epochs:
        header = ["epoch", "step", *(schema.METRIC_LABELS.get(c, c.replace("_", " ")) for c in _COLUMNS)]
        lines += ["| " + " | ".join(header) + " |", "|---:" * len(header) + "|"]
        for row in epochs:
            lines.append(f"| {row['epoch']} | {row['step']} | " + " | ".join(fixed4(row[c]) for c in _COLUMNS) + " |")
        lines.append("")
    shipped = schema.shipped_epoch(trial)
    if shipped is not None:
        rule = schema.checkpoint_rule(trial)
        why = (
            ", its best: a trial stopped early ships its best epoch"
            if rule == "last" and schema.shipped_best_after_stop(trial)
            else ""
        )
        trained = f" of {epochs[-1]['epoch']} trained" if epochs else ""
        lines.append(f"Shipped epoch {shipped}{trained}{why} (checkpoint rule: {rule}).")
    if reason:
        text = reason.rstrip(".")
        lines.append(f"Failed: {text}." if trial.state == TrialState.FAIL else f"{text[:1].upper()}{text[1:]}.")
    return "\n".join(lines).rstrip() + "\n"


def _result_lines(best: FrozenTrial | None, recipe: FrozenTrial | None, objective: str) -> list[str]:
    if best is None:
        return ["No trial has completed yet."]
    lines = [f"| | trial | {objective} |", "|---|---:|---:|", f"| best | {best.number} | {best.value:.4f} |"]
    if recipe is None:
        return lines
    if recipe.state != TrialState.COMPLETE:
        return [*lines, "", f"The recipe trial ({recipe.number}) is {schema.state_name(recipe)}: no comparison yet."]
    gain = best.value - recipe.value
    relative = f" ({gain / recipe.value:+.1%})" if recipe.value else ""
    verdict = (
        "the recipe itself is the best trial"
        if best.number == recipe.number
        else f"the best trial beats the recipe by {gain:+.4f}{relative}"
    )
    return [*lines, f"| recipe | {recipe.number} | {recipe.value:.4f} |", "", f"{objective}: {verdict}."]


def _best_model_lines(study: optuna.Study, folder: Path, card: list[str] | None) -> list[str]:
    marker = Marker.read(folder)
    if marker is None:
        return ["No model has been kept yet."]
    if card:
        names = ", ".join(f"`{name}`" for name in card)
        where = f" Its card and plots are the study's artifacts {names}."
    else:
        where = f" Write its card with `hpsearch card best --study {study.study_name}`."
    return [f"Best model: `{folder}/` (trial {marker.trial}, epoch {marker.epoch}).{where}"]


def _counts(trials: list[FrozenTrial]) -> str:
    order = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)
    counts = {s: sum(t.state == s for t in trials) for s in order}
    # complete, pruned and failed always; running and waiting only when there are some
    parts = [f"{n} {schema.STATE_NAMES[s]}" for s, n in counts.items() if n or s in order[:3]]
    return f"Trials: {len(trials)} in all: " + ", ".join(parts) + "."
