"""Racing seeds inside the search: which configuration runs which seed, and which one wins.

The rule is the intensification of SMAC (Hutter et al. 2011) and the racing of irace
(López-Ibáñez et al. 2016), on the seeds ``s1 .. sS`` (the recipe's seed and the next ones):

- the recipe runs all S seeds first; it is the first *incumbent*;
- a finished search trial whose first run scores at least the incumbent's mean minus one
  standard deviation over its seeds becomes a *challenger* (a first run below that bar is
  outside the incumbent's seed noise, and stays out);
- a challenger runs the incumbent's further seeds one at a time, in order; from its second
  seed on it drops out as soon as its mean over the seeds both have run is below the
  incumbent's mean over those same seeds;
- a challenger that reaches all S seeds with a higher mean becomes the incumbent (a tie
  keeps the incumbent).

First runs are judged one at a time, in the order they finished; while a challenger races,
the first runs that finished after it wait for its outcome, so every judgement is made
against the incumbent of its moment. :func:`replay` applies the rule to what storage holds;
it is a pure function of the runs' values and finishing order, so every worker, and a resume,
reaches the same decisions and asks for the same runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

RULE = (
    "a configuration whose first run scores at least the incumbent's mean minus one standard deviation "
    "over its seeds races it on the same seeds, one at a time, and drops out as soon as its mean over "
    "the shared seeds is below the incumbent's; one that reaches every seed with a higher mean takes over"
)

# How an entry's race ended, or that it goes on.
REFERENCE, RACING, DROPPED, TOOK_OVER = "reference", "racing", "dropped", "took over"


@dataclass(frozen=True)
class Entry:
    """One configuration in the race: the recipe (the reference) or a challenger."""

    trial: int  # the search trial whose parameters it is
    outcome: str  # REFERENCE, RACING, DROPPED or TOOK_OVER
    seeds_run: int  # seeds with a complete run, the first run included
    against: int | None = None  # the incumbent it raced
    threshold: float | None = None  # the bar its first run cleared: that incumbent's mean - std
    at_seed: int | None = None  # the seed after which it dropped out or took over


@dataclass(frozen=True)
class Race:
    """The race as the rule leaves it, given the runs storage holds."""

    seeds: tuple[int, ...]
    entries: tuple[Entry, ...] = ()  # the recipe first, then challengers in the order they entered
    incumbent: int | None = None  # None until the recipe has run every seed
    stayed_out: tuple[int, ...] = ()  # first runs below the bar they were judged against
    needed: tuple[tuple[int, int], ...] = ()  # (configuration, seed) runs to train now
    waiting: tuple[int, ...] = ()  # finished first runs not judged yet: an earlier race goes on

    @property
    def settled(self) -> bool:
        """Every finished first run is judged and no run is needed."""
        return not self.needed and not self.waiting

    def entry(self, trial: int) -> Entry | None:
        return next((e for e in self.entries if e.trial == trial), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any) -> Race | None:
        if not isinstance(value, dict):
            return None
        return cls(
            seeds=tuple(int(s) for s in value["seeds"]),
            entries=tuple(Entry(**e) for e in value["entries"]),
            incumbent=value["incumbent"],
            stayed_out=tuple(value["stayed_out"]),
            needed=tuple((int(n), int(s)) for n, s in value["needed"]),
            waiting=tuple(value["waiting"]),
        )


@dataclass
class _Scores:
    runs: Mapping[tuple[int, int], float]
    seeds: Sequence[int]

    def mean(self, trial: int, k: int) -> float:
        """The mean of ``trial``'s runs over the first ``k`` seeds."""
        return statistics.fmean(self.runs[(trial, s)] for s in self.seeds[:k])

    def bar(self, trial: int) -> float:
        values = [self.runs[(trial, s)] for s in self.seeds]
        return statistics.fmean(values) - statistics.stdev(values)


def replay(
    seeds: Sequence[int],
    recipe: int | None,
    firsts: Sequence[tuple[int, float]],
    runs: Mapping[tuple[int, int], float],
    *,
    recipe_running: bool = False,
) -> Race:
    """Apply the rule to what has run.

    Args:
        seeds: The race's seeds, at least two, the search trials' own seed first.
        recipe: The recipe's search trial (its first, where it ran more than once).
        firsts: ``(trial, value)`` of the other complete search trials, in the order they finished.
        runs: ``(configuration, seed) -> value`` of every complete run, first runs included.
        recipe_running: The recipe's search trial is queued or running: its first seed is
            coming. Otherwise a recipe without a score on the first seed (pruned) needs a run.
    """
    seeds = tuple(seeds)
    if recipe is None:
        return Race(seeds, waiting=tuple(n for n, _ in firsts))
    missing = [s for s in seeds if (recipe, s) not in runs]
    entries = [Entry(recipe, REFERENCE, len(seeds) - len(missing))]
    if missing:  # the recipe's seeds run first
        needed = tuple((recipe, s) for s in missing if not (recipe_running and s == seeds[0]))
        return Race(seeds, tuple(entries), needed=needed, waiting=tuple(n for n, _ in firsts))
    scores, incumbent, stayed_out = _Scores(runs, seeds), recipe, []
    for i, (trial, first) in enumerate(firsts):
        bar = scores.bar(incumbent)
        if first < bar:
            stayed_out.append(trial)
            continue
        entry = dict(trial=trial, against=incumbent, threshold=bar)
        for k in range(2, len(seeds) + 1):
            seed = seeds[k - 1]
            if (trial, seed) not in runs:
                entries.append(Entry(outcome=RACING, seeds_run=k - 1, **entry))
                waiting = tuple(n for n, _ in firsts[i + 1 :])
                return Race(seeds, tuple(entries), incumbent, tuple(stayed_out), ((trial, seed),), waiting)
            mine, theirs = scores.mean(trial, k), scores.mean(incumbent, k)
            if mine < theirs or (k == len(seeds) and mine <= theirs):
                entries.append(Entry(outcome=DROPPED, seeds_run=k, at_seed=seed, **entry))
                break
        else:
            entries.append(Entry(outcome=TOOK_OVER, seeds_run=len(seeds), at_seed=seeds[-1], **entry))
            incumbent = trial
    return Race(seeds, tuple(entries), incumbent, tuple(stayed_out))


def changes(before: Race | None, after: Race) -> list[tuple[str, Entry]]:
    """What happened between two replays, in order: ``("entered" | "dropped" | "took over" |
    "reference", entry)``; the recipe's entry is reported once it has every seed."""
    out = []
    old = {e.trial: e for e in before.entries} if before is not None else {}
    for entry in after.entries:
        was = old.get(entry.trial)
        if entry.outcome == REFERENCE:
            if after.incumbent is not None and (before is None or before.incumbent is None):
                out.append(("reference", entry))
            continue
        if was is None:
            out.append(("entered", entry))
        if entry.outcome in (DROPPED, TOOK_OVER) and (was is None or was.outcome != entry.outcome):
            out.append((entry.outcome, entry))
    return out
