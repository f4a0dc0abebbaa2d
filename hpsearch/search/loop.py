"""The worker loop: take a unit of work, train it, tell Optuna, decide whether to go on.

:func:`work` takes units from a source: a :class:`StudySource` asks for a new trial of one
study under the study lock (:func:`next_trial`, only while the total needs one); the race
(:mod:`hpsearch.search.race`) also hands out seed runs, and the confirmation
(:mod:`hpsearch.search.confirm`) its planned runs. Ctrl-C or SIGTERM records the running
trial as failed ("interrupted"); the same command resumes.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from hpsearch import schema
from hpsearch.config import SearchConfig
from hpsearch.errors import SearchStopped
from hpsearch.events import RunListener
from hpsearch.search.study import requeue_lost_recipe
from hpsearch.search.workers import fail_dead_trials, heartbeat, worker_id

# Seconds between looks at the study while the trials other workers run may reach the total.
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Unit:
    """One unit of work: a trial asked of ``study``, and what trains it (``objective.run(trial)``)."""

    study: optuna.Study
    trial: optuna.Trial
    objective: Any


class StudySource:
    """The units of one study: a new trial whenever finished plus running trials fall short of ``total``."""

    def __init__(
        self,
        study: optuna.Study,
        objective: Any,
        total: int,
        *,
        storage: optuna.storages.BaseStorage,
        lock: Callable[[], Any],
        listener: RunListener,
        recipe: dict[str, Any],
    ) -> None:
        self.study, self.objective, self.total = study, objective, total
        self.storage, self.lock, self.listener, self.recipe = storage, lock, listener, recipe
        self.me = worker_id()

    def next(self, deadline: float | None) -> Unit | None:
        trial = next_trial(
            self.study,
            self.total,
            storage=self.storage,
            lock=self.lock,
            listener=self.listener,
            deadline=deadline,
            recipe=self.recipe,
            me=self.me,
        )
        return None if trial is None else Unit(self.study, trial, self.objective)

    def done(self) -> bool:
        return schema.count_finished(self.study.get_trials(deepcopy=False)) >= self.total


def work(source: Any, config: SearchConfig, *, listener: RunListener) -> str | None:
    """The worker loop: take a unit of ``source``, train, tell, decide. Returns why it stopped
    short of the source's end (``source.done()``)."""
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    failures: list[str] = []  # reasons of the failed trials in a row
    while True:
        unit = source.next(deadline)
        if unit is None:
            return None if source.done() else f"timeout of {config.timeout:g} s reached"
        study, trial = unit.study, unit.trial
        try:
            with heartbeat(trial):
                try:
                    outcome = unit.objective.run(trial)
                except KeyboardInterrupt:
                    study.tell(trial, state=TrialState.FAIL)
                    raise
            frozen = study.tell(trial, outcome.value, state=outcome.state)
        except optuna.exceptions.UpdateFinishedTrialError:
            # This worker was stopped (SIGSTOP, a suspended machine) past the grace period and
            # another worker failed its trial: the study has moved on, and so does this worker.
            frozen = study.get_trials(deepcopy=False)[trial.number]
        listener.trial_end(trial, frozen)
        failures = [*failures, schema.fail_reason(frozen) or "unknown"] if frozen.state == TrialState.FAIL else []
        if len(failures) >= config.max_failures:
            raise SearchStopped(
                f"stopped after {len(failures)} consecutive failed trials (last: {failures[-1]}); "
                "fix the cause (see `hpsearch trials`) and run the same command to resume"
            )


def next_trial(
    study: optuna.Study,
    total: int,
    *,
    storage: optuna.storages.BaseStorage,
    lock: Callable[[], Any],
    listener: RunListener,
    deadline: float | None,
    recipe: dict[str, Any],
    me: str,
    poll: float = POLL_SECONDS,
) -> optuna.Trial | None:
    """A new trial, asked for under the study lock while finished plus running trials fall
    short of the total; None once the total is reached or the deadline has passed.

    While the trials other workers run could reach the total, wait: one of them may fail,
    and then a trial is needed again.
    """
    announced = False
    while deadline is None or time.monotonic() < deadline:
        with lock():
            fail_dead_trials(study, storage=storage)
            states = [t.state for t in study.get_trials(deepcopy=False)]  # one read for both counts
            finished, running = sum(s in schema.FINISHED for s in states), states.count(TrialState.RUNNING)
            if finished >= total:
                return None
            if finished + running < total:
                requeue_lost_recipe(study, recipe)
                trial = study.ask()
                schema.claim(trial, me)
                return trial
        if not announced:
            listener.waiting(running, total - finished)
            announced = True
        time.sleep(poll)
    return None


# --------------------------------------------------------------------------- process settings


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Hide what lives for the whole run (libraries, data, the base model) from the collector.

    Each trial ends with ``gc.collect()`` to free its model; without this it walks every
    object torch and transformers made, about half a million. Objects a trial makes are
    not frozen, so they are still freed.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
