"""The default search as a new user runs it: ``hpsearch run --trials 20`` in an empty folder.

    python benchmarks/default_run.py                 # 20 trials, pinned to 2 cores
    python benchmarks/default_run.py --cores 0       # all the machine's cores

The packaged all-MiniLM-L6-v2 on the built-in dataset with every default (5 epochs, the
default pruner, TPE seed 42). The figure is the wall time of the ``python -m hpsearch``
process from start to exit; the epochs trained, pruned trials and best F1 are read back
from the study it wrote. It takes several minutes; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness as h


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--cores", type=int, default=2, help="pin the run to this many cores (0: no pinning)")
    p.add_argument("--src", default=None, help="run hpsearch from this source tree (a proposed change)")
    args = p.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    pinned = cores[: args.cores] if args.cores else cores
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join([args.src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryDirectory(prefix="bench-default-run-") as tmp:
        load_before = h.loadavg()
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "hpsearch", "run", "--trials", str(args.trials)],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, pinned),
        )
        wall = time.perf_counter() - started
        load_after = h.loadavg()
        if proc.returncode != 0:
            raise SystemExit(f"hpsearch run exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        study = h.study_summary(*_default_study(tmp))
    summary = {
        "wall_s": round(wall, 1),
        "wall_min": round(wall / 60, 2),
        "cores": len(pinned),
        "epochs_trained": study["epochs_trained"],
        "epochs_if_unpruned": args.trials * 5,
        "complete": study["complete"],
        "pruned": study["pruned"],
        "failed": study["failed"],
        "best_val_f1": study["best_val_f1"],
        "test_f1_shipped": study["test_f1"],
        "load_before": load_before,
        "load_after": load_after,
    }
    payload = {
        "benchmark": "default_run",
        "command": h.command_line(),
        "machine": h.machine(),
        "settings": vars(args),
        "summary": summary,
        "study": study,
        "stderr_tail": proc.stderr[-6000:],
    }
    path = h.save("default_run", payload)
    print(json.dumps(summary, indent=2))
    print(f"saved {path.relative_to(h.REPO)}", file=sys.stderr)


def _default_study(folder: str) -> tuple[str, str]:
    """The storage URL and study name a default run started in ``folder`` writes to."""
    from hpsearch import load_config

    defaults = load_config()
    url, prefix = defaults.storage, "sqlite:///"
    if url.startswith(prefix) and not Path(url[len(prefix) :]).is_absolute():
        url = prefix + str(Path(folder) / url[len(prefix) :])  # relative to the run's folder, not this process's
    return url, defaults.study


if __name__ == "__main__":
    main()
