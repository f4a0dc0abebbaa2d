"""A confirmation in the terminal and in ``trials --json``: per configuration, its seeds.

:func:`confirmation_table` is the table ``hpsearch confirm`` and ``hpsearch trials`` print
(one row per configuration: seeds, validation mean ± std, min, max, test mean ± std,
failures and every run's seed and score); :func:`attach` gives each search trial of
``trials --json`` its ``confirmation`` key; :func:`outcome_lines` says which configuration
won, whether it is the search's best trial, and how it compares with the recipe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpsearch import schema
from hpsearch.analysis.seeds import Confirmation
from hpsearch.events import RunInfo, RunListener
from hpsearch.formatting import format_params, spread_text

if TYPE_CHECKING:
    import optuna


def attach(records: list[dict[str, Any]], confirmation: Confirmation | None) -> list[dict[str, Any]]:
    """Each trial record with ``confirmation``: None, or its configuration's figures."""
    for record in records:
        stats = confirmation.of_trial(record["number"]) if confirmation is not None else None
        record["confirmation"] = (
            None
            if stats is None
            else stats.to_dict() | {"winner": confirmation.winner is stats, "confirmed": confirmation.done}
        )
    return records


def confirmation_table(confirmation: Confirmation) -> Any:
    """One row per configuration; the note marks the winner ★, the search's best and the recipe."""
    from rich import box
    from rich.table import Table

    has_test = any(c.test is not None for c in confirmation.configs)
    winner = confirmation.winner
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        title=f"seed confirmation ({'confirmed' if confirmation.done else f'{confirmation.pending} runs to go'})",
    )
    for name in (
        "trial",
        "seeds",
        f"{confirmation.objective} mean ± std",
        "min",
        "max",
        *(["test mean ± std"] if has_test else []),
        "failures",
        "runs (seed:score)",
        "note",
    ):
        table.add_column(name, justify="left" if name in ("runs (seed:score)", "note") else "right")
    for c in confirmation.configs:
        val = c.validation
        notes = [
            n
            for n, on in (
                ("★ winner", c is winner),
                ("search best", c.trial == confirmation.search_best),
                ("recipe", c.is_recipe),
            )
            if on
        ]
        runs = " ".join(
            f"{r.seed}:{r.value:.4f}{'!' if r.failure else ''}" if r.value is not None else f"{r.seed}:{r.state}"
            for r in c.runs
        )
        table.add_row(
            str(c.trial),
            f"{len(c.complete)}/{c.seeds_planned}",
            spread_text(val),
            "" if val is None else f"{val.min:.4f}",
            "" if val is None else f"{val.max:.4f}",
            *([spread_text(c.test)] if has_test else []),
            str(c.failures),
            runs,
            "; ".join(notes),
            style="bold" if c is winner else None,
        )
    return table


def outcome_lines(confirmation: Confirmation) -> list[str]:
    """The winner, whether the search's best trial is still best, and the winner against the recipe."""
    winner = confirmation.winner
    if not confirmation.done or winner is None:
        return [f"{confirmation.pending} planned runs are not complete; run the same command to finish them"]
    lines = [
        f"confirmed winner: trial {winner.trial}'s configuration ({format_params(winner.params)}), "
        f"{confirmation.objective} {spread_text(winner.validation)} over {len(winner.complete)} seeds"
    ]
    if winner.trial == confirmation.search_best:
        lines.append(f"it is the search's best trial too (trial {confirmation.search_best})")
    else:
        lines.append(
            f"it differs from the search's best trial (trial {confirmation.search_best}), whose lead came from one seed"
        )
    failures = [c for c in confirmation.configs if c.failures]
    if failures:
        lines.append(
            "failed runs (one class called, or no better than a constant predictor): "
            + ", ".join(f"trial {c.trial}: {c.failures} of {len(c.complete)}" for c in failures)
        )
    comparison = confirmation.comparison()
    if winner.is_recipe:
        lines.append("against the recipe: the recipe itself has the best mean")
    elif comparison is not None:
        judged = "within seed noise" if comparison.within_noise else "larger than the seed noise"
        p = "" if comparison.p_value is None else f", p = {comparison.p_value:.3f}"
        lines.append(
            f"against the recipe (trial {confirmation.recipe.trial}): "
            f"difference of means {comparison.difference:+.4f}, "
            f"95% interval {comparison.low:+.4f} to {comparison.high:+.4f} ({comparison.method}{p}): {judged}"
        )
    return lines


class SeedLines(RunListener):
    """Names each confirmation run's configuration and seed as it starts."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.active = False

    def run_start(self, run: RunInfo) -> None:
        self.active = run.kind == "confirm"

    def trial_start(self, trial: optuna.Trial, params: dict[str, Any]) -> None:
        if not self.active:
            return
        self.console.print(
            f"confirmation run {trial.number}: "
            f"trial {schema.confirms(trial)}'s configuration with seed {schema.run_seed(trial)}",
            markup=False,
        )


def rows(confirmation: Confirmation) -> list[dict[str, Any]]:
    """The table's rows as plain text cells, for the HTML report and the dashboard note."""
    winner = confirmation.winner
    out = []
    for c in confirmation.configs:
        val = c.validation
        notes = [
            n
            for n, on in (
                ("winner", c is winner),
                ("search best", c.trial == confirmation.search_best),
                ("recipe", c.is_recipe),
            )
            if on
        ]
        out.append(
            {
                "trial": c.trial,
                "seeds": f"{len(c.complete)}/{c.seeds_planned}",
                "mean": spread_text(val),
                "min": "" if val is None else f"{val.min:.4f}",
                "max": "" if val is None else f"{val.max:.4f}",
                "test": spread_text(c.test),
                "failures": str(c.failures),
                "runs": " ".join(
                    f"{r.seed}:{r.value:.4f}" if r.value is not None else f"{r.seed}:{r.state}" for r in c.runs
                ),
                "note": ", ".join(notes),
                "winner": c is winner,
            }
        )
    return out


def note_lines(confirmation: Confirmation | None) -> list[str]:
    """The dashboard note's "Seed confirmation" block (Markdown); none before a confirmation."""
    if confirmation is None:
        return []
    state = "confirmed" if confirmation.done else f"{confirmation.pending} runs to go"
    lines = [
        f"### Seed confirmation ({state})",
        "",
        f"| trial | seeds | {confirmation.objective} mean ± std | min | max "
        "| test mean ± std | failures | runs (seed:score) | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['trial']} | {r['seeds']} | {r['mean']} | {r['min']} | {r['max']} "
        f"| {r['test']} | {r['failures']} | {r['runs']} | {r['note']} |"
        for r in rows(confirmation)
    ]
    return [*lines, "", *(f"- {line}" for line in outcome_lines(confirmation)), ""]
