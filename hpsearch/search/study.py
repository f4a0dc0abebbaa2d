"""The study: storage, sampler, pruner and the loop that runs trials up to the total.

:func:`run_search` checks every input before any work, makes the shared resources once
(data, tokens, tokenizer, base model), creates or resumes the study, enqueues the recipe
as trial 0 of a new study, and optimises until the study holds ``trials`` finished
(complete or pruned) trials. Ctrl-C or SIGTERM records the running trial as failed
("interrupted"); the same command resumes.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.config import PrunerConfig, SamplerConfig, SearchConfig, is_plain_median
from hpsearch.errors import ConfigError, SearchStopped, StorageError
from hpsearch.search.pruners import AlignedMedianPruner
from hpsearch.search.storage import check_url, open_storage, redact
from hpsearch.search.workers import CountedStudy, TotalReached, count_finished, fail_dead_trials

STUDY_ATTR = "hpsearch"  # study user attribute: resolved config, data, model, versions
# Settings a resumed study may change; any other difference would mix incomparable trials.
_RESUMABLE = {"trials", "timeout", "storage", "workdir", "eval_batch_size", "max_failures", "study"}
# Settings added after studies were made without them, and what such a study ran with: a
# study made before early stopping trained every epoch, and resuming it with the new default
# would mix the two.
_BEFORE_IT_EXISTED = {"early_stopping_patience": 0}


def study_dir(config: SearchConfig) -> Path:
    """``studies/<study>/``: the best model, artifacts and other files of one study."""
    return Path(config.workdir) / config.study


def build_sampler(config: SamplerConfig) -> optuna.samplers.BaseSampler:
    if config.name == "tpe":
        return optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=config.startup_trials)
    if config.name == "qmc":
        return optuna.samplers.QMCSampler(seed=config.seed, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=config.seed)


def build_pruner(config: PrunerConfig, epochs: int, objective: str = "f1") -> optuna.pruners.BasePruner:
    """Pruners count resources in epochs: trials report their objective at epoch 1, 2, ..."""
    if config.name in ("best", "median") and not is_plain_median(asdict(config)):
        metric = objective if config.metric == "objective" else config.metric
        return AlignedMedianPruner(
            metric=metric,
            align=config.align,
            startup_trials=config.startup_trials,
            warmup_epochs=config.warmup_epochs,
            margin_se=config.margin_se,
            reference=config.reference,
        )
    if config.name == "median":
        # Steps are epoch numbers from 1; MedianPruner skips steps < n_warmup_steps.
        return optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials, n_warmup_steps=config.warmup_epochs + 1)
    if config.name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=config.reduction_factor)
    if config.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=config.reduction_factor)
    return optuna.pruners.NopPruner()


@dataclass
class RunResult:
    study: optuna.Study
    best_model_dir: Path
    newly_finished: int
    stopped: str | None = None  # why the run ended before the total, if it did


def run_search(config: SearchConfig, *, reporter: Any = None, callbacks: Sequence[Any] = ()) -> RunResult:
    """Run (or resume) the search that ``config`` describes.

    Args:
        config: The resolved configuration.
        reporter: Receives progress events (see :mod:`hpsearch.views.progress`); None for silence.
        callbacks: Extra ``transformers.TrainerCallback`` objects added to every trial.

    Raises:
        HpsearchError: Bad input, found before any study, folder or file is made.
        SearchStopped: Too many consecutive trials failed.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the running trial is recorded as failed.
    """
    from hpsearch.search.bestmodel import BestModelStore
    from hpsearch.views.dashboard import LiveRefresh
    from hpsearch.data import load_task, tokenize_task
    from hpsearch.search.hub import offline_if_unreachable
    from hpsearch.training.modeling import configure_allocator, configure_threads, load_base_model, load_tokenizer, resolve_model
    from hpsearch.training.objective import Objective, Resources, TrialFailed
    from hpsearch.training.space import check_training_argument_names, recipe_params

    check_url(config.storage)
    source = resolve_model(config.model)
    if not source.local or not _is_local_dataset(config.dataset):
        offline_if_unreachable()
    _quiet_libraries()
    check_training_argument_names(config.recipe, config.space)
    recipe_params(config.recipe, config.space)  # trial 0 must fit the space
    _check_existing_study(config)
    task = load_task(config)
    tokenizer = load_tokenizer(source, config)
    tokenized = tokenize_task(task, tokenizer, config.max_length)
    base_model = load_base_model(source, config, task.label_names)
    configure_threads()
    configure_allocator()

    storage = open_storage(config.storage, create=True)
    study = _create_or_resume(storage, config, {"data": task.summary(), "base_model": source.base_model})
    fail_dead_trials(study)
    _requeue_interrupted_recipe(study, config)
    best = BestModelStore(study_dir(config))
    best.recover()

    before = count_finished(study)
    if reporter is not None:
        reporter.run_start(study, config, task, before)
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    study = CountedStudy(
        config.study,
        storage,
        url=config.storage,
        total=config.trials,
        sampler=study.sampler,
        pruner=study.pruner,
        reporter=reporter,
        deadline=deadline,
    )
    if study.done():
        return RunResult(study, best.folder, 0, stopped=None)

    objective = Objective(
        config,
        Resources(task, tokenized, tokenizer, base_model),
        best,
        reporter=reporter,
        callbacks=callbacks,
        scratch=None,
    )
    guard = _FailureGuard(config.max_failures)
    study_callbacks: list[Any] = [_stop_when_done, guard]
    if reporter is not None:
        study_callbacks.append(reporter.trial_end)
    study_callbacks.append(LiveRefresh(config))
    with _interrupts(), _frozen_heap(), contextlib.suppress(TotalReached):
        study.optimize(objective, timeout=config.timeout, catch=(TrialFailed,), callbacks=study_callbacks, gc_after_trial=False)
    result = RunResult(study, best.folder, count_finished(study) - before)
    if guard.tripped:
        raise SearchStopped(
            f"stopped after {config.max_failures} consecutive failed trials (last: {guard.last_reason}); "
            "fix the cause (see `hpsearch trials`) and run the same command to resume"
        )
    if count_finished(study) < config.trials and config.timeout is not None:
        result.stopped = f"timeout of {config.timeout:g} s reached"
    return result


def _is_local_dataset(name: str) -> bool:
    from hpsearch.config import BUILTIN_DATASET

    return name == BUILTIN_DATASET or Path(name).exists()


def load_study(name: str, storage_url: str) -> optuna.Study:
    """Open an existing study for reading (card, trials, report, dashboard)."""
    storage = open_storage(storage_url, create=False)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)]
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise StorageError(f"no study named {name!r} in {redact(storage_url)} (studies there: {known}); pass --study")
    return optuna.load_study(study_name=name, storage=storage)


def versions() -> dict[str, str]:
    """Framework versions, as Trainer cards list them."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name, dist in (("Transformers", "transformers"), ("Pytorch", "torch"), ("Datasets", "datasets"), ("Tokenizers", "tokenizers"), ("Optuna", "optuna"), ("hpsearch", "hpsearch")):
        try:
            out[name] = version(dist)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


