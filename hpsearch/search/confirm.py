"""``hpsearch confirm``: train the leading configurations again with other seeds.

The search picks the best of N single-seed trials on one validation split; for BERT-sized
fine-tunes the seed alone moves the score as much as the search does (Dodge et al. 2020).
:func:`run_confirm` trains the ``top`` best complete trials' parameters, and the recipe's,
with ``seeds`` seeds each (the recipe's seed and the next ones: 42, 43, ...); a
configuration's original trial is the run of its own seed. The runs are trials of a
sibling study, ``<study>.confirm``, in the same storage, so they are resumable units of
work exactly as search trials are: each is enqueued once, under the study lock, with its
configuration's trial number and seed (:func:`hpsearch.schema.confirm_attrs`), and the
search's worker loop (:mod:`hpsearch.search.loop`) asks, trains and tells them, heartbeats
and dead workers included, until every planned run is complete. The search study is only
read: its sampler, pruner, trials and best trial stay as they were.

Every run trains every epoch with the search's early-stopping and checkpoint rules but no
pruner, and is scored on the test split. Per configuration the best run's model is kept
under ``studies/<study>/confirm/trial-<N>/best-model/``; once every run is complete, the
winner by mean (:mod:`hpsearch.search.seeds`) has its best run swapped into
``studies/<study>/best-model/``, whose marker then says ``confirmed`` and the seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpsearch import schema
from hpsearch.analysis.seeds import Confirmation, original_seed, plan_configurations, read_confirmation, seeds_for
from hpsearch.config import BUILTIN_DATASET, PrunerConfig, SamplerConfig, SearchConfig, load_config
from hpsearch.errors import ConfigError
from hpsearch.events import Listeners, RunInfo, RunListener
from hpsearch.search.locks import study_lock
from hpsearch.search.storage import check_url, open_storage
from hpsearch.search.study import load_study, study_dir
from hpsearch.search.workers import fail_dead_trials

DEFAULT_TOP = 3
DEFAULT_SEEDS = 5
CONFIRM_FOLDER = "confirm"  # studies/<study>/confirm/trial-<N>/best-model/: each configuration's best run


@dataclass
class ConfirmResult:
    confirmation: Confirmation | None
    best_model_dir: Path
    newly_complete: int
    stopped: str | None = None  # why it ended before every run was complete
    shipped_seed: int | None = None  # the seed of the run now in best-model/, when shipped
    not_shipped: str | None = None  # why best-model/ was left as it was


def search_config(stored: dict[str, Any], *, storage: str, workdir: str) -> SearchConfig:
    """The search's configuration rebuilt from its stored settings (storage and folder as given now)."""
    values = {k: v for k, v in stored.items() if k not in ("pruner", "sampler", "storage", "workdir") and v is not None}
    config = load_config(None, values | {"storage": storage, "workdir": workdir})
    return dataclasses.replace(
        config, pruner=PrunerConfig(**stored["pruner"]), sampler=SamplerConfig(**stored["sampler"])
    )


