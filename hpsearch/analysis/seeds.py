"""Seed statistics of a confirmation: per configuration, the spread of its runs over seeds.

A configuration is a search trial's parameters; its runs are the original trial (the run of
its own seed) and the confirmation runs of ``hpsearch confirm`` (:mod:`hpsearch.search.confirm`).
:func:`read_confirmation` gathers them from the two studies into :class:`Confirmation`; the rest are
plain functions on :class:`SeedRun` records, so the rules are tested without training:

- a run *fails* by :func:`hpsearch.analysis.scores.failure`;
- the *winner* has the highest mean validation objective; a tie goes to the lower standard
  deviation, then to the earlier trial;
- the winner's advantage over the recipe is judged by Welch's t-test on the two sets of
  seed scores, with the 95% interval of the difference of means.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch import schema
from hpsearch.analysis.race import Race
from hpsearch.analysis.scores import failure
from hpsearch.formatting import is_number
from hpsearch.schema import METRICS

CONFIDENCE = 0.95


@dataclass(frozen=True)
class SeedRun:
    """One run of a configuration: its original search trial, or a confirmation run."""

    seed: int
    trial: int  # the search trial's number, or the run's number in "<study>.confirm"
    original: bool  # the search trial itself
    state: str
    value: float | None  # validation objective of the shipped epoch; None unless complete
    test: float | None = None  # the shipped model's objective on the test split
    failure: str | None = None  # why the run counts as failed (single class, baseline)
    validation: dict[str, float] = field(default_factory=dict)  # the shipped epoch's scores
    test_scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # A confirmation run is numbered in "<study>.confirm", the original in the search study.
        where = "trial" if self.original else "confirm_trial"
        return {
            "seed": self.seed,
            where: self.trial,
            "original": self.original,
            "state": self.state,
            "value": self.value,
            "test": self.test,
            "failure": self.failure,
        }


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (None for one run), min and max of some scores."""

    n: int
    mean: float
    std: float | None
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        values = [float(v) for v in values if is_number(v)]
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(len(values), statistics.fmean(values), std, min(values), max(values))


@dataclass(frozen=True)
class ConfigStats:
    """A configuration's runs over seeds and their spread."""

    trial: int  # the search trial whose parameters it is
    params: dict[str, Any]
    is_recipe: bool
    runs: list[SeedRun]
    seeds_planned: int

    @property
    def complete(self) -> list[SeedRun]:
        return [r for r in self.runs if r.value is not None]

    @property
    def validation(self) -> Spread | None:
        return Spread.of([r.value for r in self.complete])

    @property
    def test(self) -> Spread | None:
        return Spread.of([r.test for r in self.complete if r.test is not None])

    @property
    def failures(self) -> int:
        return sum(r.failure is not None for r in self.complete)

    def metric_spread(self, split: str, key: str) -> Spread | None:
        """The spread of any metric of the shipped epochs (``validation``) or test scores."""
        return Spread.of(
            [(r.validation if split == "validation" else r.test_scores).get(key, math.nan) for r in self.complete]
        )

    def best_run(self) -> SeedRun | None:
        """The run with the best validation score; the lower seed on a tie."""
        done = self.complete
        return max(done, key=lambda r: (r.value, -r.seed)) if done else None

    def to_dict(self) -> dict[str, Any]:
        """``hpsearch trials --json``'s ``confirmation`` key."""
        val, test = self.validation, self.test
        out: dict[str, Any] = {"seeds": len(self.complete), "seeds_planned": self.seeds_planned}
        out["mean"], out["std"], out["min"], out["max"] = (
            (val.mean, val.std, val.min, val.max) if val else (None, None, None, None)
        )
        if test is not None:
            out["test_mean"], out["test_std"], out["test_seeds"] = test.mean, test.std, test.n
        out["failures"] = self.failures
        out["runs"] = [r.to_dict() for r in self.runs]
        return out


