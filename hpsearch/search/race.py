"""The race (``hpsearch run --seeds S``): the search's worker loop hands out seed runs too.

The rule is in :mod:`hpsearch.analysis.race`. Here a :class:`RaceSource` gives the worker
loop (:func:`hpsearch.search.loop.work`) its units, one at a time, under the search study's
lock: the recipe's search trial first; then a queued seed run; then a new search trial while
the study needs one; otherwise it waits for other workers' runs, or ends once the study holds
its trials and every finished first run is judged. Each time it replays the rule on what
storage holds, enqueues the seed runs the rule asks for (once: a run complete, running or
queued is not enqueued again; a failed one is), stores the race on the sibling study
``<study>.confirm`` (``hpsearch_race``), and tells the listeners when a challenger enters,
drops out or takes over.

Seed runs are trials of ``<study>.confirm`` with the configuration they repeat and their
seed (:func:`hpsearch.schema.confirm_attrs`), trained as confirmation runs are (every
epoch, no pruner, scored on the test split), so ``hpsearch confirm`` later reuses them. The
search study and its sampler see only the first runs.

A seed run is not pruned per epoch against the incumbent's run of the same seed: that would
judge it on one seed, which the race is there to avoid, and a pruned run has no score to
average. Only the run of the last seed keeps its model, under ``confirm/trial-<N>/``; the
incumbent's is shipped to ``best-model/`` when the loop ends. That seed is fixed before any
score is seen, so shipping it selects nothing more on the validation split.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from hpsearch import schema
from hpsearch.analysis.race import RACING, Race, changes, replay
from hpsearch.analysis.seeds import read_race, seeds_for
from hpsearch.bestmodel import BestModelStore, Marker
from hpsearch.events import RunListener
from hpsearch.layout import StudyLayout
from hpsearch.search.confirm import SeedRuns, create_or_join
from hpsearch.search.loop import POLL_SECONDS, Unit
from hpsearch.search.setup import Prepared
from hpsearch.search.study import requeue_lost_recipe
from hpsearch.search.workers import fail_dead_trials, worker_id

_OPEN = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


class RaceSource:
    """The race's units for :func:`hpsearch.search.loop.work`; :meth:`ship` when it returns."""

    def __init__(
        self,
        prepared: Prepared,
        search: optuna.Study,
        objective: Any,
        *,
        storage: optuna.storages.BaseStorage,
        lock: Callable[[], Any],
        listener: RunListener,
        poll: float = POLL_SECONDS,
    ) -> None:
        config = prepared.config
        self.config, self.search, self.objective = config, search, objective
        self.storage, self.lock, self.listener, self.poll = storage, lock, listener, poll
        self.recipe = prepared.recipe
        self.seeds = seeds_for(config.recipe.seed, config.seeds)
        self.runs = create_or_join(storage, schema.confirm_study_name(search.study_name), config.objective)
        self.seed_runs = SeedRuns(config, prepared, listener, self.runs.study_name, keep_seed=self.seeds[-1])
        self.me = worker_id()
        self.race: Race | None = None
        self._settled = False

    def next(self, deadline: float | None) -> Unit | None:
        announced = False
        while deadline is None or time.monotonic() < deadline:
            with self.lock():
                unit = self._take()
            if unit is not None or self._settled:
                return unit
            if not announced:
                self.listener.note("waiting for runs in other workers that the race needs (Ctrl-C stops waiting)")
                announced = True
            time.sleep(self.poll)
        return None

    def done(self) -> bool:
        return self._settled

    def _take(self) -> Unit | None:
        """Under the lock: the next unit, or None (then :attr:`_settled` says whether all is done)."""
        fail_dead_trials(self.search, storage=self.storage)
        fail_dead_trials(self.runs, storage=self.storage)
        requeue_lost_recipe(self.search, self.recipe)  # a failed recipe runs again, first
        trials = self.search.get_trials(deepcopy=False)
        units = self.runs.get_trials(deepcopy=False)
        race = self._replay(trials, units)
        self._enqueue(race, trials, units)
        states = [t.state for t in trials]
        finished, running = sum(s in schema.FINISHED for s in states), states.count(TrialState.RUNNING)
        wanted = finished + running < self.config.trials
        if wanted and TrialState.WAITING in states:  # the recipe first
            return self._ask_search()
        if any(u.state == TrialState.WAITING for u in self.runs.get_trials(deepcopy=False)):
            trial = self.runs.ask()
            schema.claim(trial, self.me)
            return Unit(self.runs, trial, self.seed_runs)
        if wanted:
            return self._ask_search()
        busy = running or any(u.state == TrialState.RUNNING for u in units)
        self._settled = finished >= self.config.trials and race.settled and not busy
        return None

    def _ask_search(self) -> Unit:
        trial = self.search.ask()
        schema.claim(trial, self.me)
        return Unit(self.search, trial, self.objective)

    def _replay(self, trials: list[optuna.trial.FrozenTrial], units: list[optuna.trial.FrozenTrial]) -> Race:
        # The recipe is one configuration however often it ran (an interrupted trial 0 runs
        # again as a new trial): its seed runs are keyed by its first trial's number.
        recipes = [t for t in trials if schema.is_recipe(t)]
        recipe = recipes[0].number if recipes else None
        done = next((t for t in recipes if _complete(t)), None)
        runs = {(t.number, self.seeds[0]): float(t.value) for t in trials if _complete(t) and not schema.is_recipe(t)}
        if done is not None:
            runs[(recipe, self.seeds[0])] = float(done.value)
        runs |= {(schema.confirms(u), schema.run_seed(u)): float(u.value) for u in units if _complete(u)}
        firsts = sorted(
            (t for t in trials if _complete(t) and not schema.is_recipe(t)),
            key=lambda t: (t.datetime_complete, t.number),
        )
        race = replay(
            self.seeds,
            recipe,
            [(t.number, float(t.value)) for t in firsts],
            runs,
            # Only a pruned recipe has no score of its own seed to come: a failed one is queued again.
            recipe_running=done is None and not any(t.state == TrialState.PRUNED for t in recipes),
        )
        stored = schema.read_race(self.runs)
        if stored != race.to_dict():
            schema.write_race(self.runs, race.to_dict())
        before = self.race if self.race is not None else Race.from_dict(stored)
        for event, entry in changes(before, race):
            self.listener.note(_line(event, entry, race, runs))
        self.race = race
        return race

    def _enqueue(
        self, race: Race, trials: list[optuna.trial.FrozenTrial], units: list[optuna.trial.FrozenTrial]
    ) -> None:
        have = {(schema.confirms(u), schema.run_seed(u)) for u in units if u.state in _OPEN}
        # A queued trial's parameters are not in its params yet: the recipe's come from the recipe.
        params = {t.number: dict(t.params) for t in trials if t.state in schema.FINISHED}
        params |= {t.number: dict(self.recipe) for t in trials if schema.is_recipe(t)}
        for number, seed in race.needed:
            if (number, seed) not in have:
                self.runs.enqueue_trial(params[number], user_attrs=schema.confirm_attrs(number, seed))

    def ship(self) -> tuple[int | None, str | None]:
        """Put the incumbent's run of the last seed in ``best-model/``; (its seed, None) or (None, why not)."""
        race = read_race(self.search, self.runs)
        winner = race.winner if race is not None else None
        if winner is None:
            return None, "the recipe has not run all its seeds yet"
        layout, seed = StudyLayout.of(self.config), self.seeds[-1]
        kept = BestModelStore(layout.confirm_root(winner.trial))
        kept.recover()
        marker = kept.marker()
        run = next((r for r in winner.runs if r.seed == seed and not r.original), None)
        if run is None or marker is None or marker.trial != run.trial:
            return None, f"no saved model of trial {winner.trial}'s run with seed {seed}"
        shipped = Marker(
            trial=winner.trial,
            value=marker.value,
            epoch=marker.epoch,
            objective=marker.objective,
            confirmed=True,
            seed=seed,
        )
        best = BestModelStore(layout.root)
        best.recover()
        best.install(lambda current: None if current == shipped else (shipped, kept.folder))
        return seed, None


