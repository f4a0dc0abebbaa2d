"""A confirmation in the terminal and in ``trials --json``: per configuration, its seeds.

:func:`confirmation_table` is the table ``hpsearch confirm`` and ``hpsearch trials`` print
(one row per configuration: seeds, validation mean ± std, min, max, test mean ± std,
failures and every run's seed and score); :func:`attach` gives each search trial of
``trials --json`` its ``confirmation`` key; :func:`outcome_lines` says which configuration
won, whether it is the search's best trial, and how it compares with the recipe.
"""

from __future__ import annotations

from typing import Any

from hpsearch.analysis.race import DROPPED, RACING, REFERENCE, RULE
from hpsearch.analysis.seeds import ConfigStats, Confirmation
from hpsearch.formatting import count, format_params, spread_text


def attach(records: list[dict[str, Any]], confirmation: Confirmation | None) -> list[dict[str, Any]]:
    """Each trial record with ``confirmation``: None, or its configuration's figures."""
    for record in records:
        stats = confirmation.of_trial(record["number"]) if confirmation is not None else None
        record["confirmation"] = (
            None
            if stats is None
            else stats.to_dict()
            | {
                "winner": confirmation.winner is stats,
                "confirmed": confirmation.done,
                "race": race_outcome(confirmation, stats.trial),
            }
        )
    return records


def title(confirmation: Confirmation) -> str:
    """``seed race (settled)``, ``seed confirmation (3 runs to go)``."""
    what = "seed race" if confirmation.race is not None else "seed confirmation"
    done = "settled" if confirmation.race is not None else "confirmed"
    return f"{what} ({done if confirmation.done else f'{confirmation.pending} runs to go'})"


def race_outcome(confirmation: Confirmation, trial: int) -> str | None:
    """Where a configuration stands in the race: ``incumbent``, ``dropped after seed 44``, ...; None outside one."""
    race = confirmation.race
    entry = race.entry(trial) if race is not None else None
    if entry is None:
        return None
    if trial == race.incumbent:
        return "incumbent" if entry.outcome == REFERENCE else f"took over from trial {entry.against}"
    if entry.outcome == DROPPED:
        return f"dropped after seed {entry.at_seed}"
    if entry.outcome == RACING:
        return f"racing trial {entry.against}"
    return "reference, beaten" if entry.outcome == REFERENCE else "took over, then beaten"


def notes(confirmation: Confirmation, c: ConfigStats, *, star: str = "") -> list[str]:
    """The note of a configuration's row: winner, search best, recipe, and where it stands in a race."""
    marks = ((f"{star}winner", c is confirmation.winner), ("search best", c.trial == confirmation.search_best))
    marks += (("recipe", c.is_recipe), (race_outcome(confirmation, c.trial), True))
    return [n for n, on in marks if on and n]


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
        title=title(confirmation),
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
            "; ".join(notes(confirmation, c, star="★ ")),
            style="bold" if c is winner else None,
        )
    return table


def outcome_lines(confirmation: Confirmation) -> list[str]:
    """The winner, whether the search's best trial is still best, and the winner against the recipe."""
    winner, race = confirmation.winner, confirmation.race
    if winner is None or (race is None and not confirmation.done):
        return [f"{confirmation.pending} planned runs are not complete; run the same command to finish them"]
    lines = [
        f"{'race' if race else 'confirmed'} winner: trial {winner.trial}'s configuration "
        f"({format_params(winner.params)}), {confirmation.objective} {spread_text(winner.validation)} "
        f"over {len(winner.complete)} seeds"
    ]
    if race is not None:
        lines.append(
            f"{count(len(race.entries) - 1, 'configuration')} raced the incumbent, "
            f"{len(race.stayed_out)} stayed outside its seed noise; the rule: {RULE}"
        )
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


def rows(confirmation: Confirmation) -> list[dict[str, Any]]:
    """The table's rows as plain text cells, for the HTML report and the dashboard note."""
    winner = confirmation.winner
    out = []
    for c in confirmation.configs:
        val = c.validation
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
                "note": ", ".join(notes(confirmation, c)),
                "winner": c is winner,
            }
        )
    return out


def note_lines(confirmation: Confirmation | None) -> list[str]:
    """The dashboard note's "Seed confirmation" block (Markdown); none before a confirmation."""
    if confirmation is None:
        return []
    text = title(confirmation)
    lines = [
        f"### {text[0].upper()}{text[1:]}",
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
