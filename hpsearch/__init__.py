"""hpsearch: search the hyperparameters of a transformers fine-tune around a base recipe.

The data flow, one module each: :mod:`~hpsearch.config` (the recipe, the search space and
every setting) → :mod:`~hpsearch.data` → :mod:`~hpsearch.training.space` → :mod:`~hpsearch.training.objective`
(one Trainer fine-tune per trial) → :mod:`~hpsearch.search.study` (storage, sampler, pruner (:mod:`~hpsearch.search.pruners`), the
loop; :mod:`~hpsearch.search.workers` for several workers on one study) → :mod:`~hpsearch.card.render` and the inspection views → :mod:`~hpsearch.cli`.

Heavy libraries (torch, transformers) are imported only where training happens.
"""

from __future__ import annotations

__version__ = "0.1.0"

from hpsearch.config import DEFAULT_SPACE, Param, PrunerConfig, Recipe, SamplerConfig, SearchConfig, load_config
from hpsearch.errors import CardError, ConfigError, DataError, HpsearchError, ModelError, SearchStopped, StorageError

__all__ = [
    "DEFAULT_SPACE",
    "AlignedMedianPruner",
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
    "run_search",
]


def __getattr__(name: str):  # lazy: `import hpsearch` stays light
    if name == "AlignedMedianPruner":
        from hpsearch.search.pruners import AlignedMedianPruner

        return AlignedMedianPruner
    if name == "run_search":
        from hpsearch.search.study import run_search

        return run_search
    raise AttributeError(name)