def run_confirm(
    *,
    study: str,
    storage: str,
    workdir: str,
    top: int = DEFAULT_TOP,
    seeds: int = DEFAULT_SEEDS,
    listeners: Sequence[RunListener] = (),
) -> ConfirmResult:
    """Run (or resume) the confirmation of ``study``, in this process; several may share it.

    Raises:
        HpsearchError: Bad input or a study without complete trials, before any work.
        SearchStopped: ``max_failures`` runs in a row failed.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the running run is recorded as failed.
    """
    from hpsearch.bestmodel import BestModelStore
    from hpsearch.data import load_task, tokenize_task
    from hpsearch.search.loop import frozen_heap, interrupts, quiet_libraries, work
    from hpsearch.training.evaluate_metrics import prepare_metrics
    from hpsearch.training.hub import offline_if_unreachable
    from hpsearch.training.modeling import (
        configure_allocator,
        configure_threads,
        load_base_model,
        load_tokenizer,
        resolve_model,
    )
    from hpsearch.training.objective import Resources

    if top < 1 or seeds < 1:
        raise ConfigError(f"--top and --seeds: expected at least 1, got --top {top} --seeds {seeds}")
    check_url(storage)
    search = load_study(study, storage)
    settings = schema.read_settings(search)
    config = search_config(settings.config, storage=storage, workdir=workdir)
    configurations, recipe = plan_configurations(search.get_trials(deepcopy=False), top)
    if not configurations:
        raise ConfigError(f"study {study!r} has no complete trial to confirm; run `hpsearch run` first")
    plan = schema.ConfirmPlan(
        top=top, seeds=seeds_for(config.recipe.seed, seeds), configurations=configurations, recipe=recipe
    )

    source = resolve_model(config.model)
    if not source.local or not (config.dataset == BUILTIN_DATASET or Path(config.dataset).exists()):
        offline_if_unreachable()
    quiet_libraries()
    task = load_task(config)
    metrics = prepare_metrics(
        config.metrics, config.objective, labels=task.splits["validation"]["label"], n_labels=task.num_labels
    )
    tokenizer = load_tokenizer(source, config)
    tokenized = tokenize_task(task, tokenizer, config.max_length)
    base_model = load_base_model(source, config, task.label_names)
    configure_threads()
    configure_allocator()

    opened = open_storage(storage, create=False)
    confirm = _create_or_join(opened, schema.confirm_study_name(study), config.objective)
    units = planned_units(search, plan)
    lock = functools.partial(_lock_and_enqueue, confirm, opened, storage, search, units, plan)
    folder = study_dir(config) / CONFIRM_FOLDER
    listener = Listeners(listeners)
    # The loop stops at a total of complete trials; runs of an earlier plan that this one
    # does not need count toward it too.
    planned = {(n, s) for n, s, _ in units}
    extra = sum(
        t.state == TrialState.COMPLETE and (schema.confirms(t), schema.run_seed(t)) not in planned
        for t in confirm.get_trials(deepcopy=False)
    )
    loop_config = dataclasses.replace(config, study=confirm.study_name, trials=max(1, extra + len(units)), timeout=None)
    before = _complete(confirm)
    listener.run_start(RunInfo(study=confirm, config=loop_config, data=task.facts(), finished=before, lock=lock))
    runner = _Runs(
        config, Resources(task, tokenized, tokenizer, base_model, metrics), folder, listener, confirm.study_name
    )
    with interrupts(), frozen_heap():
        stopped = work(confirm, runner, loop_config, lock=lock, listener=listener, recipe={}) if units else None
    best = BestModelStore(study_dir(config))
    result = ConfirmResult(None, best.folder, _complete(confirm) - before, stopped)
    if not units:  # --seeds 1: nothing to run, but the plan is stored all the same
        with lock():
            pass
    result.confirmation = read_confirmation(search, confirm)
    if stopped is None and result.confirmation is not None and result.confirmation.done:
        result.shipped_seed, result.not_shipped = ship_winner(result.confirmation, best, folder)
    return result


def planned_units(search: optuna.Study, plan: schema.ConfirmPlan) -> list[tuple[int, int, dict[str, Any]]]:
    """``(search trial, seed, params)`` of every run the plan needs beyond the original trials."""
    trials = {t.number: t for t in search.get_trials(deepcopy=False)}
    out = []
    for number in plan.configurations:
        trial = trials[number]
        own = original_seed(trial, plan.seeds[0]) if trial.state == TrialState.COMPLETE else None
        out += [(number, seed, dict(trial.params)) for seed in plan.seeds if seed != own]
    return out