@dataclass(frozen=True)
class Comparison:
    """The winner against the recipe: difference of mean validation scores and its interval."""

    difference: float
    low: float
    high: float
    p_value: float | None
    method: str

    @property
    def within_noise(self) -> bool:
        return self.low <= 0.0


@dataclass(frozen=True)
class Confirmation:
    """What storage holds of a study's confirmation, and what follows from it."""

    plan: schema.ConfirmPlan
    configs: list[ConfigStats]
    objective: str
    search_best: int | None  # the search's best trial
    pending: int  # planned runs not yet complete
    units: dict[int, FrozenTrial] = field(default_factory=dict, repr=False)  # "<study>.confirm" trials by number
    # A race (`run --seeds S`) rather than a confirmation: its winner is the last incumbent.
    race: Race | None = None

    @property
    def done(self) -> bool:
        return self.pending == 0

    @property
    def winner(self) -> ConfigStats | None:
        if self.race is not None:
            return None if self.race.incumbent is None else self.of_trial(self.race.incumbent)
        return pick_winner(self.configs)

    @property
    def recipe(self) -> ConfigStats | None:
        return next((c for c in self.configs if c.is_recipe), None)

    def comparison(self) -> Comparison | None:
        winner, recipe = self.winner, self.recipe
        if winner is None or recipe is None or winner is recipe:
            return None
        return compare(winner, recipe)

    def of_trial(self, number: int) -> ConfigStats | None:
        return next((c for c in self.configs if c.trial == number), None)


# --------------------------------------------------------------------------- rules


def pick_winner(configs: Sequence[ConfigStats]) -> ConfigStats | None:
    """The highest mean validation score; ties go to the lower standard deviation, then the earlier trial."""
    scored = [c for c in configs if c.validation is not None]
    if not scored:
        return None
    return min(scored, key=lambda c: (-c.validation.mean, c.validation.std or 0.0, c.trial))


def compare(winner: ConfigStats, recipe: ConfigStats, confidence: float = CONFIDENCE) -> Comparison | None:
    """Welch's t-test of the winner's seed scores against the recipe's, with the interval of
    the difference of means; None with fewer than two scores on a side."""
    a = [r.value for r in winner.complete]
    b = [r.value for r in recipe.complete]
    if len(a) < 2 or len(b) < 2:
        return None
    difference = statistics.fmean(a) - statistics.fmean(b)
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:  # no spread: no noise to test against
        return Comparison(difference, difference, difference, None, "no spread between seeds")
    from scipy.stats import ttest_ind  # scipy only when there is something to test

    result = ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(confidence)
    return Comparison(difference, float(interval.low), float(interval.high), float(result.pvalue), "Welch's t-test")


# --------------------------------------------------------------------------- storage


def seeds_for(base: int, count: int) -> list[int]:
    """The seeds of a confirmation: the recipe's seed and the next ones (42, 43, 44, ...)."""
    return [base + i for i in range(count)]


def plan_configurations(trials: Sequence[FrozenTrial], top: int) -> tuple[list[int], int | None]:
    """The ``top`` complete trials by validation objective (earlier first on a tie), and the recipe trial."""
    done = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: (-t.value, t.number),
    )
    chosen = [t.number for t in done[:top]]
    recipe = schema.recipe_trial(trials)
    if recipe is not None and recipe.number not in chosen:
        chosen.append(recipe.number)
    return chosen, None if recipe is None else recipe.number


def original_seed(trial: FrozenTrial, default: int) -> int:
    return int(schema.training_args(trial).get("seed", default))


def seed_run(
    trial: FrozenTrial, *, seed: int, original: bool, objective: str, counts: Sequence[int], average: str
) -> SeedRun:
    done = trial.state == TrialState.COMPLETE and trial.value is not None
    row = schema.shipped_row(trial) if done else None
    test = schema.test_metrics(trial) or {}
    return SeedRun(
        seed=seed,
        trial=trial.number,
        original=original,
        state=schema.state_name(trial),
        value=float(trial.value) if done else None,
        test=float(test[objective]) if done and is_number(test.get(objective)) else None,
        failure=failure(row, counts, average) if done else None,
        validation={k: float(row[k]) for k in METRICS if row and is_number(row.get(k))},
        test_scores={k: float(v) for k, v in test.items() if is_number(v)} if done else {},
    )


