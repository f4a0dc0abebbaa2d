"""The search: open the study, then one loop until the total is reached.

:func:`search` starts from what :func:`hpsearch.search.setup.prepare` made, creates or
resumes the study, and runs the worker loop, :func:`work` and :func:`next_trial`: ask for a
trial under the study lock (only while the total needs one), train it, tell Optuna the
outcome, and decide whether to go on. Ctrl-C or SIGTERM records the running trial as failed
("interrupted"); the same command resumes. The confirmation (:mod:`hpsearch.search.confirm`)
runs its units of work through the same loop.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpsearch import schema
from hpsearch.bestmodel import BestModelStore
from hpsearch.config import SearchConfig
from hpsearch.errors import SearchStopped
from hpsearch.events import Listeners, RunInfo, RunListener
from hpsearch.layout import StudyLayout
from hpsearch.search.locks import retrying_study_lock
from hpsearch.search.setup import Prepared
from hpsearch.search.signals import interrupts
from hpsearch.search.storage import open_storage, with_retries
from hpsearch.search.study import create_or_resume, requeue_lost_recipe
from hpsearch.search.workers import fail_dead_trials, heartbeat, worker_id
from hpsearch.training.objective import Objective

# Seconds between looks at the study while the trials other workers run may reach the total.
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class SearchPass:
    """What one worker's search did."""

    study: optuna.Study
    best_model_dir: Path
    newly_finished: int
    stopped: str | None = None  # why it ended before the total, if it did


def search(
    prepared: Prepared,
    *,
    listeners: Sequence[RunListener] = (),
    pruner: optuna.pruners.BasePruner | None = None,
) -> SearchPass:
    """Create or resume the study, then run the worker loop until the total is reached.

    Raises:
        SearchStopped: ``max_failures`` trials in a row failed.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the running trial is recorded as failed.
    """
    config = prepared.config
    storage = with_retries(open_storage(config.storage, create=True), config.storage, config.storage_timeout)
    study = create_or_resume(
        storage,
        config,
        recipe=prepared.recipe,
        data=prepared.data,
        base_model=prepared.source.base_model,
        hooks=prepared.hooks,
        pruner=pruner,
    )
    lock = functools.partial(retrying_study_lock, storage, config.storage, config.study, seconds=config.storage_timeout)
    best = BestModelStore(StudyLayout.of(config).root)
    best.recover()
    listener = Listeners(listeners)
    before = schema.count_finished(study.get_trials(deepcopy=False))
    listener.run_start(RunInfo(study=study, config=config, data=prepared.data, finished=before, lock=lock))
    objective = Objective(config, prepared.resources, best, listener=listener, hooks=prepared.hooks)
    with interrupts(), frozen_heap():
        stopped = work(study, objective, config, storage=storage, lock=lock, listener=listener, recipe=prepared.recipe)
    after = schema.count_finished(study.get_trials(deepcopy=False))
    return SearchPass(study, best.folder, after - before, stopped)


def work(
    study: optuna.Study,
    objective: Any,
    config: SearchConfig,
    *,
    storage: optuna.storages.BaseStorage,
    lock: Callable[[], Any],
    listener: RunListener,
    recipe: dict[str, Any],
) -> str | None:
    """The worker loop: ask, train, tell, decide. Returns why it stopped short of the total."""
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    failures: list[str] = []  # reasons of the failed trials in a row
    me = worker_id()
    while True:
        trial = next_trial(
            study, config.trials, storage=storage, lock=lock, listener=listener, deadline=deadline, recipe=recipe, me=me
        )
        if trial is None:
            done = schema.count_finished(study.get_trials(deepcopy=False)) >= config.trials
            return None if done else f"timeout of {config.timeout:g} s reached"
        try:
            with heartbeat(trial):
                try:
                    outcome = objective.run(trial)
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