def ship_winner(confirmation: Confirmation, best: Any, folder: Path) -> tuple[int | None, str | None]:
    """Swap the winner's best run whose weights exist into ``best-model/``; (its seed, None),
    or (None, why not). Workers that finish together decide one after the other, under the
    best model's lock, so the last one finds the winner there already."""
    from hpsearch.bestmodel import BestModelStore

    winner = confirmation.winner
    if winner is None:
        return None, "no configuration has a complete run"
    best.recover()
    kept = BestModelStore(folder / f"trial-{winner.trial}")
    kept.recover()
    marker = kept.marker()
    unit = next((r for r in winner.runs if marker is not None and not r.original and r.trial == marker.trial), None)
    original = next((r for r in winner.complete if r.original), None)

    def decide(current: schema.Marker | None) -> tuple[schema.Marker, Path | None] | None:
        candidates = []  # (value, seed, epoch, folder to copy, or None for the model already there)
        if (
            original is not None
            and current is not None
            and current.trial == winner.trial
            and current.seed in (None, original.seed)
        ):
            candidates.append((original.value, original.seed, current.epoch, None))
        if unit is not None:
            candidates.append((marker.value, unit.seed, marker.epoch, kept.folder))
        if not candidates:
            return None
        value, seed, epoch, source = max(candidates, key=lambda c: (c[0], -c[1]))
        return schema.Marker(
            trial=winner.trial, value=value, epoch=epoch, objective=confirmation.objective, confirmed=True, seed=seed
        ), source

    shipped = best.install(decide)
    if shipped is None or not shipped.confirmed or shipped.trial != winner.trial:
        return (
            None,
            f"no saved model of trial {winner.trial}'s configuration: only the search's best trial keeps its weights",
        )
    return shipped.seed, None


# --------------------------------------------------------------------------- the runs


class _Runs:
    """The loop's objective: trains a confirmation run with its configuration's seed."""

    def __init__(
        self, config: SearchConfig, resources: Any, folder: Path, listener: RunListener, study_name: str
    ) -> None:
        self.config, self.resources, self.folder, self.listener, self.study_name = (
            config,
            resources,
            folder,
            listener,
            study_name,
        )

    def run(self, trial: optuna.Trial) -> Any:
        from hpsearch.bestmodel import BestModelStore
        from hpsearch.training.objective import Objective

        number, seed = schema.confirms(trial), schema.run_seed(trial)
        config = dataclasses.replace(
            self.config,
            study=self.study_name,
            recipe=dataclasses.replace(self.config.recipe, seed=int(seed)),
            pruner=PrunerConfig(name="none"),
        )
        try:
            store = BestModelStore(self.folder / f"trial-{number}")
            store.recover()
            return Objective(config, self.resources, store, listener=self.listener, test_every_run=True).run(trial)
        except KeyboardInterrupt:  # also when it lands before the Trainer starts
            schema.record_failure(trial, schema.INTERRUPTED)
            raise


def _create_or_join(storage: Any, name: str, objective: str) -> optuna.Study:
    # Fixed parameters only: the sampler never chooses, and no run is pruned.
    kwargs = dict(
        study_name=name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )
    try:
        study = optuna.create_study(direction="maximize", **kwargs)
        study.set_metric_names([schema.objective_metric_name(objective)])
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kwargs)
    return study


@contextlib.contextmanager
def _lock_and_enqueue(
    confirm: optuna.Study,
    storage: Any,
    url: str,
    search: optuna.Study,
    units: list[tuple[int, int, dict[str, Any]]],
    plan: schema.ConfirmPlan,
) -> Iterator[None]:
    """The study lock, holding which the planned runs that are neither complete, running nor
    queued are enqueued (a run failed or interrupted is queued again), before the loop counts."""
    with study_lock(storage, url, confirm.study_name):
        fail_dead_trials(confirm)
        if schema.read_plan(confirm) != plan:
            schema.write_plan(confirm, plan)
        have = {
            (schema.confirms(t), schema.run_seed(t))
            for t in confirm.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        }
        for number, seed, params in units:
            if (number, seed) not in have:
                confirm.enqueue_trial(params, user_attrs=schema.confirm_attrs(number, seed))
        yield


def _complete(study: optuna.Study) -> int:
    return sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
