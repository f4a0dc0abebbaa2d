"""The card's compute: what the whole search cost, beside this model's own run.

The search is every complete, pruned and failed trial of the study and of its confirmation
(``<study>.confirm``), summed on reading by :func:`hpsearch.analysis.cost.total_cost`.
:func:`cost_facts` gives the template a table and the facts of the lines under it;
:func:`co2_eq_emissions` gives the Hub metadata, for the search as a whole. Where no trial
stored a cost (a study made before hpsearch measured), both are None and the card reads as before.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

from hpsearch.analysis.cost import COUNTED, CostTotal, total_cost
from hpsearch.card.facts import CardFacts
from hpsearch.card.markdown import markdown_table
from hpsearch.formatting import count, format_param, human_seconds


def cost_facts(facts: CardFacts) -> dict[str, Any] | None:
    """``table``, ``emissions`` (whether codecarbon measured any run), ``runs``, ``measured``,
    ``unrecorded``, ``countries``, ``power``, ``versions``; None where no trial stored a cost."""
    search, confirm = _runs(facts)
    total = total_cost([*search, *confirm])
    if total is None:
        return None
    emissions = total.co2_g is not None
    header = ["Runs", "Wall time", "Device time", *(["Energy (kWh)", "CO2eq (g)"] if emissions else [])]
    searched = f"The search: {count(len(search), 'trial')}"
    searched += f" and {count(len(confirm), 'confirmation run')}" if confirm else ""
    rows = [
        _row(searched, total, emissions),
        _row(_this_run(facts), total_cost([facts.run]), emissions, of=total),
    ]
    return {
        "table": markdown_table(header, rows),
        "emissions": emissions,
        "runs": total.runs,
        "measured": total.measured,
        "unrecorded": total.unrecorded,
        "countries": " and ".join(total.countries),
        "power": "; ".join(total.power),
        "versions": ", ".join(total.versions),
    }


def co2_eq_emissions(facts: CardFacts) -> dict[str, Any] | None:
    """The Hub card's ``co2_eq_emissions`` for the whole search; None where codecarbon measured no run."""
    total = total_cost([t for runs in _runs(facts) for t in runs])
    if total is None or total.co2_g is None:
        return None
    value = {
        "emissions": total.co2_g,  # grams, as the Hub's card spec asks
        "source": "codecarbon",
        "training_type": "fine-tuning",
        "geographical_location": ", ".join(total.countries),
        "hardware_used": "; ".join(total.hardware),
    }
    return {k: v for k, v in value.items() if v != ""}


def _runs(facts: CardFacts) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """The search's trials and the confirmation's runs that count: complete, pruned or failed."""
    confirm = list(facts.confirmation.units.values()) if facts.confirmation is not None else []
    return [t for t in facts.trials if t.state in COUNTED], [t for t in confirm if t.state in COUNTED]


def _this_run(facts: CardFacts) -> str:
    if facts.shipped_run is not None:
        return f"This model: confirmation run {facts.shipped_run.number} (seed {facts.shipped_seed})"
    return f"{'This model' if facts.is_best else 'This card'}: trial {facts.trial.number}"


def _row(label: str, cost: CostTotal | None, emissions: bool, *, of: CostTotal | None = None) -> list[str]:
    if cost is None:
        return [label, "not recorded", "", *(["", ""] if emissions else [])]
    row = [label, human_seconds(cost.wall_seconds), human_seconds(cost.device_seconds)]
    if emissions:
        co2 = "" if cost.co2_g is None else format_param(cost.co2_g)
        if co2 and of is not None and of.co2_g:
            co2 += f" ({cost.co2_g / of.co2_g:.1%} of the search)"
        row += ["" if cost.energy_kwh is None else format_param(cost.energy_kwh), co2]
    return row
