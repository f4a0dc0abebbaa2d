"""The fault matrix: every fault on every storage, repeated with random timing, nothing lost.

    python benchmarks/faults.py                      # every cell, 5 repetitions each
    python benchmarks/faults.py --reps 1 --faults sigint,kill9 --storages sqlite,postgresql

Each repetition runs real ``hpsearch run`` workers on a tiny BERT (4 trials x 3 epochs of
the built-in data) in a fresh folder and study, injects one fault at a random moment
(seeded), then runs the same command once more and checks the invariants:

- the same command resumes to exactly the total, and no trial is counted twice;
- the recipe trial is in the study exactly once as complete;
- ``best-model/`` loads, and its ``hpsearch.json`` names the best complete trial that kept a model;
- ``hpsearch card best`` renders;
- the storage opens without repair (SQLite: ``PRAGMA integrity_check``).

Faults: ``sigint``, ``sigterm`` (one worker); ``kill9`` (one of two workers); ``sigstop``
(one of two workers frozen past hpsearch's heartbeat grace, :data:`FROZEN_S`, then resumed;
the workers run with hpsearch's own heartbeat settings); ``restart`` (the server restarted
mid-trial: PostgreSQL, and a Redis of the script's own that keeps its data on disk);
``enospc`` (``OSError(ENOSPC)`` injected at the best model's first save); ``concurrent``
(``card``, ``report`` and ``trials`` run over and over while the workers run). The matrix
prints cells passed out of repetitions and the median time the resuming command took, and
is saved under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _harness

if TYPE_CHECKING:
    import optuna

STORAGES = ("sqlite", "journal", "postgresql", "redis")
FAULTS = ("sigint", "sigterm", "kill9", "sigstop", "restart", "enospc", "concurrent")
TOTAL = 4
RUN = (
    "--trials",
    str(TOTAL),
    "--epochs",
    "3",
    "--early-stopping-patience",
    "0",
    "--pruner",
    "none",
    "--max-length",
    "32",
    "--max-train-samples",
    "128",
    "--max-eval-samples",
    "32",
)
PG = "postgresql://postgres@127.0.0.1:5432/test"
# A running trial's heartbeat is refreshed every 30 s and a trial silent for 120 s counts as
# dead (docs/workers.md); a worker frozen this long has certainly been given up by the other.
FROZEN_S = 120 + 30 + 10
# Worker processes, with the hook one fault needs: a full disk at the first save.
_WORKER = """
import errno, sys
if {enospc!r}:
    from transformers import Trainer
    real, seen = Trainer.save_model, []
    def save_model(self, *a, **k):
        seen.append(1)
        if len(seen) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)
    Trainer.save_model = save_model
from hpsearch.cli import main
sys.exit(main(sys.argv[1:]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storages", default=",".join(STORAGES))
    parser.add_argument("--faults", default=",".join(FAULTS))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="faults-"))
    model = _tiny_model(root / "model")
    matrix: dict[str, dict[str, Any]] = {}
    for fault in args.faults.split(","):
        for storage in args.storages.split(","):
            if fault == "restart" and storage in ("sqlite", "journal"):
                continue  # no server to restart
            cell = [_repetition(root, model, storage, fault, rng) for _ in range(args.reps)]
            passed = [r for r in cell if r["ok"]]
            matrix[f"{fault}/{storage}"] = {
                "passed": len(passed),
                "reps": args.reps,
                "recover_s": round(statistics.median(r["recover_s"] for r in passed), 1) if passed else None,
                "failures": [r["problems"] for r in cell if not r["ok"]],
            }
            recover = matrix[f"{fault}/{storage}"]["recover_s"]
            print(f"{fault:<11} {storage:<11} {len(passed)}/{args.reps}  recover {recover} s", flush=True)
    path = _harness.save(
        "faults",
        {"machine": _harness.machine(), "command": _harness.command_line(), "seed": args.seed, "matrix": matrix},
    )
    print(f"saved {path}")


def _tiny_model(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hpsearch import packaged_default_model

    tokenizer = AutoTokenizer.from_pretrained(str(packaged_default_model()))
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _repetition(root: Path, model: Path, storage: str, fault: str, rng: random.Random) -> dict[str, Any]:
    folder = root / uuid.uuid4().hex[:8]
    folder.mkdir()
    redis_server = _private_redis(folder) if storage == "redis" else None
    url = {
        "sqlite": f"sqlite:///{folder}/studies/hpsearch.db",
        "journal": f"journal:{folder}/studies/hpsearch.journal",
        "postgresql": PG,
    }.get(storage) or f"redis://127.0.0.1:{redis_server[1]}/0"
    study = f"faults-{uuid.uuid4().hex[:8]}"
    argv = ["run", "--model", str(model), "--study", study, "--storage", url, *RUN]
    try:
        _inject(fault, folder, argv, rng, redis_server)
        start = time.perf_counter()
        resumed = _worker(folder, argv)
        resumed.wait()
        recover = time.perf_counter() - start
        problems = _check(folder, study, url, resumed.returncode)
    except Exception as e:  # a broken repetition is a failed cell, with its reason
        problems, recover = [f"{type(e).__name__}: {e}"], 0.0
    finally:
        if redis_server is not None:
            redis_server[0].kill()
    return {"ok": not problems, "problems": problems, "recover_s": recover}


def _worker(folder: Path, argv: list[str], *, enospc: bool = False) -> subprocess.Popen:
    """A worker; its stderr goes to ``worker-<n>.log`` in the repetition's folder."""
    log = open(folder / f"worker-{len(list(folder.glob('worker-*.log')))}.log", "w")  # noqa: SIM115 - the child holds it
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER.format(enospc=enospc), *argv],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**_harness._child_env(None, None), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )


