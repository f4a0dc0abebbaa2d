"""hpsearch: search the hyperparameters of a transformers fine-tune around a base recipe.

The data flow, a module or package each: :mod:`~hpsearch.config` (the recipe, the search
space and every setting) → :mod:`~hpsearch.data` → :mod:`hpsearch.training` (space, model,
metrics, the objective: one Trainer fine-tune per trial) → :mod:`hpsearch.search` (storage,
locks, workers, pruners, the study and its loop, the best model) → :mod:`hpsearch.card` and
:mod:`hpsearch.views` (progress, trials, plots, report, dashboard) → :mod:`~hpsearch.cli`.
Everything stored goes through :mod:`~hpsearch.schema`.

Heavy libraries (torch, transformers) are imported only where training happens.
"""

from __future__ import annotations

__version__ = "0.1.0"

from hpsearch.config import DEFAULT_SPACE, Param, PrunerConfig, Recipe, SamplerConfig, SearchConfig, load_config
from hpsearch.errors import CardError, ConfigError, DataError, HpsearchError, ModelError, SearchStopped, StorageError

__all__ = [
    "DEFAULT_SPACE",
    "CardError",
    "ConfigError",
    "DataError",
    "HpsearchError",
    "ModelError",
    "Param",
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
        from hpsearch.search.loop import run_search

        return run_search
    if name == "run_confirm":
        from hpsearch.search.confirm import run_confirm

        return run_confirm
    raise AttributeError(name)
