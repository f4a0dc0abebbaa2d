"""Several workers from one command: ``--workers N`` on the CPU, ``--devices`` on GPUs.

The parent writes its resolved settings to a file (:class:`WorkerSettings`: the
configuration, and the confirmation to chain, if any) and starts one ``hpsearch run
--worker-settings FILE`` process per worker, each pinned to its device with
``CUDA_VISIBLE_DEVICES`` (or given its share of the CPU cores), and relays their progress
lines on its stderr, each prefixed with the worker's label (``[cuda:1]``, ``[worker 2]``).
The workers share the study as any workers do (:mod:`hpsearch.search.loop`): together they
stop at exactly the total, then confirm together where asked. Ctrl-C or SIGTERM on the
parent reaches every worker once, so each records its running trial as interrupted.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hpsearch.config import SearchConfig, config_from_dict
from hpsearch.errors import ConfigError, HpsearchError
from hpsearch.files import write_atomically

# Set in a worker's environment: its label. A worker prints progress only; the parent
# prints the table of trials once every worker has ended.
WORKER_LABEL_ENV = "HPSEARCH_WORKER_LABEL"
_PR_SET_PDEATHSIG = 1  # prctl(2): a signal for the child when its parent dies


class WorkersFailed(HpsearchError):
    """Every worker of the pool ended in error."""

    exit_code = 1


@dataclass(frozen=True)
class Worker:
    label: str  # "[cuda:1]" or "[worker 2]"
    env: dict[str, str] = field(default_factory=dict)  # on top of the parent's environment


def plan(*, workers: int | None, devices: str | None, per_device: int, cuda_devices: int, cpus: int) -> list[Worker]:
    """The workers a pool starts.

    Args:
        workers: ``--workers``: this many processes on the CPU, each with its share of the cores.
        devices: ``--devices``: ``all`` or CUDA indices (``0``, ``0,2,3``).
        per_device: ``--workers-per-device``: workers on each listed device.
        cuda_devices: CUDA devices this machine has.
        cpus: CPU cores this process may use.

    Raises:
        ConfigError: both or neither asked for, a device this machine lacks, or no CUDA.
    """
    if per_device < 1:
        raise ConfigError(f"--workers-per-device: expected an integer >= 1, got {per_device}")
    if devices is not None and workers is not None:
        raise ConfigError("--workers and --devices: pass one (--workers for CPU processes, --devices for GPUs)")
    if devices is None:
        if workers is None or workers < 1:
            raise ConfigError(f"--workers: expected an integer >= 1, got {workers}")
        share = str(max(1, cpus // workers))
        return [Worker(f"[worker {i}]", {"OMP_NUM_THREADS": share, "CUDA_VISIBLE_DEVICES": ""}) for i in range(workers)]
    if cuda_devices == 0:
        raise ConfigError(f"--devices {devices}: this machine has no CUDA device; use --workers N for CPU processes")
    indices = _device_indices(devices, cuda_devices)
    return [
        Worker(f"[cuda:{d}]" if per_device == 1 else f"[cuda:{d}/{k}]", {"CUDA_VISIBLE_DEVICES": str(d)})
        for d in indices
        for k in range(per_device)
    ]


def _device_indices(text: str, available: int) -> list[int]:
    if text.strip() == "all":
        return list(range(available))
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--devices: expected all or CUDA indices such as 0,2,3, got {text!r}") from None
    missing = [d for d in indices if not 0 <= d < available]
    if not indices or missing or len(set(indices)) != len(indices):
        raise ConfigError(f"--devices {text}: this machine has CUDA devices 0 to {available - 1}, each listed once")
    return indices


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of a pool runs: the parent's resolved configuration and chain."""

    config: SearchConfig
    confirm_top: int | None = None  # confirm this many leaders on config.seeds seeds once the search holds its total

    def write(self, path: Path) -> None:
        body = {"config": self.config.to_dict(), "confirm_top": self.confirm_top}
        write_atomically(path, json.dumps(body, indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> WorkerSettings:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(config_from_dict(body["config"]), body["confirm_top"])


def run_pool(
    workers: Sequence[Worker], settings: WorkerSettings, *, write: Callable[[str], None], verbose: bool = False
) -> None:
    """Start the workers on ``settings``, relay their lines through ``write``, and wait for them all.

    Raises:
        KeyboardInterrupt: Ctrl-C or SIGTERM reached the parent; each worker got it once.
        WorkersFailed: every worker exited in error (the last line of each is given).
    """
    lock = threading.Lock()
    last: dict[str, str] = {}

    def relay(worker: Worker, stream: IO[str]) -> None:
        for line in stream:
            line = line.rstrip("\n")
            last[worker.label] = line or last.get(worker.label, "")
            with lock:
                write(f"{worker.label} {line}")

    with tempfile.TemporaryDirectory(prefix="hpsearch-pool-") as folder:
        path = Path(folder) / "settings.json"
        settings.write(path)
        argv = ["run", "--worker-settings", str(path), *(["--verbose"] if verbose else [])]
        procs = [_start(w, argv) for w in workers]
        threads = [
            threading.Thread(target=relay, args=(w, p.stderr), daemon=True) for w, p in zip(workers, procs, strict=True)
        ]
        for t in threads:
            t.start()
        with _forward_stops(procs) as stopped:
            codes = [p.wait() for p in procs]
        for t in threads:
            t.join()
    if stopped:
        raise KeyboardInterrupt
    errors = {last.get(w.label, "") for w in workers}
    if all(code == HpsearchError.exit_code for code in codes) and len(errors) == 1:
        # The same bad input in every worker: the one line it would be in a single process.
        raise HpsearchError(errors.pop().removeprefix("hpsearch: error: "))
    if all(code != 0 for code in codes):
        reasons = "; ".join(f"{w.label} exit {c}: {last.get(w.label, '')}" for w, c in zip(workers, codes, strict=True))
        raise WorkersFailed(f"every worker failed ({reasons})")


def _start(worker: Worker, argv: Sequence[str]) -> subprocess.Popen:
    env = {**os.environ, **worker.env, WORKER_LABEL_ENV: worker.label, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # Its own process group, so that a terminal's Ctrl-C reaches it once, through the parent.
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def _die_with_parent() -> None:
    """In the child: take SIGTERM when the parent dies (kill -9 included), so none is left behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def _forward_stops(procs: Sequence[subprocess.Popen]) -> Iterator[list[int]]:
    """While the block runs, pass the first SIGINT or SIGTERM on to every worker; yields the
    signals received (a second one is passed on too, and ends the workers at once)."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
