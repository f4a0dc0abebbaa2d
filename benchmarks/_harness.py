"""What every benchmark shares: machine facts, exclusive-time buckets, child processes.

Benchmarks run each measured side (hpsearch, a hand-written loop, a plain Trainer) in a
fresh Python process, so that start-up imports count where they are paid. The sides run
in lockstep (:class:`Lockstep`): all are started, but only one works at a time, and they
take turns at every epoch (A B, then B A, ...), so that a change in the machine's load
(other people's jobs on a shared machine) hits every side alike. Each child prints one
JSON line prefixed with ``RESULT `` on stdout, which the parent reads back.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"  # JSON of every run; RESULTS.md quotes them
SMS_SPAM = REPO.parent / "shared" / "data" / "sms_spam"
RESULT_PREFIX = "RESULT "
# hpsearch's heap settings for a CPU search (docs/configuration.md, "The process"), in glibc's
# environment spelling: no block mapped on its own, the heap's freed top kept up to 1 GiB. A
# side that is not hpsearch (a hand-written loop, a micro-measurement) gets them this way.
HEAP_SETTINGS_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ("model name", "flags", "cpu MHz", ...); empty off Linux."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines()) if k.strip()}


def machine() -> dict[str, Any]:
    """The facts a reader needs to weigh a timing: CPU, cores, memory, load, versions."""
    info = cpuinfo()
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    from importlib.metadata import version

    flags = set(info.get("flags", "").split())
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_flags_of_note": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        "host": platform.node(),
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_family_model": f"{info['cpu family']}/{info['model']}"
        if "cpu family" in info and "model" in info
        else None,
        "cpu_mhz": float(info["cpu MHz"]) if "cpu MHz" in info else None,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "versions": {d: version(d) for d in ("torch", "transformers", "optuna", "accelerate", "datasets")},
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- buckets


class Buckets:
    """Exclusive wall time per named bucket: time in a nested bucket leaves its parent's.

    ``wrap(owner, "name", "bucket")`` replaces ``owner.name`` with a timed version; a
    missing attribute is skipped, so one profile fits code that has been refactored.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)  # process CPU time (all threads)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[Any]] = []  # [bucket, started, nested, cpu_started, cpu_nested]

    @contextmanager
    def bucket(self, name: str) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # Optuna's heartbeat thread: its storage calls overlap the main thread's work
            return
        self._stack.append([name, time.perf_counter(), 0.0, time.process_time(), 0.0])
        try:
            yield
        finally:
            end, cpu_end = time.perf_counter(), time.process_time()
            _, started, nested, cpu_started, cpu_nested = self._stack.pop()
            self.seconds[name] += end - started - nested
            self.cpu[name] += cpu_end - cpu_started - cpu_nested
            self.calls[name] += 1
            if self._stack:
                self._stack[-1][2] += end - started
                self._stack[-1][4] += cpu_end - cpu_started

    def current(self) -> str | None:
        """The innermost bucket running on the main thread, if any."""
        return self._stack[-1][0] if self._stack else None

    def wrap(self, owner: Any, name: str, bucket: str | Callable[..., str]) -> bool:
        original = getattr(owner, name, None)
        if original is None:
            return False
        if isinstance(owner, type):
            # A name the class only has from object or type (``__call__`` on a class that
            # defines none is the class's constructor) is not the method meant.
            if not any(name in vars(k) for k in owner.__mro__ if k is not object):
                return False
            if isinstance(owner.__dict__.get(name), (staticmethod, classmethod)):
                return False

        setattr(owner, name, self.timed(original, bucket))
        return True

    def timed(self, original: Callable[..., Any], bucket: str | Callable[..., str]) -> Callable[..., Any]:
        """``original`` counted in ``bucket`` (a name, or a function of the call's arguments)."""

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            label = bucket(*args, **kwargs) if callable(bucket) else bucket
            with self.bucket(label):
                return original(*args, **kwargs)

        return timed

    def wrap_public_methods(self, obj: Any, bucket: str, *, detail: bool = False) -> None:
        """Time every public method of one object (a storage), counting nested calls once.

        With ``detail`` each method has its own bucket, ``"<bucket>: <method>"``.
        """
        depth = threading.local()  # per thread: a heartbeat thread's call must not hide the main thread's
        for name in dir(obj):
            if name.startswith("_"):
                continue
            method = getattr(obj, name, None)
            if not callable(method):
                continue

            def timed(*args: Any, _m: Any = method, _name: str = name, **kwargs: Any) -> Any:
                if getattr(depth, "n", 0):
                    return _m(*args, **kwargs)
                depth.n = 1
                try:
                    with self.bucket(f"{bucket}: {_name}" if detail else bucket):
                        return _m(*args, **kwargs)
                finally:
                    depth.n = 0

            try:
                setattr(obj, name, timed)
            except (AttributeError, TypeError):
                pass

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            k: {"s": round(v, 4), "cpu_s": round(self.cpu[k], 4), "calls": self.calls[k]}
            for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])
        }


