"""The search space around the recipe, and the TrainingArguments each trial trains with."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from hpsearch.config import PEFT_PREFIX, Param, PeftConfig, Recipe
from hpsearch.errors import ConfigError

if TYPE_CHECKING:
    import optuna

# Names the user writes that transformers 5 spells differently: the warm-up is a float
# warmup_steps in [0, 1) there, read as a fraction of all training steps.
_ALIASES = {"warmup_ratio": "warmup_steps"}


def suggest(trial: optuna.Trial, space: tuple[Param, ...]) -> dict[str, Any]:
    """Ask the trial for one value of every searched parameter."""
    params: dict[str, Any] = {}
    for p in space:
        if p.choices is not None:
            params[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.is_int:
            params[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    return params


def recipe_params(recipe: Recipe, space: tuple[Param, ...], peft: PeftConfig | None = None) -> dict[str, Any]:
    """The recipe's own value of every searched parameter: trial 0 of every study. An adapter
    setting's (``peft_r``) is the ``[peft]`` table's."""
    adapter = {f"{PEFT_PREFIX}{k}": v for k, v in vars(peft).items()} if peft is not None else {}
    values = {**recipe.values(), **adapter}
    defaults = _training_arguments_defaults()
    params = {p.name: values.get(p.name, defaults.get(_ALIASES.get(p.name, p.name))) for p in space}
    for p in space:
        if p.name not in defaults and p.name not in _ALIASES and p.name not in values:
            raise ConfigError(
                f"space.{p.name}: a parameter of your own needs its recipe value ([recipe] {p.name} = ...); "
                "trial 0 is the recipe"
            )
    for p in space:
        if p.choices is not None and params[p.name] not in p.choices:
            # Optuna can only enqueue a categorical value that is one of the choices.
            choices = ", ".join(map(str, p.choices))
            raise ConfigError(
                f"space.{p.name}: the recipe's value {params[p.name]!r} is not among the choices ({choices}); "
                f"trial 0 is the recipe, so add it to the choices or set recipe.{p.name} to one of them"
            )
    return params


def training_values(recipe: Recipe, params: dict[str, Any]) -> dict[str, Any]:
    """The recipe with the trial's parameters applied, in the recipe's own names."""
    return {**recipe.values(), **params}


def split_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(TrainingArguments values, your own)``: names TrainingArguments does not take are
    parameters of your own, for a ``model_init`` hook (docs/python.md); the adapter's
    settings (``peft_r``) are neither, and go to :func:`adapter_values`."""
    known = set(_training_arguments_defaults()) | set(_ALIASES)
    own = {k: v for k, v in values.items() if k not in known and not k.startswith(PEFT_PREFIX)}
    return {k: v for k, v in values.items() if k in known}, own


def adapter_values(peft: PeftConfig, values: dict[str, Any]) -> dict[str, Any]:
    """The trial's LoRA settings: the ``[peft]`` table with the searched ones (``peft_r``) applied."""
    searched = {k.removeprefix(PEFT_PREFIX): v for k, v in values.items() if k.startswith(PEFT_PREFIX)}
    return {**vars(peft), **searched}


def training_arguments_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """Rename user-facing names to what ``TrainingArguments`` takes."""
    return {_ALIASES.get(k, k): v for k, v in values.items()}


def check_training_argument_names(recipe: Recipe, space: tuple[Param, ...], *, own_parameters: bool = False) -> None:
    """Every fixed or searched name must be a TrainingArguments parameter, unless a
    ``model_init`` hook takes parameters of its own (``own_parameters``)."""
    known = set(_training_arguments_defaults()) | set(_ALIASES)
    adapter = {p.name for p in space if p.name.startswith(PEFT_PREFIX)}  # checked with the configuration
    for name in [*recipe.extra, *(p.name for p in space if p.name not in adapter)]:
        if name.startswith(PEFT_PREFIX):
            raise ConfigError(
                f"recipe.{name}: an adapter setting goes in [peft] ({name.removeprefix(PEFT_PREFIX)} = ...)"
            )
        if name not in known and not own_parameters:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            own = " (a parameter of your own needs a model_init hook: docs/python.md)"
            raise ConfigError(f"{name!r} is not a TrainingArguments parameter{hint}{own}")


def _training_arguments_defaults() -> dict[str, Any]:
    import dataclasses

    from transformers import TrainingArguments

    return {f.name: f.default for f in dataclasses.fields(TrainingArguments) if f.init}
