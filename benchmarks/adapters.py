"""LoRA adapters against the full fine-tune: time per epoch, best F1 and trainable parameters.

    python benchmarks/adapters.py                    # 4 trials x 3 epochs per arm, 2 cores
    python benchmarks/adapters.py --trials 8 --epochs 5

The packaged all-MiniLM-L6-v2 on the built-in task, through the CLI as a user runs it:
``hpsearch run`` (every weight) and ``hpsearch run --peft lora`` (peft's default targets,
r 8, alpha 16; the adapter learning-rate range), each arm a fresh study in its own folder,
run one after the other in one process tree. Time per epoch is the arm's wall time over the
epochs it trained; the parameter counts are the ones every trial stores. A measurement,
not a target: run it on an otherwise idle machine.
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
import optuna

from hpsearch import schema

ARMS = {"full": [], "lora": ["--peft", "lora"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--cores", type=int, default=2, help="pin the runs to this many cores (0: no pinning)")
    args = p.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    pinned = cores[: args.cores] if args.cores else cores
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    summary, studies = {}, {}
    for arm, flags in ARMS.items():
        with tempfile.TemporaryDirectory(prefix=f"bench-adapters-{arm}-") as tmp:
            argv = ["run", "--trials", str(args.trials), "--epochs", str(args.epochs), *flags]
            load_before = h.loadavg()
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "hpsearch", *argv],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                preexec_fn=lambda: os.sched_setaffinity(0, pinned),
            )
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"hpsearch {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
            storage = f"sqlite:///{Path(tmp) / 'studies' / 'hpsearch.db'}"
            study = h.study_summary(storage)
            counts = _parameters(storage)
        summary[arm] = {
            "wall_s": round(wall, 1),
            "epochs_trained": study["epochs_trained"],
            "s_per_epoch": round(wall / max(study["epochs_trained"], 1), 1),
            "best_val_f1": study["best_val_f1"],
            "test_f1_shipped": study["test_f1"],
            "pruned": study["pruned"],
            "trainable": counts["trainable"],
            "total": counts["total"],
            "load": [load_before, h.loadavg()],
        }
        studies[arm] = study
    summary["ratios"] = {
        "s_per_epoch_lora_over_full": round(summary["lora"]["s_per_epoch"] / summary["full"]["s_per_epoch"], 2),
        "trainable_full_over_lora": round(summary["full"]["trainable"] / summary["lora"]["trainable"], 1),
    }
    payload = {
        "benchmark": "adapters",
        "command": h.command_line(),
        "machine": h.machine(),
        "settings": vars(args),
        "summary": summary,
        "studies": studies,
    }
    path = h.save("adapters", payload)
    print(json.dumps(summary, indent=2))
    print(f"saved {path.relative_to(h.REPO)}", file=sys.stderr)


def _parameters(storage: str) -> dict[str, int]:
    """The parameter counts the study's trials stored (the same for every trial of an arm)."""
    trials = optuna.load_study(study_name="hpsearch", storage=storage).trials
    return next(c for t in trials if (c := schema.parameters(t)) is not None)


if __name__ == "__main__":
    main()
