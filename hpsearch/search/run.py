"""The library's entry points: a search, with its confirmation when asked, and a confirmation alone.

:func:`run_search` is what ``hpsearch run`` does in one process, and what each worker of a
pool does: check and load once (:func:`hpsearch.search.setup.prepare`), search until the
study holds its total, then, with ``confirm_top``, confirm its leaders on the same loaded
data and model. :func:`run_confirm` is ``hpsearch confirm``: the configuration comes from
what the search study stored.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from hpsearch import schema
from hpsearch.bestmodel import BestModelStore
from hpsearch.config import DEFAULT_CONFIRM_TOP, DEFAULT_SEEDS, SearchConfig, config_from_dict
from hpsearch.errors import ConfigError
from hpsearch.events import Listeners, RunInfo, RunListener
from hpsearch.hooks import Hooks, ModelInit
from hpsearch.layout import StudyLayout
from hpsearch.search.confirm import ConfirmResult, check_counts, confirm, make_plan
from hpsearch.search.locks import retrying_study_lock
from hpsearch.search.loop import StudySource, frozen_heap, work
from hpsearch.search.race import RaceSource
from hpsearch.search.setup import Prepared, prepare
from hpsearch.search.signals import interrupts
from hpsearch.search.storage import check_url, open_storage, with_retries
from hpsearch.search.study import check_hooks, create_or_resume, load_study
from hpsearch.training.objective import Objective


@dataclass(frozen=True)
class SearchPass:
    """What one worker's search did."""

    study: optuna.Study
    best_model_dir: Path
    newly_finished: int
    stopped: str | None = None  # why it ended before the total, if it did
    shipped_seed: int | None = None  # a race's: the seed of the incumbent's run now in best-model/
    not_shipped: str | None = None  # a race's: why best-model/ was left as it was


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
    if config.seeds > 1:
        source = RaceSource(prepared, study, objective, storage=storage, lock=lock, listener=listener)
    else:
        source = StudySource(
            study, objective, config.trials, storage=storage, lock=lock, listener=listener, recipe=prepared.recipe
        )
    with interrupts(), frozen_heap():
        stopped = work(source, config, listener=listener)
    shipped = source.ship() if config.seeds > 1 else (None, None)
    after = schema.count_finished(study.get_trials(deepcopy=False))
    return SearchPass(study, best.folder, after - before, stopped, *shipped)


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_search` did in this process."""

    study: optuna.Study
    best_model_dir: Path
    newly_finished: int  # trials this process finished (complete or pruned)
    stopped: str | None = None  # why the search ended before its total, if it did
    confirmation: ConfirmResult | None = None  # the chained confirmation's, where one ran
    confirmation_skipped: str | None = None  # why a requested confirmation did not start
    shipped_seed: int | None = None  # a race's: the seed of the incumbent's run now in best-model/
    not_shipped: str | None = None  # a race's: why best-model/ was left as it was


def run_search(
    config: SearchConfig,
    *,
    listeners: Sequence[RunListener] = (),
    model_init: ModelInit | None = None,
    trainer_class: type | None = None,
    data_collator: Any = None,
    callbacks: Sequence[Any] = (),
    pruner: optuna.pruners.BasePruner | None = None,
    confirm_top: int | None = None,
) -> RunResult:
    """Run (or resume) the search that ``config`` describes, in this process; several may share it.

    Args:
        config: The configuration (``load_config``).
        listeners: Receive the run's events: progress, dashboard notes, your own.
        model_init: ``model_init(values, model) -> model``: the model each trial trains, from the
            trial's values (your own parameters included) and its fresh copy of the base model.
        trainer_class: A ``transformers.Trainer`` subclass (a class-weighted loss, say).
        data_collator: Replaces ``DataCollatorWithPadding(tokenizer)``.
        callbacks: Extra ``transformers.TrainerCallback`` objects for every trial.
        pruner: Any ``optuna.pruners.BasePruner`` to use instead of the configured one. A pruner
            with a method ``explain(study, rows, objective)`` says why it pruned.
        confirm_top: Judge the leaders after the search rather than racing them during it: once
            the study holds its total, confirm this many leading configurations and the recipe
            with ``config.seeds`` seeds each (``hpsearch run --confirm-top K --seeds S``). Without
            it, ``config.seeds`` above 1 races the seeds inside the search (docs/seeds.md).

    Raises:
        HpsearchError: Bad input, found before any study, folder or file is made.
        SearchStopped: ``max_failures`` trials in a row failed.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the running trial is recorded as failed.
    """
    seeds = config.seeds
    if confirm_top is not None:
        check_chain(confirm_top, seeds)
        config = dataclasses.replace(config, seeds=1)  # a plain search, then the confirmation
    hooks = Hooks(model_init, trainer_class, data_collator, tuple(callbacks))
    prepared = prepare(config, hooks)
    done = search(prepared, listeners=listeners, pruner=pruner)
    result = RunResult(
        done.study,
        done.best_model_dir,
        done.newly_finished,
        done.stopped,
        shipped_seed=done.shipped_seed,
        not_shipped=done.not_shipped,
    )
    if confirm_top is None:
        return result
    missing = prepared.config.trials - schema.count_finished(done.study.get_trials(deepcopy=False))
    if missing > 0:  # stopped early (--timeout, failures): the leaders are not known yet
        why = f"the search is {missing} trials short of {prepared.config.trials}; run the same command to go on"
        return dataclasses.replace(result, confirmation_skipped=why)
    confirmed = confirm(prepared, done.study, top=confirm_top, seeds=seeds, listeners=listeners)
    return dataclasses.replace(result, confirmation=confirmed)


def check_chain(confirm_top: int, seeds: int) -> None:
    """``--confirm-top K`` confirms on ``--seeds S`` seeds: refuse S below 2 (:class:`ConfigError`)."""
    if confirm_top < 1:
        raise ConfigError(f"--confirm-top: expected at least 1, got {confirm_top}")
    if seeds < 2:
        raise ConfigError(
            f"--confirm-top {confirm_top} confirms on --seeds seeds, got --seeds {seeds}; "
            "pass --seeds 2 or more (5 is usual), or leave --confirm-top out"
        )


def run_confirm(
    *,
    study: str,
    storage: str,
    workdir: str,
    top: int = DEFAULT_CONFIRM_TOP,
    seeds: int = DEFAULT_SEEDS,
    listeners: Sequence[RunListener] = (),
    model_init: ModelInit | None = None,
    trainer_class: type | None = None,
    data_collator: Any = None,
    callbacks: Sequence[Any] = (),
) -> ConfirmResult:
    """Run (or resume) the confirmation of ``study``, in this process; several may share it.

    A study searched with hooks is confirmed with the same ones (see :func:`run_search`).

    Raises:
        HpsearchError: Bad input or a study without complete trials, before any work.
        SearchStopped: ``max_failures`` runs in a row failed.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the running run is recorded as failed.
    """
    check_counts(top=top, seeds=seeds)
    check_url(storage)
    searched = load_study(study, storage)
    settings = schema.read_settings(searched)
    hooks = Hooks(model_init, trainer_class, data_collator, tuple(callbacks))
    check_hooks(settings, study, hooks)
    config = config_from_dict({**settings.config, "storage": storage, "workdir": workdir})
    make_plan(searched, top=top, seeds=seeds, base_seed=config.recipe.seed)  # refuse before loading anything
    return confirm(prepare(config, hooks), searched, top=top, seeds=seeds, listeners=listeners)
