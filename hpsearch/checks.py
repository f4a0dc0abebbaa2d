"""The checks every setting goes through: what was expected, what was received, and the fix."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from hpsearch.errors import ConfigError


def metric_name(spec: str) -> str:
    """The name a metric's numbers are stored under: ``./metrics/balanced_accuracy.py`` and
    ``someone/balanced_accuracy`` both give ``balanced_accuracy``."""
    last = spec.rstrip("/\\").replace("\\", "/").split("/")[-1]
    return last[: -len(".py")] if last.endswith(".py") else last


def check_at_least(key: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer >= {low}, got {value!r}")
    if value < low:
        raise ConfigError(f"{key}: expected an integer >= {low}, got {value}")


def check_positive(key: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isinf(value):
        raise ConfigError(f"{key}: expected a positive number, got {value!r}")


def check_range(key: str, value: float, low: float, high: float, *, high_open: bool = False) -> None:
    bad = not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high
    if not bad and high_open and value == high:
        bad = True
    if bad:
        close = ")" if high_open else "]"
        raise ConfigError(f"{key}: expected a number in [{low:g}, {high:g}{close}, got {value!r}")


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}{hint}")


def unknown(full: str, key: str, known: list[str] | set[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return f"unknown key {full!r}{hint}"


def check_metrics(metrics: tuple[str, ...], builtin: tuple[str, ...]) -> None:
    names = [metric_name(m) for m in metrics]
    for spec, name in zip(metrics, names, strict=True):
        if not name.strip():
            raise ConfigError(f"metrics: expected evaluate module names or paths, got {spec!r}")
        if name in builtin:
            raise ConfigError(f"metrics: {name} is built in (scikit-learn, every epoch); remove {spec!r} from metrics")
    if len(set(names)) != len(names):
        raise ConfigError(f"metrics: each name once, got {list(metrics)}")


def check_objective(objective: str, metrics: tuple[str, ...], builtin: tuple[str, ...]) -> None:
    """A built-in score, or an added metric's stored name (``name`` or ``name_<key>``)."""
    names = [metric_name(m) for m in metrics]
    if objective in builtin or any(objective == n or objective.startswith(n + "_") for n in names):
        return
    check_choice("objective", objective, (*builtin, *names))


def check_report_to(report_to: tuple[str, ...]) -> None:
    if not report_to or any(not isinstance(r, str) or not r.strip() for r in report_to):
        raise ConfigError(f'report_to: expected tracker names ("none", "tensorboard", ...), got {list(report_to)}')
    if len(report_to) > 1 and ("none" in report_to or "all" in report_to):
        raise ConfigError(f'report_to: "none" and "all" stand alone, got {list(report_to)}')


def check_adapter_names(names: list[str], enabled: bool, prefix: str, searchable: tuple[str, ...]) -> None:
    """``[space]`` names of adapter settings (``peft_r``): only with ``[peft]``, and only the searchable ones."""
    for name in (n for n in names if n.startswith(prefix)):
        if not enabled:
            raise ConfigError(f"space.{name}: searching an adapter setting needs [peft] (or --peft lora)")
        if name.removeprefix(prefix) not in searchable:
            raise ConfigError(unknown(f"space.{name}", name, [prefix + k for k in searchable]))


def typed_fields(
    data: Mapping[str, Any], cls: type, prefix: str | None, skip: set[str] = frozenset()
) -> dict[str, Any]:
    """Check keys against ``cls``'s fields and values against their annotated types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in skip and f.name != "extra"]
    out = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(unknown(full, key, names + sorted(skip)))
        out[key] = check_type(full, value, hints[key])
    return out


def check_type(key: str, value: Any, hint: Any) -> Any:
    """``value`` as the annotated type ``hint`` takes it (an int for a float, a list as a tuple)."""
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    if value is None and optional:
        return None
    hint = next((h for h in typing.get_args(hint) if typing.get_origin(h) is tuple), hint) if optional else hint
    if typing.get_origin(hint) is tuple:  # a list of strings: metrics, report_to, peft.target_modules
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{key}: expected a list of strings, got {type(value).__name__} {value!r}")
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t in (str, bool) and isinstance(value, t):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed if t is not type(None))
    raise ConfigError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")
