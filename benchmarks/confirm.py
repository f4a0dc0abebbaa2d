"""Seed confirmation on sms_spam: is the search's best trial still the best by mean?

    python benchmarks/confirm.py                              # 3 searches (sampler seeds 42..44), 20 trials each, then --top 3 --seeds 5
    python benchmarks/confirm.py --searches 1 --trials 8      # a quicker look
    python benchmarks/confirm.py --max-train-samples 512 --max-eval-samples 256   # bounded, as RESULTS section 11 reports

Each search is a real ``hpsearch run`` in an empty folder on ``../shared/data/sms_spam``
(read in place, never copied), followed by ``hpsearch confirm``; both are timed as whole
processes. Read back from the storage they wrote (:func:`hpsearch.search.seeds.open_confirmation`):

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


def _figures(folder: Path) -> dict[str, Any]:
    import optuna

    from hpsearch.search.seeds import open_confirmation

    url = f"sqlite:///{folder / 'studies' / 'hpsearch.db'}"
    search = optuna.load_study(study_name="hpsearch", storage=url)
    confirmation = open_confirmation(search, url)
    configs = [c for c in confirmation.configs if c.validation is not None]
    stds = [c.validation.std for c in configs if c.validation.std is not None]
    means = [c.validation.mean for c in configs]
    values = [t.value for t in search.trials if t.value is not None]
    recipe = confirmation.recipe
    comparison = confirmation.comparison()
    return {
        "search_best": confirmation.search_best,
        "winner": confirmation.winner.trial,
        "search_best_still_best": confirmation.winner.trial == confirmation.search_best,
        "seed_std_mean": statistics.fmean(stds) if stds else None,
        "between_config_std": statistics.stdev(means) if len(means) > 1 else None,
        "search_value_range": [min(values), max(values)],
        "recipe_failure_rate": recipe.failures / len(recipe.complete) if recipe and recipe.complete else None,
        "winner_vs_recipe": None
        if comparison is None
        else {
            "difference": comparison.difference,
            "low": comparison.low,
            "high": comparison.high,
            "p": comparison.p_value,
        },
        "configurations": [c.to_dict() for c in confirmation.configs],
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
            figures = _figures(folder)
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
                f"sampler seed {42 + i}: search {search_s:.0f} s, confirm {confirm_s:.0f} s; search best {figures['search_best']}, winner {figures['winner']}",
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
