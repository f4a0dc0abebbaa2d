"""The library's entry points: a search, with its confirmation when asked, and a confirmation alone.

:func:`run_search` is what ``hpsearch run`` does in one process, and what each worker of a
pool does: check and load once (:func:`hpsearch.search.setup.prepare`), search until the
study holds its total, then, with ``confirm_top``, confirm its leaders on the same loaded
data and model. :func:`run_confirm` is ``hpsearch confirm``: the configuration comes from
what the search study stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from hpsearch import schema
from hpsearch.config import DEFAULT_CONFIRM_TOP, DEFAULT_SEEDS, SearchConfig, config_from_dict
from hpsearch.events import RunListener
from hpsearch.hooks import Hooks, ModelInit
from hpsearch.search.confirm import ConfirmResult, check_counts, confirm, make_plan
from hpsearch.search.loop import search
from hpsearch.search.setup import prepare
from hpsearch.search.storage import check_url
from hpsearch.search.study import check_hooks, load_study


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_search` did in this process."""

    study: optuna.Study
    best_model_dir: Path
    newly_finished: int  # trials this process finished (complete or pruned)
    stopped: str | None = None  # why the search ended before its total, if it did
    confirmation: ConfirmResult | None = None  # the chained confirmation's, where one ran
    confirmation_skipped: str | None = None  # why a requested confirmation did not start


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
    seeds: int = DEFAULT_SEEDS,
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
        confirm_top: Once the study holds its total, confirm this many leading configurations
            and the recipe with ``seeds`` seeds each (``hpsearch run --confirm-top``).
        seeds: Seeds per confirmed configuration, the original trial included.

    Raises:
        HpsearchError: Bad input, found before any study, folder or file is made.
        SearchStopped: ``max_failures`` trials in a row failed.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the running trial is recorded as failed.
    """
    if confirm_top is not None:
        check_counts(top=confirm_top, seeds=seeds)
    hooks = Hooks(model_init, trainer_class, data_collator, tuple(callbacks))
    prepared = prepare(config, hooks)
    done = search(prepared, listeners=listeners, pruner=pruner)
    result = RunResult(done.study, done.best_model_dir, done.newly_finished, done.stopped)
    if confirm_top is None:
        return result
    missing = prepared.config.trials - schema.count_finished(done.study.get_trials(deepcopy=False))
    if missing > 0:  # stopped early (--timeout, failures): the leaders are not known yet
        why = f"the search is {missing} trials short of {prepared.config.trials}; run the same command to go on"
        return dataclasses.replace(result, confirmation_skipped=why)
    confirmed = confirm(prepared, done.study, top=confirm_top, seeds=seeds, listeners=listeners)
    return dataclasses.replace(result, confirmation=confirmed)


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
