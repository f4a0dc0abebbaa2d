"""hpsearch: search the hyperparameters of a transformers fine-tune around a base recipe.

The data flows one way: the configuration (:mod:`~hpsearch.config`: the recipe, the space,
every setting) → the data (:mod:`~hpsearch.data`) → one Trainer fine-tune per trial
(:mod:`hpsearch.training`) → the study, its workers and its confirmation
(:mod:`hpsearch.search`) → what people read (:mod:`hpsearch.views`: progress, trials,
plots, report, dashboard; :mod:`hpsearch.card`: the model card) → :mod:`~hpsearch.cli`.
Everything stored goes through :mod:`~hpsearch.schema`; the statistics that judge a
result (scores, intervals, seeds, the verdict) are :mod:`hpsearch.analysis`, read-only.

Layers, lowest first; a module imports only from layers below its own (tests/test_layout.py):

    errors → builtin, checks, files, formatting, hub → schema → config → events, hooks, layout → bestmodel
    → analysis → data → training → search → views → card → cli → __main__

Heavy libraries (torch, transformers) are imported only where training happens.
"""

from __future__ import annotations

__version__ = "0.1.0"

from hpsearch.config import (
    DEFAULT_SPACE,
    Param,
    PeftConfig,
    PrunerConfig,
    Recipe,
    SamplerConfig,
    SearchConfig,
    load_config,
)
from hpsearch.errors import CardError, ConfigError, DataError, HpsearchError, ModelError, SearchStopped, StorageError

__all__ = [
    "DEFAULT_SPACE",
    "CardError",
    "ConfigError",
    "DataError",
    "HpsearchError",
    "Marker",
    "ModelError",
    "Param",
    "PeftConfig",
    "PrunerConfig",
    "Recipe",
    "RunInfo",
    "RunListener",
    "SamplerConfig",
    "SearchConfig",
    "SearchStopped",
    "StorageError",
    "__version__",
    "load_base_model",
    "load_config",
    "load_task",
    "load_tokenizer",
    "packaged_default_model",
    "resolve_model",
    "run_confirm",
    "run_search",
    "tokenize_task",
]

# Public names defined in modules that `import hpsearch` does not load: the module of each.
_LAZY = {
    "Marker": "hpsearch.bestmodel",
    "RunInfo": "hpsearch.events",
    "RunListener": "hpsearch.events",
    "load_base_model": "hpsearch.training.modeling",
    "load_task": "hpsearch.data",
    "load_tokenizer": "hpsearch.training.modeling",
    "packaged_default_model": "hpsearch.training.modeling",
    "resolve_model": "hpsearch.training.modeling",
    "tokenize_task": "hpsearch.data",
}


def __getattr__(name: str):  # lazy: `import hpsearch` stays light
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "run_search":
        from hpsearch.search.run import run_search

        return run_search
    if name == "run_confirm":
        from hpsearch.search.run import run_confirm

        return run_confirm
    raise AttributeError(name)