# --------------------------------------------------------------------------- children


def emit(result: dict[str, Any]) -> None:
    """A child's last word: one JSON line the parent picks out of stdout."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def dispatch(args: Any, parent: Callable[[Any], None], **children: Callable[[Any], dict[str, Any]]) -> None:
    """Run this process's part of a benchmark: the child role named by ``args.role``, its
    result emitted for the parent, or the parent itself for any other role."""
    child = children.get(args.role)
    if child is None:
        parent(args)
    else:
        emit(child(args))


class Lockstep:
    """Run child processes one at a time, handing the machine from one to the next.

    A child calls :func:`gate` where it may pause (at start, before each trial); the
    parent resumes one child at a time and times each stretch from outside. A child's
    ``wall_s`` is its start (spawn to first gate: interpreter start) plus its stretches.
    """

    def __init__(self) -> None:
        self.children: list[dict[str, Any]] = []

    def add(
        self,
        name: str,
        args: Sequence[str],
        *,
        src: str | None = None,
        cwd: str | Path,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        go_r, go_w = os.pipe()
        st_r, st_w = os.pipe()
        child_env = _child_env(src, env)
        child_env["BENCH_GATE"] = f"{go_r},{st_w}"
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "w", encoding="utf-8")
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=child_env, stdout=out, stderr=subprocess.STDOUT, pass_fds=(go_r, st_w)
        )
        os.close(go_r)
        os.close(st_w)
        child = {
            "name": name,
            "proc": proc,
            "go": go_w,
            "status": st_r,
            "log": log,
            "out": out,
            "stretches": [],
            "done": False,
        }
        if not os.read(st_r, 1):  # the first gate: the interpreter is up
            self._finish(child)
        child["start_s"] = time.perf_counter() - started
        self.children.append(child)

    def step(self, name: str) -> bool:
        """Let one child run to its next gate; False once it has exited."""
        child = next(c for c in self.children if c["name"] == name)
        if child["done"]:
            return False
        load = loadavg()[0]
        started = time.perf_counter()
        os.write(child["go"], b"g")
        more = bool(os.read(child["status"], 1))
        if not more:
            _, status, usage = os.wait4(child["proc"].pid, 0)
            child["proc"].returncode = os.waitstatus_to_exitcode(status)
            child["cpu_s"] = usage.ru_utime + usage.ru_stime
        child["stretches"].append({"s": round(time.perf_counter() - started, 3), "load1": load})
        if not more:
            self._finish(child)
        return more

    def run(self) -> dict[str, dict[str, Any]]:
        """Every child's start-up in turn, then turns at each gate, alternating the order."""
        names = [c["name"] for c in self.children]
        for n in names:
            self.step(n)
        turn = 0
        while not all(c["done"] for c in self.children):
            for n in names if turn % 2 == 0 else list(reversed(names)):
                self.step(n)
            turn += 1
        return {c["name"]: c["result"] for c in self.children}

    def _finish(self, child: dict[str, Any]) -> None:
        child["done"] = True
        child["out"].close()
        for fd in (child["go"], child["status"]):
            try:
                os.close(fd)
            except OSError:
                pass
        text = child["log"].read_text(encoding="utf-8")
        if child["proc"].returncode is None:
            _, status, usage = os.wait4(child["proc"].pid, 0)
            child["proc"].returncode = os.waitstatus_to_exitcode(status)
        if child["proc"].returncode != 0:
            raise RuntimeError(
                f"child {child['name']} exited {child['proc'].returncode}; log {child['log']}:\n{text[-4000:]}"
            )
        lines = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
        result = json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines else {}
        active = sum(x["s"] for x in child["stretches"])
        loads = [x["load1"] for x in child["stretches"]]
        child["result"] = {
            **result,
            "wall_s": round(child.get("start_s", 0.0) + active, 3),
            "start_s": round(child.get("start_s", 0.0), 3),
            "cpu_s": round(child.get("cpu_s", float("nan")), 3),
            "turns": len(child["stretches"]),
            "stretches": child["stretches"],
            "load1_mean": round(sum(loads) / len(loads), 2) if loads else None,
        }


_WAITED = [0.0]  # seconds this child has spent waiting at gates


def gate() -> None:
    """In a child: give the machine back to the parent and wait for its turn."""
    fds = os.environ.get("BENCH_GATE")
    if not fds:
        return
    go, status = (int(x) for x in fds.split(","))
    started = time.perf_counter()
    os.write(status, b"y")
    os.read(go, 1)
    _WAITED[0] += time.perf_counter() - started


def active_clock() -> float:
    """A clock that stops while this child waits for its turn: time of its own work."""
    return time.perf_counter() - _WAITED[0]


