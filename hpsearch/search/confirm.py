"""``hpsearch confirm``: train the leading configurations again with other seeds.

The search picks the best of N single-seed trials on one validation split; for BERT-sized
fine-tunes the seed alone moves the score as much as the search does (Dodge et al. 2020).
:func:`confirm` trains the ``top`` best complete trials' parameters, and the recipe's,
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
winner by mean (:mod:`hpsearch.analysis.seeds`) has its best run swapped into
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
from hpsearch.bestmodel import BestModelStore, Marker
from hpsearch.config import DEFAULT_CONFIRM_TOP, DEFAULT_SEEDS, PrunerConfig, SearchConfig
from hpsearch.errors import ConfigError
from hpsearch.events import Listeners, RunInfo, RunListener
from hpsearch.layout import StudyLayout
from hpsearch.search.locks import study_lock
from hpsearch.search.loop import StudySource, frozen_heap, work
from hpsearch.search.setup import Prepared
from hpsearch.search.signals import interrupts
from hpsearch.search.storage import open_storage
from hpsearch.search.workers import fail_dead_trials
from hpsearch.training.objective import Objective, Outcome


@dataclass
class ConfirmResult:
    confirmation: Confirmation | None
    best_model_dir: Path
    newly_complete: int
    stopped: str | None = None  # why it ended before every run was complete
    shipped_seed: int | None = None  # the seed of the run now in best-model/, when shipped
    not_shipped: str | None = None  # why best-model/ was left as it was


def confirm(
    prepared: Prepared,
    search: optuna.Study,
    *,
    top: int = DEFAULT_CONFIRM_TOP,
    seeds: int = DEFAULT_SEEDS,
    listeners: Sequence[RunListener] = (),
) -> ConfirmResult:
    """Run (or join) the confirmation of the search study ``search``, from what ``prepare`` made.

    Raises:
        ConfigError: A study without complete trials.
        SearchStopped: ``max_failures`` runs in a row failed.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the running run is recorded as failed.
    """
    config = prepared.config
    plan = make_plan(search, top=top, seeds=seeds, base_seed=config.recipe.seed)
    layout = StudyLayout.of(config)
    opened = open_storage(config.storage, create=False)
    runs = create_or_join(opened, schema.confirm_study_name(search.study_name), config.objective)
    units = planned_units(search, plan)
    lock = functools.partial(_lock_and_enqueue, runs, opened, config.storage, search, units, plan)
    listener = Listeners(listeners)
    # The loop stops at a total of complete trials; runs of an earlier plan that this one
    # does not need count toward it too.
    planned = {(n, s) for n, s, _ in units}
    extra = sum(
        t.state == TrialState.COMPLETE and (schema.confirms(t), schema.run_seed(t)) not in planned
        for t in runs.get_trials(deepcopy=False)
    )
    loop_config = dataclasses.replace(config, study=runs.study_name, trials=max(1, extra + len(units)), timeout=None)
    before = _complete(runs)
    listener.run_start(
        RunInfo(study=runs, config=loop_config, data=prepared.data, finished=before, lock=lock, kind="confirm")
    )
    runner = SeedRuns(config, prepared, listener, runs.study_name)
    source = StudySource(runs, runner, loop_config.trials, storage=opened, lock=lock, listener=listener, recipe={})
    with interrupts(), frozen_heap():
        stopped = work(source, loop_config, listener=listener) if units else None
    best = BestModelStore(layout.root)
    result = ConfirmResult(None, best.folder, _complete(runs) - before, stopped)
    if not units:  # --seeds 1: nothing to run, but the plan is stored all the same
        with lock():
            pass
    result.confirmation = read_confirmation(search, runs)
    if stopped is None and result.confirmation is not None and result.confirmation.done:
        result.shipped_seed, result.not_shipped = ship_winner(result.confirmation, best, layout)
    return result


def check_counts(*, top: int, seeds: int) -> None:
    """Refuse ``top`` or ``seeds`` below 1 (:class:`ConfigError`)."""
    if top < 1 or seeds < 1:
        raise ConfigError(f"--top and --seeds: expected at least 1, got --top {top} --seeds {seeds}")


def make_plan(search: optuna.Study, *, top: int, seeds: int, base_seed: int) -> schema.ConfirmPlan:
    """The ``top`` best complete trials and the recipe, with ``seeds`` seeds from ``base_seed``.

    Raises:
        ConfigError: ``top`` or ``seeds`` below 1, or a study without complete trials.
    """
    check_counts(top=top, seeds=seeds)
    configurations, recipe = plan_configurations(search.get_trials(deepcopy=False), top)
    if not configurations:
        raise ConfigError(f"study {search.study_name!r} has no complete trial to confirm; run `hpsearch run` first")
    return schema.ConfirmPlan(top=top, seeds=seeds_for(base_seed, seeds), configurations=configurations, recipe=recipe)


def planned_units(search: optuna.Study, plan: schema.ConfirmPlan) -> list[tuple[int, int, dict[str, Any]]]:
    """``(search trial, seed, params)`` of every run the plan needs beyond the original trials."""
    trials = {t.number: t for t in search.get_trials(deepcopy=False)}
    out = []
    for number in plan.configurations:
        trial = trials[number]
        own = original_seed(trial, plan.seeds[0]) if trial.state == TrialState.COMPLETE else None
        out += [(number, seed, dict(trial.params)) for seed in plan.seeds if seed != own]
    return out


def ship_winner(confirmation: Confirmation, best: BestModelStore, layout: StudyLayout) -> tuple[int | None, str | None]:
    """Swap the winner's best run whose weights exist into ``best-model/``; (its seed, None),
    or (None, why not). Workers that finish together decide one after the other, under the
    best model's lock, so the last one finds the winner there already."""
    winner = confirmation.winner
    if winner is None:
        return None, "no configuration has a complete run"
    best.recover()
    kept = BestModelStore(layout.confirm_root(winner.trial))
    kept.recover()
    marker = kept.marker()
    unit = next((r for r in winner.runs if marker is not None and not r.original and r.trial == marker.trial), None)
    original = next((r for r in winner.complete if r.original), None)

    def decide(current: Marker | None) -> tuple[Marker, Path | None] | None:
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
        return Marker(
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


class SeedRuns:
    """The loop's objective for seed runs: trains a run of a search trial's configuration
    with the run's seed, every epoch, no pruner, scored on the test split.

    Args:
        keep_seed: None: every run offers its model to its configuration's store under
            ``confirm/trial-<N>/``, which keeps the best (a confirmation); a seed: only the run
            of that seed is kept there (a race, which ships its incumbent's run of the last seed).
    """

    def __init__(
        self,
        config: SearchConfig,
        prepared: Prepared,
        listener: RunListener,
        study_name: str,
        *,
        keep_seed: int | None = None,
    ) -> None:
        self.config, self.prepared, self.layout = config, prepared, StudyLayout.of(config)
        self.listener, self.study_name, self.keep_seed = listener, study_name, keep_seed

    def run(self, trial: optuna.Trial) -> Outcome:
        number, seed = schema.confirms(trial), schema.run_seed(trial)
        config = dataclasses.replace(
            self.config,
            study=self.study_name,
            recipe=dataclasses.replace(self.config.recipe, seed=int(seed)),
            pruner=PrunerConfig(name="none"),
        )
        try:
            store = None
            if self.keep_seed in (None, seed):
                store = BestModelStore(self.layout.confirm_root(number))
                store.recover()
            hooks, resources = self.prepared.hooks, self.prepared.resources
            objective = Objective(config, resources, store, listener=self.listener, hooks=hooks, test_every_run=True)
            return objective.run(trial)
        except KeyboardInterrupt:  # also when it lands before the Trainer starts
            schema.record_failure(trial, schema.INTERRUPTED)
            raise


def create_or_join(storage: Any, name: str, objective: str) -> optuna.Study:
    """The sibling study ``<study>.confirm`` that holds seed runs, made by the first to need it."""
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
        fail_dead_trials(confirm, storage=storage)
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
