"""The trials of a study as plain records: for the terminal table and ``hpsearch trials --json``.

Every view names a searched parameter the same way, by :func:`param_label` (``lr`` for
``learning_rate``), and says "epochs" for how many a trial trained and "shipped" for the
epoch whose model and score it ships.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch import schema
from hpsearch.formatting import finite_or_none, format_param, human_energy, human_seconds, is_number, param_label

# The table's note column shows at most this many characters of a reason; `--json` has it whole.
NOTE_WIDTH = 26


# --------------------------------------------------------------------------- records


def trial_record(trial: FrozenTrial, best_number: int | None = None) -> dict[str, Any]:
    """One trial as JSON-ready data: state, value, where it stopped, params, rows, reasons.

    ``epoch`` is the last epoch the trial trained, ``shipped_epoch`` the one it ships.
    """
    epochs = schema.rows(trial)
    duration = None
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        duration = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return {
        "number": trial.number,
        "state": schema.state_name(trial),
        "value": trial.value,
        "epoch": epochs[-1]["epoch"] if epochs else None,
        # Keys that mirror a stored attribute are spelled as storage spells them.
        schema.SHIPPED_EPOCH: schema.shipped_epoch(trial),
        "params": dict(trial.params),
        # JSON object keys are strings: {"1": 0.61, "2": 0.70}, keyed by epoch
        "intermediate_values": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
        "duration_s": duration,
        schema.RECIPE: schema.is_recipe(trial),
        "best": best_number is not None and trial.number == best_number,
        "reason": schema.end_reason(trial),
        # What trained it: {"name": "NVIDIA H200", "peak_memory_mib": 10240.5}; the peak is
        # null on a CPU. The precision is in training_args.
        schema.DEVICE: schema.device(trial),
        # What it cost: wall and device seconds, and energy_kwh and co2_g where codecarbon measured
        # (docs/schema.md); null for a trial that stored none.
        schema.COST: schema.cost(trial),
        schema.TRAINING_ARGS: schema.training_args(trial),
        "datetime_start": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "datetime_complete": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
        schema.EPOCHS: epochs,
    }


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    trials = study.get_trials(deepcopy=False)
    best = schema.best_trial(trials)
    number = best.number if best is not None else None
    return [trial_record(t, number) for t in trials]


def records_json(records: list[dict[str, Any]]) -> str:
    """Strict JSON (what ``jq`` and browsers accept): a NaN or infinite metric becomes null."""
    return json.dumps(finite_or_none(records), indent=2, allow_nan=False)


# --------------------------------------------------------------------------- table


def trials_table(records: list[dict[str, Any]], objective: str) -> Any:
    """A ``rich`` table: one row per trial; the note marks the best ★ and the recipe trial.

    ``epochs`` is how many epochs a trial trained and ``shipped`` the epoch it ships. The
    note gives a failed, pruned or stopped trial's reason in short (``pruned at epoch 1``);
    ``trials --json`` has it whole. A running trial's time is how long it has run so far.
    ``energy``, shown where codecarbon measured any trial, is what the trial used (docs/card.md).

    Args:
        records: :func:`trial_records`.
        objective: The objective's name (``f1``), read from the study's settings.
    """
    from rich import box
    from rich.table import Table

    names = list(dict.fromkeys(k for r in records for k in r["params"]))
    # No outer frame or column rules: with the default space the table fits 120 columns.
    energy = any(is_number(_energy(r)) for r in records)  # a column only where codecarbon measured
    # With an energy column, two spaces between columns instead of three, so the note keeps
    # its width ("recipe; pruned at epoch 1") and the table still fits 120 columns.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=energy)
    table.add_column("#", justify="right")
    table.add_column("state")
    table.add_column(objective, justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("shipped", justify="right")
    for name in names:
        table.add_column(param_label(name), justify="right")
    table.add_column("time", justify="right")
    if energy:
        table.add_column("energy", justify="right")
    table.add_column("note (★ best)", max_width=NOTE_WIDTH, no_wrap=True, overflow="ellipsis")
    for r in records:
        table.add_row(
            str(r["number"]),
            r["state"],
            "" if r["value"] is None else f"{r['value']:.4f}",
            "" if r["epoch"] is None else str(r["epoch"]),
            "" if r[schema.SHIPPED_EPOCH] is None else str(r[schema.SHIPPED_EPOCH]),
            *[format_param(r["params"].get(n)) for n in names],
            _duration(r),
            *([human_energy(_energy(r)) if is_number(_energy(r)) else ""] if energy else []),
            table_note(r),
            style="bold" if r["best"] else None,
        )
    return table


def table_note(record: dict[str, Any]) -> str:
    """``★ recipe; stopped early``, ``pruned at epoch 1``, ``failed: out of memory``: marks, then a short reason."""
    marks = " ".join(mark for mark, on in (("★", record["best"]), ("recipe", record[schema.RECIPE])) if on)
    reason = short_reason(record["state"], record["reason"])
    return "; ".join(part for part in (marks, reason) if part)


def short_reason(state: str, reason: str | None) -> str:
    """The head of a stored reason: what ended the trial, not the numbers behind it."""
    if not reason:
        return ""
    if state == schema.STATE_NAMES[TrialState.PRUNED]:
        return _clip(reason.split(":", 1)[0])  # "pruned at epoch 1: roc_auc 0.745 < ..."
    if state == schema.STATE_NAMES[TrialState.COMPLETE]:
        return "stopped early"  # the only reason a complete trial carries
    # "out of memory: CUDA ...", "RuntimeError: ...", "worker host:12 died ...": up to the first clause
    head = re.split(r": |; |\. | \(", reason, maxsplit=1)[0]
    return _clip(f"{state}: {head}")


def _clip(text: str, width: int = NOTE_WIDTH) -> str:
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" :;,") + "…"


def _energy(record: dict[str, Any]) -> float | None:
    return (record.get(schema.COST) or {}).get("energy_kwh")


def _duration(record: dict[str, Any]) -> str:
    if record["duration_s"] is not None:
        return human_seconds(record["duration_s"])
    if record["state"] == schema.STATE_NAMES[TrialState.RUNNING] and record["datetime_start"]:
        # Optuna stamps trials with the worker's local time; on one machine that is ours.
        start = datetime.datetime.fromisoformat(record["datetime_start"])
        return human_seconds((datetime.datetime.now() - start).total_seconds())
    return ""
