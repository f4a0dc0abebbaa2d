"""Seed confirmation on sms_spam: is the search's best trial still the best by mean?

    python benchmarks/confirm.py                          # 3 searches (seeds 42..44), 20 trials, --top 3 --seeds 5
    python benchmarks/confirm.py --searches 1 --trials 8  # a quicker look
    python benchmarks/confirm.py --max-train-samples 512 --max-eval-samples 256   # bounded, as RESULTS section 11

Each search is a real ``hpsearch run`` in an empty folder on ``../shared/data/sms_spam``
(read in place, never copied), followed by ``hpsearch confirm``; both are timed as whole
processes. Read back with ``hpsearch trials --json``, whose records carry each confirmed
configuration's seed runs:

- whether the search's best trial is still the winner by mean;
- the seed standard deviation (the mean over configurations of their standard deviation
  over seeds) against the spread between configurations (the standard deviation of the
  configurations' means, and the range of the values of the search's trials, pruned ones
  at their last report);
- the recipe's failure rate over its seeds (one class called, or no better than the
  constant predictor);
- the confirmation's wall time as a multiple of the search's.

It takes hours on 2 CPU cores; the result goes to ``results/confirm-*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h


def _timed(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "wb") as err:
        code = subprocess.run(
            [sys.executable, "-m", "hpsearch", *argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err
        ).returncode
    if code != 0:
        raise SystemExit(f"`hpsearch {' '.join(argv)}` exited {code}: {log.read_text()[-2000:]}")
    return time.perf_counter() - started


def _figures(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    """The figures, from the trial records ``hpsearch trials --json`` prints for the study."""
    done = subprocess.run(
        [sys.executable, "-m", "hpsearch", "trials", "--json"], cwd=folder, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"`hpsearch trials --json` exited {done.returncode}: {done.stderr[-2000:]}")
    records = json.loads(done.stdout)
    confirmed = [r for r in records if r.get("confirmation")]
    winner = next((r for r in confirmed if r["confirmation"]["winner"]), None)
    recipe = next((r for r in confirmed if r.get("recipe")), None)
    stds = [r["confirmation"]["std"] for r in confirmed if r["confirmation"]["std"] is not None]
    means = [r["confirmation"]["mean"] for r in confirmed if r["confirmation"]["mean"] is not None]
    values = [r["value"] for r in records if r["value"] is not None]
    search_best = next((r["number"] for r in records if r["best"]), None)
    seeds = recipe["confirmation"]["seeds"] if recipe else 0
    return {
        "search_best": search_best,
        "winner": winner["number"] if winner else None,
        "search_best_still_best": winner is not None and winner["number"] == search_best,
        "seed_std_mean": statistics.fmean(stds) if stds else None,
        "between_config_std": statistics.stdev(means) if len(means) > 1 else None,
        "search_value_range": [min(values), max(values)],
        "recipe_failure_rate": recipe["confirmation"]["failures"] / seeds if seeds else None,
        "winner_vs_recipe": _welch(winner, recipe) if winner is not recipe else None,
        "configurations": [{"trial": r["number"], **r["confirmation"]} for r in confirmed],
    }


def _welch(winner: dict[str, Any] | None, recipe: dict[str, Any] | None) -> dict[str, Any] | None:
    """The winner's seed scores against the recipe's: difference of means, Welch's 95% interval and p."""
    from scipy.stats import ttest_ind

    if winner is None or recipe is None:
        return None
    a, b = ([x["value"] for x in r["confirmation"]["runs"] if x["value"] is not None] for r in (winner, recipe))
    if len(a) < 2 or len(b) < 2:
        return None
    result = ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(0.95)
    return {
        "difference": statistics.fmean(a) - statistics.fmean(b),
        "low": float(interval.low),
        "high": float(interval.high),
        "p": float(result.pvalue),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--searches", type=int, default=3, help="searches, with sampler seeds 42, 43, ...")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--dataset", default=str(h.SMS_SPAM), help="dataset folder (default ../shared/data/sms_spam)")
    p.add_argument(
        "--max-train-samples", type=int, default=None, help="passed to `hpsearch run`: at most N training rows"
    )
    p.add_argument(
        "--max-eval-samples",
        type=int,
        default=None,
        help="passed to `hpsearch run`: at most N validation and test rows",
    )
    args = p.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    runs: list[dict[str, Any]] = []
    machine = h.machine()
    path: Path | None = None
    for i in range(args.searches):
        with tempfile.TemporaryDirectory(prefix="bench-confirm-") as tmp:
            folder = Path(tmp)
            (folder / "bench.toml").write_text(f"[sampler]\nseed = {42 + i}\n", encoding="utf-8")
            search_argv = [
                "run",
                "--config",
                "bench.toml",
                "--dataset",
                str(Path(args.dataset).resolve()),
                "--trials",
                str(args.trials),
            ]
            if args.max_train_samples:
                search_argv += ["--max-train-samples", str(args.max_train_samples)]
            if args.max_eval_samples:
                search_argv += ["--max-eval-samples", str(args.max_eval_samples)]
            search_s = _timed(search_argv, folder, env, folder / "search.err")
            confirm_s = _timed(
                ["confirm", "--top", str(args.top), "--seeds", str(args.seeds)], folder, env, folder / "confirm.err"
            )
            figures = _figures(folder, env)
            runs.append(
                {
                    "sampler_seed": 42 + i,
                    "load1_after": os.getloadavg()[0],
                    "search_s": search_s,
                    "confirm_s": confirm_s,
                    "confirm_over_search": confirm_s / search_s,
                    **figures,
                }
            )
            print(
                f"sampler seed {42 + i}: search {search_s:.0f} s, confirm {confirm_s:.0f} s; "
                f"search best {figures['search_best']}, winner {figures['winner']}",
                flush=True,
            )
        # Written after every search, so that a run cut short keeps the searches it finished.
        payload = {
            "machine": machine,
            "command": h.command_line(),
            "args": vars(args),
            "summary": _summary(runs),
            "runs": runs,
        }
        if path is None:
            path = h.save("confirm", payload)
        else:
            path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"{_summary(runs)}\n{path}")


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "search_best_still_best": sum(r["search_best_still_best"] for r in runs),
        "searches": len(runs),
        "seed_std_mean": statistics.fmean(
            [r["seed_std_mean"] for r in runs if r["seed_std_mean"] is not None] or [float("nan")]
        ),
        "between_config_std_mean": statistics.fmean(
            [r["between_config_std"] for r in runs if r["between_config_std"] is not None] or [float("nan")]
        ),
        "recipe_failure_rate": statistics.fmean(
            [r["recipe_failure_rate"] for r in runs if r["recipe_failure_rate"] is not None] or [float("nan")]
        ),
        "confirm_over_search": statistics.fmean([r["confirm_over_search"] for r in runs]),
    }


if __name__ == "__main__":
    main()