# --------------------------------------------------------------------------- helpers


def _check_existing_study(config: SearchConfig) -> None:
    """A resumed study must have been made with the same settings: check before any work."""
    from hpsearch.search.storage import sqlite_path

    path = sqlite_path(config.storage)
    if path is not None and not path.is_file():
        return
    if config.storage.startswith("journal:") and not Path(config.storage[len("journal:"):]).is_file():
        return
    try:
        storage = open_storage(config.storage, create=False)
        study = optuna.load_study(study_name=config.study, storage=storage)
    except KeyError:
        return  # no such study yet: it will be created
    _check_same_settings(study, config)


def _create_or_resume(storage: Any, config: SearchConfig, facts: dict[str, Any]) -> optuna.Study:
    """Create the study with the recipe as trial 0, or join it.

    Workers that start together race to create the study; the storage lets exactly one
    win (the others get ``DuplicatedStudyError``), and only the winner enqueues the
    recipe, so a study holds one recipe trial. The winner writes the ``hpsearch``
    attribute last; the others wait for it, then check their settings against it.
    """
    sampler, pruner = build_sampler(config.sampler), build_pruner(config.pruner, config.epochs, config.objective)
    try:
        study = optuna.create_study(study_name=config.study, storage=storage, sampler=sampler, pruner=pruner, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=config.study, storage=storage, sampler=sampler, pruner=pruner)
        # A joining worker with the same seed would sample the very parameters the first one did.
        study.sampler.reseed_rng()
        info = _wait_for_setup(study)
        if info is not None:
            _check_same_settings(study, config)
            study.set_user_attr(STUDY_ATTR, {**info, "versions": versions()})
            return study
    # A new study, or one made without hpsearch (or by a run killed before it set the study up).
    from hpsearch.training.space import recipe_params

    study.set_metric_names([f"validation {config.objective}"])
    if not study.trials:
        study.enqueue_trial(recipe_params(config.recipe, config.space), user_attrs={"recipe": True})
    study.set_user_attr(
        STUDY_ATTR,
        {
            "config": config.to_dict() | {"storage": redact(config.storage)},
            **facts,
            "versions": versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return study


# Seconds a worker that finds the study just made waits for its maker to set it up (enqueue
# the recipe, store the config): a few storage writes.
_SETUP_WAIT = 10.0


def _wait_for_setup(study: optuna.Study) -> dict[str, Any] | None:
    """The ``hpsearch`` attribute, once the worker that made the study has written it."""
    deadline = time.monotonic() + _SETUP_WAIT
    while True:
        info = study.user_attrs.get(STUDY_ATTR)
        if info is not None or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def _check_same_settings(study: optuna.Study, config: SearchConfig) -> None:
    stored = study.user_attrs.get(STUDY_ATTR, {}).get("config")
    if stored is None:
        return
    now = config.to_dict()
    stored = {**_BEFORE_IT_EXISTED, **stored}
    for key, value in now.items():
        if key in _RESUMABLE or key not in stored:
            continue
        difference = _first_difference(key, _jsonish(stored[key]), _jsonish(value))
        if difference is not None:
            name, was, now_value = difference
            raise ConfigError(
                f"study {config.study!r} was made with {name}={_short(was)}, this run has "
                f"{name}={_short(now_value)}; rerun with the same settings to resume, or pass a new --study"
            )


# Nested settings that have a flag of their own: an error names the flag the user typed.
_FLAG_NAMES = {"recipe.num_train_epochs": "epochs", "pruner.name": "pruner", "sampler.name": "sampler"}


def _first_difference(name: str, was: Any, now: Any) -> tuple[str, Any, Any] | None:
    """The first setting, as a dotted name, whose value differs: ``recipe.learning_rate``."""
    if isinstance(was, dict) and isinstance(now, dict):
        for key in [*was, *(k for k in now if k not in was)]:
            difference = _first_difference(f"{name}.{key}", was.get(key), now.get(key))
            if difference is not None:
                return difference
        return None
    return None if was == now else (_FLAG_NAMES.get(name, name), was, now)


def _jsonish(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _stop_when_done(study: CountedStudy, trial: FrozenTrial) -> None:
    if study.done():
        study.stop()


def _requeue_interrupted_recipe(study: optuna.Study, config: SearchConfig) -> None:
    """Run the recipe again if its trial was interrupted or its worker died.

    Every comparison in the card and the note is against the recipe; a recipe trial that
    failed on its own (out of memory, NaN loss) is a result and is not repeated.
    """
    from hpsearch.training.space import recipe_params

    recipes = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("recipe")]
    if not recipes or any(t.state != TrialState.FAIL for t in recipes):
        return
    reason = str(recipes[-1].user_attrs.get("fail_reason", ""))
    if reason == "interrupted" or reason.startswith("worker "):
        study.enqueue_trial(recipe_params(config.recipe, config.space), user_attrs={"recipe": True})


class _FailureGuard:
    """Stops the study after ``limit`` consecutive failed trials."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.streak = 0
        self.tripped = False
        self.last_reason = ""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self.streak = 0
            return
        self.streak += 1
        self.last_reason = str(trial.user_attrs.get("fail_reason", "unknown"))
        if self.streak >= self.limit:
            self.tripped = True
            study.stop()


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Hide what lives for the whole run (libraries, data, the base model) from the collector.

    Each trial ends with ``gc.collect()`` to free its model; without this it walks every
    object torch and transformers made (about half a million: 0.25-0.6 s a trial on 2 CPUs).
    Objects a trial makes are not frozen, so they are still freed.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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


def _interrupts() -> contextlib.AbstractContextManager[None]:
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


def _quiet_libraries() -> None:
    """Keep transformers' and Optuna's chatter out of the progress display."""
    import warnings

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*enqueue.*")


def elapsed(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None:
        return None
    end = trial.datetime_complete or datetime.datetime.now()
    return (end - trial.datetime_start).total_seconds()

