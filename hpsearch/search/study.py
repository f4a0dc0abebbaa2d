"""The study: created with the recipe as trial 0, or resumed with the same settings.

A resumed study must have been made with the same settings, or its trials would not
compare; :func:`check_resumable` says which setting differs before any work starts.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpsearch import schema
from hpsearch.analysis.seeds import Confirmation, read_confirmation, read_race
from hpsearch.config import SamplerConfig, SearchConfig
from hpsearch.errors import ConfigError, StorageError
from hpsearch.hooks import Hooks, describe
from hpsearch.schema import DataFacts, StudySettings
from hpsearch.search.pruners import build_pruner
from hpsearch.search.storage import open_storage, redact, sqlite_path

# Settings a resumed study may change; any other difference would mix incomparable trials.
_RESUMABLE = {"trials", "timeout", "storage", "storage_timeout", "workdir", "max_failures", "study", "report_to"}
# Nested settings that have a flag of their own: an error names the flag the user typed.
_FLAG_NAMES = {"recipe.num_train_epochs": "epochs", "pruner.name": "pruner", "sampler.name": "sampler"}
# Seconds a worker that finds the study just made waits for its maker to store the settings.
_SETUP_WAIT = 10.0


def build_sampler(config: SamplerConfig) -> optuna.samplers.BaseSampler:
    if config.name == "tpe":
        return optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=config.startup_trials)
    if config.name == "qmc":
        return optuna.samplers.QMCSampler(seed=config.seed, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=config.seed)


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
    for name, dist in (
        ("Transformers", "transformers"),
        ("Pytorch", "torch"),
        ("Datasets", "datasets"),
        ("Tokenizers", "tokenizers"),
        ("Optuna", "optuna"),
        ("hpsearch", "hpsearch"),
    ):
        try:
            out[name] = version(dist)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def check_resumable(config: SearchConfig, hooks: Hooks) -> None:
    """Refuse, before any work, to resume a study made with other settings, hooks or another schema."""
    path = sqlite_path(config.storage)
    if path is not None and not path.is_file():
        return
    if config.storage.startswith("journal:") and not Path(config.storage[len("journal:") :]).is_file():
        return
    try:
        study = optuna.load_study(study_name=config.study, storage=open_storage(config.storage, create=False))
    except KeyError:
        return  # no such study yet: it will be created
    if schema.has_settings(study):
        _check_same_settings(schema.read_settings(study), config, hooks)


def create_or_resume(
    storage: Any,
    config: SearchConfig,
    *,
    recipe: dict[str, Any],
    data: DataFacts,
    base_model: str,
    hooks: Hooks,
    pruner: Any = None,
) -> optuna.Study:
    """Create the study with the recipe as trial 0, or join it.

    Workers that start together race to create the study; the storage lets exactly one win
    (the others get ``DuplicatedStudyError``), and only the winner enqueues the recipe, so
    a study holds one recipe trial. The winner stores the settings last; the others wait
    for them, then check theirs against them.

    Args:
        recipe: The recipe's value of every searched parameter (trial 0).
        pruner: Replaces the configured pruner (research runs in benchmarks/).
    """
    sampler = build_sampler(config.sampler)
    pruner = pruner or build_pruner(config.pruner, config.epochs)
    try:
        study = optuna.create_study(
            study_name=config.study, storage=storage, sampler=sampler, pruner=pruner, direction="maximize"
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=config.study, storage=storage, sampler=sampler, pruner=pruner)
        # A joining worker with the same seed would sample the very parameters the first one did.
        study.sampler.reseed_rng()
        if _wait_for_settings(study):
            _check_same_settings(schema.read_settings(study), config, hooks)
            return study
    # A new study, or one whose maker died before storing its settings.
    study.set_metric_names([schema.objective_metric_name(config.objective)])
    if not study.trials:
        study.enqueue_trial(recipe, user_attrs=schema.recipe_attrs())
    settings = StudySettings(
        config=config.to_dict() | {"storage": redact(config.storage)},
        data=data,
        base_model=base_model,
        versions=versions(),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        hooks=hooks.names(),
    )
    schema.write_settings(study, settings)
    return study


def requeue_lost_recipe(study: optuna.Study, recipe: dict[str, Any]) -> bool:
    """Enqueue the recipe again when every recipe trial of the study failed.

    Every comparison in the card and the notes is against the recipe, so a study must not
    lose it: whatever ended it (an interruption, a dead worker, an error), it runs again.
    """
    recipes = [t for t in study.get_trials(deepcopy=False) if schema.is_recipe(t)]
    if not recipes or any(t.state != TrialState.FAIL for t in recipes):
        return False
    study.enqueue_trial(recipe, user_attrs=schema.recipe_attrs())
    return True


def _wait_for_settings(study: optuna.Study) -> bool:
    deadline = time.monotonic() + _SETUP_WAIT
    while not schema.has_settings(study):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def check_hooks(stored: StudySettings, study: str, hooks: Hooks) -> None:
    """Refuse hooks whose names differ from those the study was run with (they cannot be stored)."""
    if stored.hooks != hooks.names():
        raise ConfigError(
            f"study {study!r} was run with hooks {describe(stored.hooks)}, this run has "
            f"{describe(hooks.names())}; pass the same hooks to resume (docs/python.md), or pass a new --study"
        )


def _check_same_settings(stored: StudySettings, config: SearchConfig, hooks: Hooks) -> None:
    check_hooks(stored, config.study, hooks)
    for key, value in config.to_dict().items():
        if key in _RESUMABLE:
            continue
        difference = _first_difference(key, _jsonish(stored.config.get(key)), _jsonish(value))
        if difference is not None:
            name, was, now = difference
            raise ConfigError(
                f"study {config.study!r} was made with {name}={_short(was)}, this run has "
                f"{name}={_short(now)}; rerun with the same settings to resume, or pass a new --study"
            )


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
    return json.loads(json.dumps(value, default=str))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def open_confirmation(search: optuna.Study, storage_url: str) -> Confirmation | None:
    """What the study's ``.confirm`` sibling in the same storage holds: the confirmation of
    ``hpsearch confirm`` where one was planned, else the race of ``run --seeds S``, else None."""
    storage = open_storage(storage_url, create=False)
    name = schema.confirm_study_name(search.study_name)
    try:
        confirm = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    return read_confirmation(search, confirm) or read_race(search, confirm)