def _run_reader(search: optuna.Study) -> tuple[str, Callable[..., SeedRun]]:
    """The study's objective, and :func:`seed_run` with the study's objective and validation counts."""
    settings = schema.read_settings(search)
    counts, average = settings.data.class_counts["validation"], settings.data.average
    return settings.objective, functools.partial(seed_run, objective=settings.objective, counts=counts, average=average)


def read_confirmation(search: optuna.Study, confirm: optuna.Study | None) -> Confirmation | None:
    """The confirmation of ``search`` stored in ``confirm`` (``<study>.confirm``), or None before any."""
    if confirm is None:
        return None
    plan = schema.read_plan(confirm)
    if plan is None:
        return None
    objective, run_of = _run_reader(search)
    trials = search.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    units = confirm.get_trials(deepcopy=False)
    base = plan.seeds[0]
    configs, pending = [], 0
    for number in plan.configurations:
        trial = by_number.get(number)
        if trial is None:
            continue
        runs = []
        own = original_seed(trial, base)
        if own in plan.seeds and trial.state == TrialState.COMPLETE:
            runs.append(run_of(trial, seed=own, original=True))
        for seed in plan.seeds:
            if any(r.seed == seed for r in runs):
                continue
            mine = [u for u in units if schema.confirms(u) == number and schema.run_seed(u) == seed]
            done = next((u for u in mine if u.state == TrialState.COMPLETE), None)
            if done is None:
                pending += 1
            shown = done or (mine[-1] if mine else None)
            if shown is not None:
                runs.append(run_of(shown, seed=seed, original=False))
        runs.sort(key=lambda r: r.seed)
        configs.append(
            ConfigStats(
                trial=number,
                params=dict(trial.params),
                is_recipe=number == plan.recipe,
                runs=runs,
                seeds_planned=len(plan.seeds),
            )
        )
    best = schema.best_trial(trials)
    return Confirmation(
        plan=plan,
        configs=configs,
        objective=objective,
        search_best=None if best is None else best.number,
        pending=pending,
        units={u.number: u for u in units},
    )


def read_race(search: optuna.Study, runs: optuna.Study | None) -> Confirmation | None:
    """The race of a search run with ``--seeds S`` (stored on ``<study>.confirm``), as a
    :class:`Confirmation` of the configurations that raced; None for a study that did not race."""
    race = Race.from_dict(schema.read_race(runs)) if runs is not None else None
    if race is None:
        return None
    objective, run_of = _run_reader(search)
    trials = search.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    units = runs.get_trials(deepcopy=False)
    done = {(schema.confirms(u), schema.run_seed(u)): u for u in units if u.state == TrialState.COMPLETE}
    configs, recipe = [], race.entries[0].trial if race.entries else None
    for entry in race.entries:
        trial = by_number[entry.trial]
        if entry.trial == recipe:  # the recipe's first run is its complete trial, where it ran again
            trial = schema.recipe_trial(trials) or trial
        found = [(trial, True, race.seeds[0])] if trial.state == TrialState.COMPLETE else []
        for seed in race.seeds[1 if found else 0 :]:
            if (entry.trial, seed) in done:
                found.append((done[(entry.trial, seed)], False, seed))
        run_list = [run_of(u, seed=seed, original=original) for u, original, seed in found]
        configs.append(ConfigStats(entry.trial, dict(trial.params), entry.trial == recipe, run_list, len(race.seeds)))
    plan = schema.ConfirmPlan(
        top=0, seeds=list(race.seeds), configurations=[e.trial for e in race.entries], recipe=recipe
    )
    best = schema.best_trial(trials)
    return Confirmation(
        plan=plan,
        configs=configs,
        objective=objective,
        search_best=None if best is None else best.number,
        pending=len(race.needed),
        units={u.number: u for u in units},
        race=race,
    )