def _complete(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and trial.value is not None


def _f(value: float) -> str:
    return f"{value:.4f}"


def _line(event: str, entry: Any, race: Race, runs: dict[tuple[int, int], float]) -> str:
    """The line a listener gets when the race changes."""
    seeds = race.seeds

    def mean(trial: int, k: int) -> str:
        return _f(statistics.fmean(runs[(trial, s)] for s in seeds[:k]))

    def spread(trial: int) -> str:
        values = [runs[(trial, s)] for s in seeds]
        return f"{_f(statistics.fmean(values))} ± {_f(statistics.stdev(values))}"

    name = "the recipe" if event == "reference" else f"trial {entry.trial}"
    if event == "reference":
        return f"race: {name} (trial {entry.trial}) over seeds {seeds[0]}..{seeds[-1]}: {spread(entry.trial)}"
    if event == "entered":
        following = "" if entry.outcome != RACING else f"; it runs seed {race.needed[0][1]} next"
        return (
            f"race: {name} enters: its first run {_f(runs[(entry.trial, seeds[0])])} is within trial "
            f"{entry.against}'s seed noise (at least {_f(entry.threshold)}, mean - std){following}"
        )
    k = entry.seeds_run
    if event == "dropped":
        return (
            f"race: {name} drops out after seed {entry.at_seed}: mean {mean(entry.trial, k)} over {k} seeds, "
            f"trial {entry.against} {mean(entry.against, k)} on the same seeds"
        )
    return (
        f"race: {name} takes over from trial {entry.against}: {spread(entry.trial)} over {k} seeds, "
        f"against {spread(entry.against)}"
    )
