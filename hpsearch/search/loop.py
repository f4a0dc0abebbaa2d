"""The search: check every input, open the study, then one loop until the total is reached.

:func:`run_search` checks the inputs before it touches storage, makes what every trial
shares once (data, tokens, tokenizer, base model), creates or resumes the study, and runs
the worker loop, :func:`work` and :func:`next_trial`: ask for a trial under the study lock (only while the total
needs one), train it, tell Optuna the outcome, and decide whether to go on. Ctrl-C or
SIGTERM records the running trial as failed ("interrupted"); the same command resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpsearch import schema
from hpsearch.config import BUILTIN_DATASET, SearchConfig
from hpsearch.errors import SearchStopped
from hpsearch.events import Listeners, RunInfo, RunListener
from hpsearch.search.locks import retrying_study_lock
from hpsearch.search.storage import check_url, open_storage, with_retries
from hpsearch.search.study import check_resumable, create_or_resume, requeue_lost_recipe, study_dir
from hpsearch.search.workers import fail_dead_trials, heartbeat, worker_id

# Seconds between looks at the study while the trials other workers run may reach the total.
POLL_SECONDS = 2.0


@dataclass
class RunResult:
    study: optuna.Study
    best_model_dir: Path
    newly_finished: int
    stopped: str | None = None  # why the run ended before the total, if it did


def run_search(
    config: SearchConfig,
    *,
    listeners: Sequence[RunListener] = (),
    callbacks: Sequence[Any] = (),
    pruner: optuna.pruners.BasePruner | None = None,
) -> RunResult:
    """Run (or resume) the search that ``config`` describes, in this process.

    Args:
        config: The resolved configuration.
        listeners: Receive the run's events (progress, dashboard notes).
        callbacks: Extra ``transformers.TrainerCallback`` objects for every trial.
        pruner: Replaces the configured pruner (research runs in benchmarks/).

    Raises:
        HpsearchError: Bad input, found before any study, folder or file is made.
        SearchStopped: ``max_failures`` trials in a row failed.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the running trial is recorded as failed.
    """
    from hpsearch.bestmodel import BestModelStore
    from hpsearch.data import load_task, tokenize_task
    from hpsearch.training.evaluate_metrics import prepare_metrics
    from hpsearch.training.hub import offline_if_unreachable
    from hpsearch.training.modeling import (
        configure_allocator,
        configure_threads,
        load_base_model,
        load_tokenizer,
        resolve_model,
        resolve_precision,
    )
    from hpsearch.training.objective import Objective, Resources
    from hpsearch.training.space import check_training_argument_names, recipe_params
    from hpsearch.training.trackers import check_trackers

    # Every input first, so that a typo is reported as itself, with nothing written.
    check_url(config.storage)
    # Stored resolved, so that a study resumed on other hardware is refused, not mixed.
    config = dataclasses.replace(config, precision=resolve_precision(config.precision).name)
    source = resolve_model(config.model)
    if not source.local or not (config.dataset == BUILTIN_DATASET or Path(config.dataset).exists()):
        offline_if_unreachable()
    quiet_libraries()
    check_training_argument_names(config.recipe, config.space)
    recipe = recipe_params(config.recipe, config.space)  # trial 0 must fit the space
    task = load_task(config)
    metrics = prepare_metrics(
        config.metrics, config.objective, labels=task.splits["validation"]["label"], n_labels=task.num_labels
    )
    check_trackers(config.report_to)
    tokenizer = load_tokenizer(source, config)
    check_resumable(config)
    tokenized = tokenize_task(task, tokenizer, config.max_length)
    base_model = load_base_model(source, config, task.label_names)
    configure_threads()
    configure_allocator()

    storage = with_retries(open_storage(config.storage, create=True), config.storage, config.storage_timeout)
    data = task.facts()
    study = create_or_resume(storage, config, recipe=recipe, data=data, base_model=source.base_model, pruner=pruner)
    lock = functools.partial(retrying_study_lock, storage, config.storage, config.study, seconds=config.storage_timeout)
    best = BestModelStore(study_dir(config))
    best.recover()
    listener = Listeners(listeners)
    before = schema.count_finished(study.get_trials(deepcopy=False))
    listener.run_start(RunInfo(study=study, config=config, data=data, finished=before, lock=lock))
    objective = Objective(
        config, Resources(task, tokenized, tokenizer, base_model, metrics), best, listener=listener, callbacks=callbacks
    )
    with interrupts(), frozen_heap():
        stopped = work(study, objective, config, lock=lock, listener=listener, recipe=recipe)
    after = schema.count_finished(study.get_trials(deepcopy=False))
    return RunResult(study, best.folder, after - before, stopped)


def work(
    study: optuna.Study,
    objective: Any,
    config: SearchConfig,
    *,
    lock: Callable[[], Any],
    listener: RunListener,
    recipe: dict[str, Any],
) -> str | None:
    """The worker loop: ask, train, tell, decide. Returns why it stopped short of the total."""
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    failures: list[str] = []  # reasons of the failed trials in a row
    me = worker_id()
    while True:
        trial = next_trial(study, config.trials, lock=lock, listener=listener, deadline=deadline, recipe=recipe, me=me)
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
            fail_dead_trials(study)
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
def on_stop_signals(handler: Any) -> Iterator[None]:
    """Run ``handler`` on SIGINT and SIGTERM inside the block, then put the previous ones back.

    Set explicitly rather than left to Python's default: a process that a non-interactive
    shell starts in the background inherits SIGINT ignored, and would not stop on Ctrl-C.
    """
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def interrupts() -> contextlib.AbstractContextManager[None]:
    """Ctrl-C and SIGTERM end the running trial as failed; a second one exits at once."""
    hits = {"n": 0}

    def handler(signum: int, frame: Any) -> None:
        hits["n"] += 1
        if hits["n"] > 1:
            sys.stderr.write("hpsearch: second interrupt, exiting now; the next run marks the open trial failed\n")
            sys.stderr.flush()
            os._exit(130)
        raise KeyboardInterrupt

    return on_stop_signals(handler)


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


def quiet_libraries() -> None:
    """Keep transformers' and Optuna's chatter out of the progress display."""
    import warnings

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*enqueue.*")
