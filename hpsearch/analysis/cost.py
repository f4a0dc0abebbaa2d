"""What a search cost: the sum, on reading, of the cost each trial stored.

Each trial stores its own cost (:data:`hpsearch.schema.COST`, measured by
:mod:`hpsearch.training.cost`); no total is stored, so a total is always the sum of what is
there. :func:`total_cost` takes any trials: a search's, its confirmation runs' (the trials of
``<study>.confirm``), or both. It counts complete, pruned and failed trials, the interrupted
ones among them; a running trial has stored no cost yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpsearch import schema
from hpsearch.formatting import is_number

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# codecarbon's CPU modes that read the hardware; its others estimate from a TDP table.
READ_CPU_POWER = {"intel_rapl": "RAPL", "intel_power_gadget": "Intel Power Gadget", "windows_emi": "Windows EMI"}


@dataclass(frozen=True)
class CostTotal:
    """The summed cost of some trials."""

    runs: int  # trials that stored a cost
    unrecorded: int  # finished or failed trials that stored none (older studies; a worker that died)
    wall_seconds: float
    device_seconds: float
    measured: int = 0  # runs whose energy codecarbon measured
    energy_kwh: float | None = None  # over the measured runs; None where none was measured
    co2_g: float | None = None
    countries: list[str] = field(default_factory=list)  # the grids whose intensity turned kWh into CO2
    hardware: list[str] = field(default_factory=list)  # what codecarbon saw, one entry per kind of machine
    power: list[str] = field(default_factory=list)  # where power readings came from, in words
    versions: list[str] = field(default_factory=list)  # codecarbon's


def total_cost(trials: Iterable[FrozenTrial]) -> CostTotal | None:
    """The sum over ``trials``; None where none of them stored a cost (a study from before costs)."""
    counted = [t for t in trials if t.state in COUNTED]
    costs = [c for c in map(schema.cost, counted) if c is not None]
    if not costs:
        return None
    measured = [c for c in costs if is_number(c.get("energy_kwh")) and is_number(c.get("co2_g"))]
    trackers = [c.get("tracker") or {} for c in measured]
    return CostTotal(
        runs=len(costs),
        unrecorded=len(counted) - len(costs),
        wall_seconds=sum(_number(c.get("wall_seconds")) for c in costs),
        device_seconds=sum(_number(c.get("device_seconds")) for c in costs),
        measured=len(measured),
        energy_kwh=sum(c["energy_kwh"] for c in measured) if measured else None,
        co2_g=sum(c["co2_g"] for c in measured) if measured else None,
        countries=_distinct(t.get("country_name") or t.get("country_iso_code") for t in trackers),
        hardware=_distinct(hardware_text(c.get("hardware") or {}) for c in measured),
        power=_distinct(part for t in trackers for part in power_sources(t)),
        versions=_distinct(t.get("version") for t in trackers),
    )


def hardware_text(hardware: dict[str, Any]) -> str:
    """``1 x NVIDIA H100 80GB HBM3, Intel(R) Xeon(R) Platinum 8480+ (16 threads)``: what ran the trial."""
    cpu = hardware.get("cpu")
    threads = hardware.get("cpu_count")
    parts = [hardware.get("gpu"), f"{cpu} ({threads:g} threads)" if cpu and is_number(threads) else cpu]
    return ", ".join(str(p) for p in parts if p)


def power_sources(tracker: dict[str, Any]) -> list[str]:
    """Where codecarbon's power came from, in words: read from the hardware, or estimated."""
    mode = tracker.get("cpu_power")
    if mode in READ_CPU_POWER:
        cpu = f"CPU read from {READ_CPU_POWER[mode]}"
    elif mode:
        cpu = f"CPU estimated from {'its load and ' if mode == 'cpu_load' else ''}its TDP ({mode})"
    else:
        cpu = "CPU as codecarbon found it"
    gpu = ["GPU read from its power sensor"] if tracker.get("gpu_power") else []
    return [cpu, *gpu, "RAM estimated from its size"]


def _number(value: Any) -> float:
    return float(value) if is_number(value) else 0.0


def _distinct(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values if v))
