"""How numbers and parameters read everywhere: the terminal, the dashboard, the report and the card."""

from __future__ import annotations

import math
from typing import Any, Protocol

# The short names every view gives the default space's parameters; any other parameter is
# shown by its TrainingArguments name. Short enough that the default table fits 120 columns.
PARAM_LABELS = {
    "learning_rate": "lr",
    "per_device_train_batch_size": "batch",
    "warmup_ratio": "warmup",
    "weight_decay": "decay",
}


class _Spread(Protocol):
    mean: float
    std: float | None


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): what a table may print and a mean may take."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float, however deep in dicts and lists, made None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def fmt_metric(value: Any, decimals: int = 4) -> str:
    """A number as the Trainer's cards print it (transformers.modelcard._maybe_round).

    Floats with more than ``decimals`` decimals are rounded and padded (0.63601 → "0.6360");
    shorter ones print as Python prints them (0.5 → "0.5", 1.0 → "1.0"); ints unchanged.
    """
    text = str(value)
    if isinstance(value, float) and "." in text and len(text.split(".")[1]) > decimals:
        return f"{value:.{decimals}f}"
    return text


def fixed4(value: Any) -> str:
    """A score with four decimals; anything else as text, nothing for None."""
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def param_label(name: str) -> str:
    """How every view names a searched parameter: ``lr`` for ``learning_rate``."""
    return PARAM_LABELS.get(name, name)


def format_param(value: Any) -> str:
    """A parameter value for tables and progress lines: 4 significant digits, nothing for None."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def format_params(params: dict[str, Any]) -> str:
    """``lr=8e-05  batch=16``: a trial's parameters on one line, by :func:`param_label`."""
    return "  ".join(f"{param_label(k)}={format_param(v)}" for k, v in params.items())


def count(n: float, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1: "1 complete trial", "0.5 standard errors"."""
    text = f"{n:g}" if isinstance(n, float) else str(n)
    return f"{text} {noun}" if n == 1 else f"{text} {noun}s"


def human_seconds(seconds: float) -> str:
    """``28.5s``, ``4m05s``, ``2h03m``: seconds under a minute, then two units."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def human_energy(kwh: float) -> str:
    """``0.4mWh``, ``138mWh``, ``12Wh``, ``1.2kWh``: energy in at most 6 characters (below 1000 kWh)."""
    value, unit = next(((kwh / s, u) for s, u in ((1e-6, "mWh"), (1e-3, "Wh")) if kwh / s < 999.5), (kwh, "kWh"))
    return f"{value:.1f}{unit}" if value < 9.95 else f"{value:.0f}{unit}"


def spread_text(spread: _Spread | None, *, missing: str = "") -> str:
    """``0.6012 ± 0.0101`` (sample standard deviation); one run has no ±; ``missing`` for none."""
    if spread is None:
        return missing
    return f"{spread.mean:.4f}" if spread.std is None else f"{spread.mean:.4f} ± {spread.std:.4f}"
