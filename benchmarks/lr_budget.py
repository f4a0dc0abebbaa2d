"""Learning-rate budget: does a trial's planned sum of learning rates foretell its final F1?

    python benchmarks/lr_budget.py benchmarks/results/pruning-20261127-051602.json --pruner none --train 256

Reads the unpruned searches of a pruning result file (no training) and gives every trial
the sum of the learning rates its whole schedule will apply, from its parameters: the
recipe's linear schedule with warm-up, ``ceil(train / batch)`` updates an epoch (the sum
each epoch row stores as ``lr_sum``; a test checks the rows against this formula). Adam's
updates scale with the learning rate, so the sum is how far a trial can move. The output
lists the trials by that sum with their final F1, and, for each threshold, how many
trials below it and above it end with F1 of at least --good.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _harness as h


def schedule(params: dict[str, Any], train: int, epochs: int) -> list[float]:
    """The learning rate of every update of the linear schedule with warm-up."""
    peak, batch = params["learning_rate"], params["per_device_train_batch_size"]
    total = math.ceil(train / batch) * epochs
    warmup = math.ceil(total * params.get("warmup_ratio", 0.0))
    return [peak * k / warmup if k < warmup else peak * (total - k) / (total - warmup) for k in range(total)]


def planned_lr_sum(params: dict[str, Any], train: int, epochs: int) -> float:
    """The sum of the learning rates of every update of the linear schedule with warm-up."""
    return sum(schedule(params, train, epochs))


def parse_args(description: str, good: str) -> argparse.Namespace:
    """The arguments of a script that reads pruning result files, with the files checked."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("files", nargs="+", type=Path, help="pruning result files")
    p.add_argument("--pruner", default="none", help="which runs of the files to read (default none)")
    p.add_argument("--train", type=int, default=256, help="training rows the runs used")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--good", type=float, default=0.85, help=good)
    args = p.parse_args()
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        p.error(f"no result file {missing[0]}")
    return args


def runs_of(args: argparse.Namespace) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every run of ``--pruner`` in the files, with the file it came from."""
    for path in args.files:
        for run in json.loads(path.read_text(encoding="utf-8"))["runs"]:
            if run["pruner"] == args.pruner:
                yield path, run


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], "final F1 counted as a trial that learned")
    trials = []
    for path, run in runs_of(args):
        for t in run["trials"]:
            if t["state"] != "complete":
                continue
            trials.append({
                "file": path.name, "seed": run["seed"], "number": t["number"],
                "batch": t["params"]["per_device_train_batch_size"], "learning_rate": t["params"]["learning_rate"],
                "lr_sum": planned_lr_sum(t["params"], args.train, args.epochs), "final_f1": t["f1"][-1],
            })
    if not trials:
        raise SystemExit(f"no complete trials of pruner {args.pruner!r} in {', '.join(map(str, args.files))}")
    trials.sort(key=lambda t: t["lr_sum"])
    thresholds = []
    for cut in sorted({round(t["lr_sum"], 5) for t in trials}):
        below = [t for t in trials if t["lr_sum"] < cut]
        above = [t for t in trials if t["lr_sum"] >= cut]
        thresholds.append({
            "lr_sum": cut,
            "below": len(below), "below_good": sum(t["final_f1"] >= args.good for t in below),
            "above": len(above), "above_good": sum(t["final_f1"] >= args.good for t in above),
        })
    for t in trials:
        print(f"seed {t['seed']} trial {t['number']:>2}  batch {t['batch']:>2}  lr {t['learning_rate']:.2e}  lr_sum {t['lr_sum']:.2e}  final F1 {t['final_f1']:.4f}")
    payload = {"benchmark": "lr_budget", "command": h.command_line(), "machine": h.machine(), "settings": {**vars(args), "files": [str(f) for f in args.files]}, "trials": trials, "thresholds": thresholds}
    print(f"saved {h.save('lr_budget', payload).relative_to(h.REPO)}")


if __name__ == "__main__":
    main()
