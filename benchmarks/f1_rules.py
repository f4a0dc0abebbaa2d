"""F1 rules: how many epochs can any pruning rule on validation F1 save without losing the best trial?

    python benchmarks/f1_rules.py benchmarks/results/pruning-20261128-011127.json benchmarks/results/pruning-20261127-221830.json benchmarks/results/pruning-20261128-030849.json

No training: a replay of stored unpruned searches, whose every trial has all its epochs'
F1. Each rule of a grid is replayed trial by trial in each search, with hpsearch's early
stopping (patience 2, epochs of F1 0 not counted, the last epoch never cut) and one
start-up trial, as the default pruner runs. A rule has two parts:

* a grace for trials still at F1 0 (a model that calls every message ham): none (never
  judged while at F1 0) or k (stopped after epoch k if every epoch so far scored 0);
* a margin rule, off or on from epoch e: a trial that has scored above 0 stops when its best
  F1 so far is below the reference by more than m, the reference being the best (or the
  median) of the complete trials' best F1 within as many epochs.

For each rule and search it counts the epochs trained and whether the best F1 reached
within them equals the unpruned search's. The sampler would have chosen differently after
a stop, so this is the first-order effect. F1 0 stands in for "one class for every
example", which hpsearch reads from the predictions; on sms_spam the two coincide but for
a model that flags only ham messages as spam. The ROC AUC rule, hpsearch's default, is
not in the grid: the result files store F1 only.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

import _harness as h
from lr_budget import parse_args, runs_of

GRACES = (None, 2, 3, 4)
MARGINS = (None, 0.0, 0.01, 0.02, 0.03, 0.05)
FROM_EPOCH = (1, 2, 3)
REFERENCES = ("best", "median")
PATIENCE, STARTUP = 2, 1


def rules() -> list[dict[str, Any]]:
    out = []
    for grace, margin, start, ref in itertools.product(GRACES, MARGINS, FROM_EPOCH, REFERENCES):
        if margin is None and (start, ref) != (1, "best"):
            continue  # the margin rule is off: one entry per grace
        out.append({"grace": grace, "margin": margin, "from_epoch": start, "reference": ref})
    return out


def early_stop(f1: list[float]) -> int:
    """The epochs a trial trains under hpsearch's early stopping alone."""
    best, stalled, learning = -1.0, 0, False
    for epoch, value in enumerate(f1, start=1):
        if value > best:
            best, stalled = value, 0
        elif learning:
            stalled += 1
        learning = learning or value > 0
        if epoch < len(f1) and stalled >= PATIENCE:
            return epoch
    return len(f1)


def replay(trials: list[dict[str, Any]], rule: dict[str, Any], good: float) -> dict[str, Any]:
    done: list[list[float]] = []
    epochs, found, lost = 0, 0.0, []
    for t in trials:
        f1 = t["f1"]
        stop, pruned = early_stop(f1), False
        for epoch in range(1, stop + 1):
            if len(done) < STARTUP or epoch == len(f1):
                continue
            seen = f1[:epoch]
            if max(seen) == 0.0:
                if rule["grace"] is not None and epoch >= rule["grace"]:
                    stop, pruned = epoch, True
                    break
                continue
            if rule["margin"] is not None and epoch >= rule["from_epoch"]:
                refs = [max(c[:epoch]) for c in done]
                against = max(refs) if rule["reference"] == "best" else statistics.median(refs)
                if max(seen) < against - rule["margin"]:
                    stop, pruned = epoch, True
                    break
        epochs += stop
        found = max(found, max(f1[:stop]))
        if pruned:
            if max(f1) >= good:
                lost.append(t["number"])
        else:
            done.append(f1[:stop])
    return {"epochs": epochs, "best_f1": found, "stopped_good": lost}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], "an F1 at which a stopped trial counts as a good one lost")
    searches = [{"file": path.name, "seed": run["seed"], "trials": run["trials"], "best_f1": run["best_val_f1"]} for path, run in runs_of(args)]
    if not searches:
        raise SystemExit(f"no runs of pruner {args.pruner!r} in {', '.join(map(str, args.files))}")
    total = sum(len(t["f1"]) for s in searches for t in s["trials"])
    results = []
    for rule in rules():
        per = [{"file": s["file"], "seed": s["seed"], **replay(s["trials"], rule, args.good)} for s in searches]
        for p, s in zip(per, searches):
            p["gap"] = round(p["best_f1"] - s["best_f1"], 4)
        epochs = sum(p["epochs"] for p in per)
        results.append({"rule": rule, "saved": round(1 - epochs / total, 3), "kept": sum(p["gap"] >= 0 for p in per), "searches": per})
    print(f"{len(searches)} searches, {total} epochs unpruned; for each number of searches keeping the unpruned best F1, the rule saving most:")
    frontier = {}
    for kept in range(len(searches), -1, -1):
        fits = [r for r in results if r["kept"] >= kept]
        if fits:
            top = max(fits, key=lambda r: r["saved"])
            frontier[kept] = top
            print(f"  at least {kept} of {len(searches)}: saves {top['saved']:.0%} with {top['rule']}")
    payload = {
        "benchmark": "f1_rules", "command": h.command_line(), "machine": h.machine(),
        "settings": {**vars(args), "files": [str(f) for f in args.files], "patience": PATIENCE, "startup_trials": STARTUP},
        "epochs_unpruned": total, "frontier": frontier, "rules": results,
    }
    print(f"saved {h.save('f1_rules', payload).relative_to(h.REPO)}")


if __name__ == "__main__":
    main()
