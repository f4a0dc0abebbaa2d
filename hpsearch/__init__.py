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
    "SamplerConfig",
    "SearchConfig",
    "SearchStopped",
    "StorageError",
    "__version__",
    "load_config",
    "run_confirm",
    "run_search",
]


def __getattr__(name: str):  # lazy: `import hpsearch` stays light
    if name == "run_search":
        from hpsearch.search.loop import run_search

        return run_search
    if name == "run_confirm":
        from hpsearch.search.confirm import run_confirm

        return run_confirm
    raise AttributeError(name)
