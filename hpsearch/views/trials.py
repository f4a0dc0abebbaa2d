"""The trials of a study as plain records: for the terminal table, ``--json`` and the card."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

EPOCHS_ATTR = "epochs"  # trial user attribute: the per-epoch rows every tool reads
STOPPED_EARLY_ATTR = "stopped_early"  # why a complete trial trained fewer epochs than planned

STATE_NAMES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


def recipe_trial(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The recipe trial: a finished one where the recipe ran again after an interruption."""
    recipes = [t for t in trials if t.user_attrs.get("recipe")]
    finished = [t for t in recipes if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    return (finished or recipes or [None])[0]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the highest value; the earliest wins a tie, as the kept model does."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    return max(done, key=lambda t: (t.value, -t.number))


def end_reason(trial: FrozenTrial) -> str | None:
    """Why a trial failed, was pruned or stopped early; None if it trained every epoch."""
    attrs = trial.user_attrs
    return attrs.get("fail_reason") or attrs.get("pruned_reason") or attrs.get(STOPPED_EARLY_ATTR)


def shipped_best_after_stop(trial: FrozenTrial) -> bool:
    """Whether a trial stopped early shipped its best epoch rather than the one it stopped at.

    The objective ships the best; trials stopped before it did shipped the epoch they stopped at.
    """
    rows = trial.user_attrs.get(EPOCHS_ATTR) or []
    shipped = trial.user_attrs.get("shipped_epoch")
    return bool(trial.user_attrs.get(STOPPED_EARLY_ATTR) and rows and shipped is not None and shipped != rows[-1].get("epoch"))


def trial_record(trial: FrozenTrial, best_number: int | None = None) -> dict[str, Any]:
    """One trial as JSON-ready data: state, value, where it stopped, params, rows, reasons."""
    rows = list(trial.user_attrs.get(EPOCHS_ATTR, []))
    duration = None
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        duration = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return {
        "number": trial.number,
        "state": STATE_NAMES.get(trial.state, trial.state.name.lower()),
        "value": trial.value,
        "epoch": rows[-1]["epoch"] if rows else None,
        "shipped_epoch": trial.user_attrs.get("shipped_epoch"),
        "params": dict(trial.params),
        # JSON object keys are strings: {"1": 0.61, "2": 0.70}, keyed by epoch
        "intermediate_values": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
        "duration_s": duration,
        "recipe": bool(trial.user_attrs.get("recipe", False)),
        "best": best_number is not None and trial.number == best_number,
        "reason": end_reason(trial),
        "datetime_start": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "datetime_complete": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
        EPOCHS_ATTR: rows,
    }


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    best = best_trial(study)
    number = best.number if best is not None else None
    return [trial_record(t, number) for t in study.get_trials(deepcopy=False)]


def records_json(records: list[dict[str, Any]]) -> str:
    """Strict JSON (what ``jq`` and browsers accept): a NaN or infinite metric becomes null."""
    return json.dumps(_finite(records), indent=2, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def trials_table(records: list[dict[str, Any]], objective: str = "f1") -> Any:
    """A ``rich`` table: one row per trial, the best marked ★ and the recipe trial marked R.

    The note column says why a trial was pruned or failed; a running trial's time is how
    long it has run so far.
    """
    from rich.table import Table

    names = sorted({k for r in records for k in r["params"]})
    table = Table(title=None, show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("state")
    table.add_column(objective, justify="right")
    table.add_column("epoch", justify="right")
    for name in names:
        table.add_column(_short_name(name), justify="right")
    table.add_column("time", justify="right")
    table.add_column("note")
    for r in records:
        mark = "★" if r["best"] else ("R" if r["recipe"] else "")
        marks = ("★ best" if r["best"] else "") + (" recipe" if r["recipe"] else "")
        state = r["state"]
        table.add_row(
            f"{r['number']}{mark and ' '}{mark}".strip(),
            state,
            "" if r["value"] is None else f"{r['value']:.4f}",
            "" if r["epoch"] is None else str(r["epoch"]),
            *[format_param(r["params"].get(n)) for n in names],
            _duration(r),
            (marks.strip() + ("; " if marks.strip() and r["reason"] else "") + (r["reason"] or "")).strip(),
        )
    return table


def _duration(record: dict[str, Any]) -> str:
    if record["duration_s"] is not None:
        return _human(record["duration_s"])
    if record["state"] == "running" and record["datetime_start"]:
        # Optuna stamps trials with the worker's local time; on one machine that is ours.
        start = datetime.datetime.fromisoformat(record["datetime_start"])
        return _human((datetime.datetime.now() - start).total_seconds()) + " so far"
    return ""


def _human(seconds: float) -> str:
    """``28.5s``, ``4m05s``, ``2h03m``: seconds under a minute, then two units."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _short_name(name: str) -> str:
    return {"per_device_train_batch_size": "batch", "learning_rate": "lr"}.get(name, name)


def format_param(value: Any) -> str:
    """A parameter value for tables and progress lines: 4 significant digits, nothing for None."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def count(n: float, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1: "1 complete trial", "0.5 standard errors"."""
    text = f"{n:g}" if isinstance(n, float) else str(n)
    return f"{text} {noun}" if n == 1 else f"{text} {noun}s"