def _inject(fault: str, folder: Path, argv: list[str], rng: random.Random, redis_server: Any) -> None:
    if fault in ("sigint", "sigterm"):
        proc = _worker(folder, argv)
        time.sleep(rng.uniform(4, 12))
        proc.send_signal(signal.SIGINT if fault == "sigint" else signal.SIGTERM)
        proc.wait(timeout=120)
    elif fault in ("kill9", "sigstop"):
        procs = [_worker(folder, argv), _worker(folder, argv)]
        time.sleep(rng.uniform(4, 12))
        victim = rng.choice(procs)
        if fault == "kill9":
            victim.kill()
        else:
            victim.send_signal(signal.SIGSTOP)
            time.sleep(FROZEN_S)  # past the grace: the other worker fails the frozen one's trial
            victim.send_signal(signal.SIGCONT)
        for p in procs:
            p.wait(timeout=600)
    elif fault == "restart":
        proc = _worker(folder, argv)
        time.sleep(rng.uniform(4, 12))
        _restart(redis_server, folder)
        proc.wait(timeout=600)
    elif fault == "enospc":
        _worker(folder, argv, enospc=True).wait(timeout=600)
    elif fault == "concurrent":
        proc = _worker(folder, argv)
        rest = argv[argv.index("--study") : argv.index("--storage") + 2]
        while proc.poll() is None:
            for command in (["card", "best"], ["report"], ["trials"]):
                done = subprocess.run(
                    [sys.executable, "-m", "hpsearch", *command, *rest], cwd=folder, capture_output=True, text=True
                )
                if done.returncode not in (0, 2) or "Traceback" in done.stderr:
                    raise AssertionError(
                        f"{' '.join(command)} beside the run: exit {done.returncode}: {done.stderr.strip()[-300:]}"
                    )
    else:
        raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")


def _private_redis(folder: Path) -> list[Any]:
    """A Redis of this repetition's own, keeping its data on disk so that a restart loses nothing."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [_start_redis(folder, port), port]  # a list: a restart replaces the process


def _start_redis(folder: Path, port: int) -> subprocess.Popen:
    import redis

    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            redis.Redis(port=port, socket_timeout=1).ping()
            return proc
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def _restart(redis_server: Any, folder: Path) -> None:
    if redis_server is not None:
        proc, port = redis_server
        proc.kill()
        proc.wait()
        time.sleep(2)
        redis_server[0] = _start_redis(folder, port)
        return
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, capture_output=True
    )


def _check(folder: Path, study_name: str, url: str, code: int) -> list[str]:
    """The invariants; each broken one as a line."""
    import optuna
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from hpsearch import Marker, schema

    hf_logging.disable_progress_bar()
    problems = [] if code == 0 else [f"the resuming command exited {code}"]
    trials = optuna.load_study(study_name=study_name, storage=_storage(url)).trials
    if schema.count_finished(trials) != TOTAL:
        problems.append(f"{schema.count_finished(trials)} finished trials, not {TOTAL}")
    recipes = [t.number for t in trials if schema.is_recipe(t) and t.state.name == "COMPLETE"]
    if len(recipes) != 1:
        problems.append(f"complete recipe trials: {recipes}")
    kept = [t for t in trials if t.state.name == "COMPLETE" and schema.kept_model(t)]
    best = schema.best_trial(kept)
    best_model = folder / "studies" / study_name / "best-model"
    marker = Marker.read(best_model)
    if best is None or marker is None or marker.trial != best.number:
        problems.append(f"best-model holds {marker and marker.trial}, the best kept trial is {best and best.number}")
    else:
        AutoModelForSequenceClassification.from_pretrained(best_model)
    card = subprocess.run(
        [sys.executable, "-m", "hpsearch", "card", "best", "--study", study_name, "--storage", url],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if card.returncode != 0:
        problems.append(f"card: {card.stderr.strip()[-200:]}")
    if url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(folder / url[len("sqlite:///") :]) as db:
            if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                problems.append("SQLite integrity_check failed")
    return problems


def _storage(url: str) -> optuna.storages.BaseStorage:
    """The storage at one of this script's URLs, opened with Optuna as any reader of it would."""
    import warnings

    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    if url.startswith("journal:"):
        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:") :]))
    if url.startswith("redis://"):
        return optuna.storages.JournalStorage(JournalRedisBackend(url))
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the driver here is psycopg2.
    return optuna.storages.RDBStorage(url.replace("postgresql://", "postgresql+psycopg2://", 1))


if __name__ == "__main__":
    main()
