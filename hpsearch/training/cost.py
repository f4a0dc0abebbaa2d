"""What one trial cost: its wall time, its device time and, where codecarbon can tell, energy and CO2.

A :class:`CostMeter` runs around one trial, as ``with CostMeter() as meter:`` or between
``start()`` and ``stop()``, and gives a :class:`Cost`, stored on the trial under
:data:`hpsearch.schema.COST` (docs/schema.md):

- ``wall_seconds``: ``time.perf_counter`` from start to stop;
- ``device_seconds``: on a CPU, the process's CPU time (``time.process_time``, every thread, so
  up to the number of cores times the wall time); on CUDA, the time on the GPU between two CUDA
  events recorded at start and stop on the current stream, the span the trial held the GPU for;
- ``energy_kwh`` and ``co2_g``: codecarbon's ``OfflineEmissionsTracker``, which makes no network
  call, where codecarbon is installed (``pip install 'hpsearch[cost]'``); None otherwise.
  ``tracker`` says how it measured, ``hardware`` what it saw.

codecarbon is kept silent: its log records are swallowed while it runs (how it read the CPU's
power is taken from them, codecarbon has no public field for it), and it writes no file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from hpsearch import schema

# The grid whose average carbon intensity turns kWh into CO2 where codecarbon's own settings
# (CODECARBON_COUNTRY_ISO_CODE, or country_iso_code in a .codecarbon.config) name none.
DEFAULT_COUNTRY = "USA"
# codecarbon's default; its final reading at stop covers the time since the last one.
MEASURE_POWER_SECS = 15
# "process": CPU-load estimates and RAM are the process's share, so the trials of workers
# sharing a machine add up to it once. RAPL and GPU readings are the whole package or device.
TRACKING_MODE = "process"
_CPU_MODE = re.compile(r"Delta energy consumed for CPU with (\w+)")


@dataclass(frozen=True)
class Cost:
    """One trial's cost, as stored on it."""

    wall_seconds: float
    device_seconds: float | None
    energy_kwh: float | None = None  # None where codecarbon did not measure
    co2_g: float | None = None
    tracker: dict[str, Any] | None = None  # how codecarbon measured: version, country, power sources
    hardware: dict[str, Any] | None = None  # what it saw: CPU and GPU models and counts, RAM

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CostMeter:
    """Clocks, and a codecarbon tracker where one can run, around one trial."""

    def __init__(self, *, energy: bool = True) -> None:
        self.energy = energy
        self._wall = self._cpu = 0.0
        self._events: tuple[Any, Any] | None = None
        self._tracker: Any = None
        self._silencer = _Silencer()
        self._cost: Cost | None = None

    def __enter__(self) -> CostMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def cost(self) -> Cost | None:
        """The cost once stopped; None before."""
        return self._cost

    def start(self) -> CostMeter:
        import torch

        if torch.cuda.is_available():
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()
        self._tracker = _start_tracker(self._silencer) if self.energy else None
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def stop(self) -> Cost:
        """Stop the clocks and the tracker; a second call gives the same :class:`Cost`."""
        if self._cost is not None:
            return self._cost
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        device = self._gpu_seconds() if self._events is not None else cpu
        self._cost = Cost(wall_seconds=round(wall, 3), device_seconds=None if device is None else round(device, 3))
        if self._tracker is not None:
            self._cost = _with_energy(self._cost, self._tracker, self._silencer)
        return self._cost

    def _gpu_seconds(self) -> float | None:
        start, end = self._events  # type: ignore[misc]
        try:
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000  # milliseconds
        except RuntimeError:  # a CUDA error ended the trial: the GPU's clock is gone with it
            return None


def store_cost(trial: optuna.Trial, cost: Cost) -> None:
    """Store ``cost`` on the trial; not on one that another worker has already failed."""
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        schema.record_cost(trial, cost.to_dict())


class _Silencer(logging.Filter):
    """Keeps codecarbon's log records (from any thread) for reading, and out of every handler."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self._level: int | None = None

    def __enter__(self) -> _Silencer:
        log = logging.getLogger("codecarbon")
        self._level = log.level
        log.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        log = logging.getLogger("codecarbon")
        log.removeFilter(self)
        log.setLevel(self._level or logging.NOTSET)  # the tracker set it to info, for us to read

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(record.getMessage())
        return False


def _start_tracker(silencer: _Silencer) -> Any:
    """A started OfflineEmissionsTracker; None where codecarbon is missing or cannot start."""
    try:
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.core.config import get_hierarchical_config
    except ImportError:
        return None
    silencer.__enter__()
    try:
        configured = get_hierarchical_config().get("country_iso_code")
        tracker = OfflineEmissionsTracker(
            country_iso_code=configured or DEFAULT_COUNTRY,
            tracking_mode=TRACKING_MODE,
            measure_power_secs=MEASURE_POWER_SECS,
            save_to_file=False,
            allow_multiple_runs=True,  # else a lock file, and a second worker measures nothing
            log_level="info",  # what the silencer reads; nothing reaches a handler
        )
        tracker.start()
        return tracker
    except Exception:  # codecarbon says nothing of why here: the trial is timed without it
        silencer.__exit__()
        return None


def _with_energy(cost: Cost, tracker: Any, silencer: _Silencer) -> Cost:
    try:
        tracker.stop()
        data = getattr(tracker, "final_emissions_data", None)
    except Exception:
        data = None
    finally:
        silencer.__exit__()
    if data is None or not _finite(data.energy_consumed) or not _finite(data.emissions):
        return cost
    modes = [m.group(1) for m in map(_CPU_MODE.search, silencer.messages) if m]
    gpus = int(data.gpu_count or 0)
    return Cost(
        wall_seconds=cost.wall_seconds,
        device_seconds=cost.device_seconds,
        energy_kwh=float(data.energy_consumed),
        co2_g=float(data.emissions) * 1000,  # codecarbon gives kg
        tracker={
            "name": "codecarbon",
            "version": data.codecarbon_version,
            "tracking_mode": data.tracking_mode,
            "country_iso_code": data.country_iso_code,
            "country_name": data.country_name,
            # codecarbon's CPU mode: intel_rapl, intel_power_gadget, windows_emi (read from the
            # hardware), cpu_load, constant (estimated from a TDP table); None where it logged none.
            "cpu_power": modes[-1] if modes else None,
            "gpu_power": "sensor" if gpus else None,  # NVML or ROCm SMI: the board's own reading
            "ram_power": "estimate",  # codecarbon always estimates RAM from its size
            "parts_kwh": {k: _kwh(getattr(data, f"{k}_energy", None)) for k in ("cpu", "gpu", "ram")},
        },
        hardware={
            "cpu": data.cpu_model,
            "cpu_count": data.cpu_count,
            "gpu": data.gpu_model or None,
            "gpu_count": gpus,
            "ram_gb": round(float(data.ram_total_size), 1) if _finite(data.ram_total_size) else None,
        },
    )


def _kwh(value: Any) -> float | None:
    return float(value) if _finite(value) else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
