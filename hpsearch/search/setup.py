"""What every trial of a run shares, checked and made once: the search's and the confirmation's.

:func:`prepare` checks every input before it writes anything, so that a typo is reported
as itself, then loads the data, tokenizes it once, loads the tokenizer and the base model
once, and sets the process's threads and allocator. The search (:mod:`hpsearch.search.loop`)
and the confirmation (:mod:`hpsearch.search.confirm`) both start from what it returns, so a
chained ``run --confirm-top`` loads nothing twice.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from hpsearch.config import BUILTIN_DATASET, SearchConfig
from hpsearch.data import load_task, tokenize_task
from hpsearch.hooks import Hooks
from hpsearch.hub import offline_if_unreachable
from hpsearch.schema import DataFacts
from hpsearch.search.storage import check_url
from hpsearch.search.study import check_resumable
from hpsearch.training.adapters import check_peft
from hpsearch.training.evaluate_metrics import prepare_metrics
from hpsearch.training.modeling import (
    ModelSource,
    configure_allocator,
    configure_threads,
    load_base_model,
    load_tokenizer,
    resolve_model,
    resolve_precision,
)
from hpsearch.training.objective import Resources
from hpsearch.training.space import check_training_argument_names, recipe_params
from hpsearch.training.trackers import check_trackers


@dataclass(frozen=True)
class Prepared:
    """A run's checked configuration and what its trials share."""

    config: SearchConfig  # with ``precision`` resolved to what this machine computes in
    hooks: Hooks
    source: ModelSource
    recipe: dict[str, Any]  # trial 0's parameters: the recipe's values of the searched ones
    resources: Resources
    data: DataFacts


def prepare(config: SearchConfig, hooks: Hooks) -> Prepared:
    """Check ``config`` against this machine and the study it names, then make what trials share.

    Raises:
        HpsearchError: Bad input, found before any study, folder or file is made.
    """
    check_url(config.storage)
    # Stored resolved, so that a study resumed on other hardware is refused, not mixed.
    config = dataclasses.replace(config, precision=resolve_precision(config.precision).name)
    source = resolve_model(config.model)
    if not source.local or not (config.dataset == BUILTIN_DATASET or Path(config.dataset).exists()):
        offline_if_unreachable()
    quiet_libraries()
    check_peft(config.peft)
    check_training_argument_names(config.recipe, config.space, own_parameters=hooks.model_init is not None)
    recipe = recipe_params(config.recipe, config.space, config.peft)  # trial 0 must fit the space
    task = load_task(config)
    labels = task.splits["validation"]["label"]
    metrics = prepare_metrics(config.metrics, config.objective, labels=labels, n_labels=task.num_labels)
    check_trackers(config.report_to)
    tokenizer = load_tokenizer(source, config)
    check_resumable(config, hooks)  # before the slow part: tokens and weights
    tokenized = tokenize_task(task, tokenizer, config.max_length)
    base_model = load_base_model(source, config, task.label_names)
    configure_threads()
    configure_allocator()
    resources = Resources(task, tokenized, tokenizer, base_model, metrics)
    return Prepared(config, hooks, source, recipe, resources, task.facts())


def quiet_libraries() -> None:
    """Keep transformers' and Optuna's chatter out of the progress display."""
    from transformers.utils import logging as hf_logging

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*enqueue.*")