def gate_each_epoch_in_every_trainer(buckets: Buckets | None = None) -> None:
    """In a child that runs the ``hpsearch`` command: take turns at every epoch, not only at start.

    The command takes no Trainer callbacks, so the gate joins transformers' default callbacks,
    which every Trainer this process builds (each trial's) starts with; a child that calls
    ``run_search`` passes :func:`epoch_gate` instead. With ``buckets`` the wait is timed in
    the bucket "benchmark: waiting for turn".
    """
    from transformers import trainer

    trainer.DEFAULT_CALLBACKS.append(type(epoch_gate(buckets)))


def epoch_gate(buckets: Buckets | None = None) -> Any:
    """A Trainer callback that takes turns at every epoch: for ``run_search(callbacks=...)``."""
    from transformers import TrainerCallback

    class EpochGate(TrainerCallback):
        def on_epoch_begin(self, *args: Any, **kwargs: Any) -> None:
            if buckets is None:
                gate()
                return
            with buckets.bucket("benchmark: waiting for turn"):
                gate()

    return EpochGate()


def progress_listener() -> Any:
    """A run listener that prints a line per epoch and per trial on stderr, for a child's log:
    what ``hpsearch run`` shows, for a child that calls ``run_search`` itself."""
    from hpsearch import RunListener

    class ProgressLines(RunListener):
        def epoch(self, trial: Any, row: Any, *, pruned: str | None, stopped: str | None) -> None:
            end = f"; {pruned or stopped}" if pruned or stopped else ""
            print(f"trial {trial.number} epoch {row['epoch']}: F1 {row['f1']:.4f}{end}", file=sys.stderr, flush=True)

        def trial_end(self, trial: Any, frozen: Any) -> None:
            print(f"trial {frozen.number} {frozen.state.name.lower()}: {frozen.value}", file=sys.stderr, flush=True)

    return ProgressLines()


def _child_env(src: str | None, env: dict[str, str] | None) -> dict[str, str]:
    child_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(env or {}),
    }
    if src:
        child_env["PYTHONPATH"] = os.pathsep.join([str(src), child_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return child_env


def run_child(
    args: Sequence[str],
    *,
    src: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """Run ``python ARGS`` in a fresh process; its RESULT dict plus ``wall_s`` and the load.

    ``src`` puts another hpsearch source tree first on the path (a proposed change,
    measured beside the current code in the same run).
    """
    child_env = _child_env(src, env)
    load_before = loadavg()
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=child_env, cwd=cwd)
    wall = time.perf_counter() - started
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    result = json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines else {}
    return {**result, "wall_s": round(wall, 3), "load_before": load_before, "load_after": loadavg()}


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = json.dumps(payload, indent=2, default=str) + "\n"
    # two runs in one second must not overwrite each other: the second gets a suffix
    for n in range(1, 100):
        path = RESULTS_DIR / (f"{name}-{stamp}.json" if n == 1 else f"{name}-{stamp}-{n}.json")
        try:
            with path.open("x", encoding="utf-8") as f:
                f.write(text)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{RESULTS_DIR}/{name}-{stamp}*.json: too many results in one second")


def command_line() -> str:
    """How this benchmark was started, as one copyable line."""
    rel = os.path.relpath(sys.argv[0], REPO)
    return " ".join(["python", rel, *sys.argv[1:]])


def rss_mib() -> float:
    """This process's resident set size (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- hpsearch


def run_hpsearch_cli(argv: Sequence[str]) -> None:
    """``hpsearch ARGV`` in this process; a non-zero exit ends the child with its code."""
    from hpsearch.cli import main

    code = main(list(argv))
    if code:
        raise SystemExit(f"hpsearch {' '.join(argv[:1])} exited {code}")


def study_summary(storage: str, study: str = "hpsearch") -> dict[str, Any]:
    """What a benchmark reads back from a finished search: best value, the shipped model's
    test F1, epochs trained, states, and every trial's per-epoch F1."""
    import optuna
    from optuna.trial import TrialState

    from hpsearch import schema

    s = optuna.load_study(study_name=study, storage=storage)
    best = schema.best_trial(s.trials)
    kept = [t for t in s.trials if schema.kept_model(t)]
    shipped = max(kept, key=lambda t: t.number) if kept else None  # best-model/ holds the last kept
    rows = {t.number: schema.rows(t) for t in s.trials}
    return {
        "best_val_f1": best.value if best else None,
        "best_trial": best.number if best else None,
        "best_params": best.params if best else None,
        "max_epoch_val_f1": max((r["f1"] for rs in rows.values() for r in rs), default=None),
        "test_f1": (schema.test_metrics(shipped) or {}).get("f1") if shipped else None,
        "shipped_trial": shipped.number if shipped else None,
        "epochs_trained": sum(len(r) for r in rows.values()),
        "complete": sum(t.state == TrialState.COMPLETE for t in s.trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in s.trials),
        "failed": sum(t.state == TrialState.FAIL for t in s.trials),
        "trials": [
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "params": t.params,
                "value": t.value,
                "f1": [round(r["f1"], 4) for r in rows[t.number]],
            }
            for t in s.trials
        ],
    }
