"""The card's "Seed confirmation" section, once ``hpsearch confirm`` has run.

:func:`confirmation_facts` gives the template one row per configuration (seeds, validation
mean ± std, test mean ± std, failures), the winner by mean, whether it is the search's best
trial, the shipped run's seed and the winner against the recipe; :func:`with_seed_spread`
puts the mean ± std over seeds beside the shipped run's numbers in the summary. Before any
confirmation both leave the card as it was.
"""

from __future__ import annotations

from typing import Any

from hpsearch.analysis.race import RULE
from hpsearch.analysis.seeds import ConfigStats, Spread
from hpsearch.card.facts import CardFacts, metric_label
from hpsearch.card.markdown import markdown_table
from hpsearch.formatting import format_param, param_label, spread_text
from hpsearch.schema import METRIC_LABELS
from hpsearch.views.confirmation import notes


def confirmation_facts(facts: CardFacts) -> dict[str, Any] | None:
    """The section's variables; None before a confirmation has stored a plan."""
    confirmation = facts.confirmation
    if confirmation is None:
        return None
    winner = confirmation.winner
    comparison = confirmation.comparison()
    has_test = "test" in facts.data.sizes
    return {
        "seeds": list(confirmation.plan.seeds),
        "top": confirmation.plan.top,
        "pending": confirmation.pending,
        "table": configurations_table(confirmation.configs, winner, facts, has_test=has_test),
        "winner": None if winner is None else winner.trial,
        "winner_mean": None if winner is None else _spread_text(winner.validation),
        "search_best": confirmation.search_best,
        "winner_is_search_best": winner is not None and winner.trial == confirmation.search_best,
        "winner_is_recipe": winner is not None and winner.is_recipe,
        "recipe": None if confirmation.recipe is None else confirmation.recipe.trial,
        "comparison": None
        if comparison is None
        else {
            "difference": f"{comparison.difference:+.4f}",
            "low": f"{comparison.low:+.4f}",
            "high": f"{comparison.high:+.4f}",
            "p_value": None if comparison.p_value is None else f"{comparison.p_value:.3f}",
            "method": comparison.method,
            "within_noise": comparison.within_noise,
        },
        "shipped_seed": facts.shipped_seed,
        "objective_label": metric_label(facts.objective),
        "race": None
        if confirmation.race is None
        else {
            "rule": RULE,
            "raced": len(confirmation.race.entries) - 1,
            "stayed_out": len(confirmation.race.stayed_out),
            "judged": len(confirmation.race.entries) - 1 + len(confirmation.race.stayed_out),
        },
    }


def configurations_table(
    configs: list[ConfigStats], winner: ConfigStats | None, facts: CardFacts, *, has_test: bool
) -> str:
    label = metric_label(facts.objective)
    names = list(facts.config["space"]) or sorted({k for c in configs for k in c.params})
    header = [
        "Trial",
        "Seeds",
        f"Validation {label}",
        "Min",
        "Max",
        *([f"Test {label}"] if has_test else []),
        "Failures",
        *map(param_label, names),
        "Note",
    ]
    rows = []
    for c in configs:
        val = c.validation
        rows.append(
            [
                c.trial,
                f"{len(c.complete)} of {c.seeds_planned}",
                _spread_text(val),
                "–" if val is None else f"{val.min:.4f}",
                "–" if val is None else f"{val.max:.4f}",
                *([_spread_text(c.test)] if has_test else []),
                f"{c.failures} of {len(c.complete)}",
                *[format_param(c.params.get(n)) for n in names],
                ", ".join(notes(facts.confirmation, c)),
            ]
        )
    return markdown_table(header, rows)


def with_seed_spread(summary: list[tuple[str, str]], facts: CardFacts, split: str) -> list[tuple[str, str]]:
    """The summary lines with the winner's mean ± std over seeds beside each score, once a
    confirmation has shipped a run; unchanged otherwise."""
    confirmation = facts.confirmation
    if confirmation is None or facts.shipped_seed is None or confirmation.winner is None:
        return summary
    keys = {v: k for k, v in METRIC_LABELS.items()}
    out = []
    for label, value in summary:
        spread = confirmation.winner.metric_spread(split, keys[label]) if label in keys else None
        if spread is not None and spread.n > 1:
            value = f"{value} (mean {_spread_text(spread)} over {spread.n} seeds)"
        out.append((label, value))
    return out


def _spread_text(spread: Spread | None) -> str:
    return spread_text(spread, missing="–")
