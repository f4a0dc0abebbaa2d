"""Budget line: would stopping low-budget trials before they train save epochs, safely?

    python benchmarks/budget_line.py benchmarks/results/pruning-20261127-160629.json --pruner best-auc-updates-se1-s1-p2 --train 256

No training: a replay of stored searches. The rule replayed is the one RESULTS section 2
left unbuilt: before a trial trains, compare its planned learning-rate budget (the sum of
the learning rates of its whole schedule, ``lr_budget.planned_lr_sum``) with a line learnt
from the trials before it, and stop it untrained when it plans less. The line comes from
trials that learned: each one that scored F1 0 (every message called ham) at some epoch and
more than 0 later had, at that last F1-0 epoch, summed a learning rate that was not yet
enough for it. Those sums are the evidence; a line is their minimum or median once at least
k trials give one. Pruned trials count too, with the epochs they trained, so the rule needs
no hopeless trial to complete.

For each search (a run of ``--pruner`` in the files) and each line, the replay counts the
epochs the stopped trials had trained (saved) and the stopped trials that reached F1 of at
least ``--good`` at some epoch (lost). The sampler would have chosen differently after a
stop, so this is the first-order effect. It also lists every learned trial whose evidence
lies above the planned budget of its search's best trial: one such trial early in a search
sets a line that stops the winners.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import _harness as h
from lr_budget import parse_args, planned_lr_sum, runs_of, schedule

LINES = {"min of 1": (min, 1), "min of 3": (min, 3), "median of 3": (statistics.median, 3)}


def epoch_lr_sums(params: dict[str, Any], train: int, epochs: int) -> list[float]:
    """The summed learning rate after each epoch (what the rows store as ``lr_sum``)."""
    per = math.ceil(train / params["per_device_train_batch_size"])
    rates = schedule(params, train, epochs)
    return [sum(rates[: per * (e + 1)]) for e in range(epochs)]


def evidence(f1: list[float], sums: list[float]) -> float | None:
    """The summed learning rate at a trial's last F1-0 epoch, if it scored above 0 later."""
    zeros = [i for i, v in enumerate(f1) if v == 0.0]
    if not zeros or not any(v > 0.0 for v in f1[zeros[-1] + 1 :]):
        return None
    return sums[zeros[-1]]


def replay(trials: list[dict[str, Any]], train: int, epochs: int, good: float) -> dict[str, Any]:
    out: dict[str, Any] = {"epochs": sum(len(t["f1"]) for t in trials)}
    best = max(trials, key=lambda t: max(t["f1"]))
    best_budget = planned_lr_sum(best["params"], train, epochs)
    seen = []
    for t in trials:
        seen.append(evidence(t["f1"], epoch_lr_sums(t["params"], train, epochs)))
    out["above_best_budget"] = [
        {"number": t["number"], "evidence": e, "best_trial_budget": best_budget}
        for t, e in zip(trials, seen) if e is not None and e > best_budget
    ]
    for name, (stat, k) in LINES.items():
        saved, stopped, lost = 0, [], []
        for i, t in enumerate(trials):
            before = [e for e in seen[:i] if e is not None]
            if len(before) < k:
                continue
            line, budget = stat(before), planned_lr_sum(t["params"], train, epochs)
            if budget < line:
                saved += len(t["f1"])
                stopped.append(t["number"])
                if max(t["f1"]) >= good:
                    lost.append({"number": t["number"], "max_f1": max(t["f1"]), "budget": budget, "line": line})
        out[name] = {"saved": saved, "stopped": stopped, "lost": lost}
    return out


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], "an F1 that counts a stopped trial as lost")
    runs = [
        {"file": path.name, "seed": run["seed"], **replay(run["trials"], args.train, args.epochs, args.good)}
        for path, run in runs_of(args)
    ]
    if not runs:
        raise SystemExit(f"no runs of pruner {args.pruner!r} in {', '.join(map(str, args.files))}")
    total = sum(r["epochs"] for r in runs)
    summary = {}
    for name in LINES:
        saved = sum(r[name]["saved"] for r in runs)
        lost = sum(len(r[name]["lost"]) for r in runs)
        summary[name] = {"saved": saved, "of": total, "share": round(saved / total, 3), "lost": lost}
        print(f"{name:>12}: saves {saved:>3} of {total} epochs ({saved / total:.0%}); stops {lost} trial(s) that reached F1 >= {args.good}")
    for r in runs:
        for a in r["above_best_budget"]:
            print(f"{r['file']} seed {r['seed']} trial {a['number']}: F1 0 at {a['evidence']:.2e}, above the best trial's budget {a['best_trial_budget']:.2e}")
    payload = {"benchmark": "budget_line", "command": h.command_line(), "machine": h.machine(), "settings": {**vars(args), "files": [str(f) for f in args.files]}, "runs": runs, "summary": summary}
    print(f"saved {h.save('budget_line', payload).relative_to(h.REPO)}")


if __name__ == "__main__":
    main()
