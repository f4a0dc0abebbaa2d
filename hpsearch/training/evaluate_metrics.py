"""Added metrics: any ``evaluate`` module, scored every epoch beside the built-in five.

F1, accuracy, precision, recall and ROC AUC are computed with scikit-learn
(:mod:`hpsearch.training.metrics`), so the default run needs no network. A name in
``metrics`` (``--metric``) loads with ``evaluate.load``: a local module (a folder holding
``<name>.py``, or the ``.py`` file itself), a Hub module when the Hub answers, or the copy in
evaluate's modules cache offline. Each is loaded and tried once on the validation labels
before any training, so a name that cannot load or compute is one error line.

What a module returns is a dict. Its numbers are stored in every epoch row under the
metric's name: the name itself where the dict holds one number (or for the entry named
like the metric), ``<name>_<key>`` for each other number; entries that are not numbers
(lists, arrays) are left out. ``average`` is passed where the module's ``_compute`` takes
it: ``"binary"`` for two classes, ``"macro"`` for more, as the built-in scores average.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.checks import metric_name
from hpsearch.errors import ConfigError, first_line
from hpsearch.hub import is_offline
from hpsearch.schema import METRICS, ROW_KEYS


def is_local(spec: str) -> bool:
    """Whether ``spec`` names a module on disk rather than on the Hub."""
    return spec.startswith((".", "/", "~")) or spec.endswith(".py") or Path(spec).expanduser().exists()


@dataclass
class AddedMetric:
    """One loaded ``evaluate`` module and the name its numbers are stored under."""

    spec: str  # as the user gave it
    name: str
    module: Any  # evaluate.EvaluationModule
    takes_average: bool

    def compute(self, predictions: np.ndarray, references: np.ndarray, average: str) -> dict[str, float]:
        kwargs = {"average": average} if self.takes_average else {}
        result = self.module.compute(predictions=predictions, references=references, **kwargs)
        return flatten(self.name, result)


def flatten(name: str, result: Any) -> dict[str, float]:
    """A module's result as stored keys (see the module docstring); NaN stays NaN."""
    if _number(result):
        return {name: float(result)}
    if not isinstance(result, Mapping):
        return {}
    numbers = {str(k): float(v) for k, v in result.items() if _number(v)}
    if len(numbers) == 1:
        return {name: next(iter(numbers.values()))}
    return {(name if key == name else f"{name}_{key}"): value for key, value in numbers.items()}


def load_metrics(specs: Sequence[str], *, labels: Sequence[int], n_labels: int) -> list[AddedMetric]:
    """Load every added metric and try it once on ``labels`` (the validation labels).

    Raises:
        ConfigError: A module that cannot be found, imported or computed, or whose numbers
            would be stored under a key every row already has. One line, before training.
    """
    if not specs:
        return []
    average = "binary" if n_labels == 2 else "macro"
    out = []
    for spec in specs:
        metric = AddedMetric(spec, metric_name(spec), module := _load(spec), _takes_average(module))
        references = np.asarray(labels, dtype=np.int64)
        try:
            keys = metric.compute(references, references, average)
        except Exception as e:
            raise ConfigError(
                f"metric {spec!r} loads but does not compute on class ids (predictions, references): {first_line(e)}"
            ) from None
        if not keys:
            raise ConfigError(
                f"metric {spec!r} returned no number for class ids (predictions, references); "
                "pass a classification metric"
            )
        taken = sorted(k for k in keys if k in ROW_KEYS)
        if taken:
            raise ConfigError(
                f"metric {spec!r} would store {', '.join(taken)}, which every epoch row has already; rename the module"
            )
        out.append(metric)
    return out


def prepare_metrics(specs: Sequence[str], objective: str, *, labels: Sequence[int], n_labels: int) -> list[AddedMetric]:
    """Load the added metrics (:func:`load_metrics`) and check that ``objective`` is a key
    they store, where it is not a built-in score.

    Raises:
        ConfigError: As :func:`load_metrics`, or an objective no metric stores.
    """
    metrics = load_metrics(specs, labels=labels, n_labels=n_labels)
    average = "binary" if n_labels == 2 else "macro"
    references = np.asarray(labels, dtype=np.int64)
    keys = [key for m in metrics for key in m.compute(references, references, average)]
    if objective not in METRICS and objective not in keys:
        raise ConfigError(f"objective: expected one of {', '.join((*METRICS, *keys))}, got {objective!r}")
    return metrics


def modules_cache() -> Path:
    """Where ``evaluate`` keeps the modules it has loaded, and looks for them offline."""
    import evaluate

    return Path(evaluate.config.HF_MODULES_CACHE) / "evaluate_modules"


def _load(spec: str) -> Any:
    local = is_local(spec)
    path = Path(spec).expanduser()
    if local and not path.exists():
        raise ConfigError(
            f"metric {spec!r}: no folder or .py file at {path.resolve()}; "
            "pass a local evaluate module, or a Hub metric name"
        )
    offline = is_offline()
    import evaluate

    if offline:
        evaluate.config.HF_EVALUATE_OFFLINE = True
    try:
        return evaluate.load(str(path) if local else spec)
    except Exception as e:
        if local:
            raise ConfigError(f"metric {spec!r} does not load as an evaluate module: {first_line(e)}") from None
        if offline:
            raise ConfigError(
                f"metric {spec!r} cannot be loaded offline: it is not in evaluate's modules cache "
                f"({modules_cache()}); load it once online, or pass a local module (a folder or .py file)"
            ) from None
        raise ConfigError(f"metric {spec!r} cannot be loaded: {first_line(e)}") from None


def _takes_average(module: Any) -> bool:
    try:
        return "average" in inspect.signature(module._compute).parameters
    except (TypeError, ValueError, AttributeError):
        return False


def _number(value: Any) -> bool:
    if isinstance(value, np.generic) and value.shape == ():
        value = value.item()
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and (math.isfinite(value) or math.isnan(value))
    )
