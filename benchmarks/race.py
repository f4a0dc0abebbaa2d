"""Racing seeds against a plain search and a confirmation: what each picks, and what it costs.

    python benchmarks/race.py                                   # built-in task, 3 sampler seeds, 10 trials, S = 5
    python benchmarks/race.py --dataset ../shared/data/sms_spam --max-train-samples 256 --max-eval-samples 256

Per sampler seed, four real ``hpsearch run`` processes, each in an empty folder, timed whole:

- (a) ``run --trials N``;
- (b) ``run --trials N --confirm-top 3 --seeds S``;
- (c) ``run --trials N --seeds S``;
- (d) ``run --trials N --seeds S --timeout T``, T being (a)'s search time (its first trial's
  start to its last trial's end: ``--timeout`` bounds the loop, which starts after loading).

For each: the wall time, the epochs trained (search trials and seed runs), the configuration
it picks (``hpsearch trials --json``: the best trial for (a), the winner by mean for the
others). Then, outside the timed runs, every picked configuration's test score over seeds
42 .. 42+S-1: ``hpsearch run --trials 1 --seeds S`` with the pick as the recipe, whose runs
are each scored on the test split. The result goes to ``results/race-*.json``.
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
import optuna

from hpsearch import schema

ARMS = ("a", "b", "c", "d")


def _hpsearch(argv: list[str], cwd: Path, env: dict[str, str], log: str) -> float:
    started = time.perf_counter()
    with open(cwd / f"{log}.err", "wb") as err:
        code = subprocess.run(
            [sys.executable, "-m", "hpsearch", *argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err
        ).returncode
    if code != 0:
        raise SystemExit(f"`hpsearch {' '.join(argv)}` exited {code}: {(cwd / f'{log}.err').read_text()[-2000:]}")
    return time.perf_counter() - started


def _records(folder: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "hpsearch", "trials", "--json"], cwd=folder, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"`hpsearch trials --json` exited {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def _epochs(folder: Path) -> int:
    """Epochs trained by the search's trials and the seed runs, read from storage."""
    url = f"sqlite:///{folder / 'studies' / 'hpsearch.db'}"
    names = [s.study_name for s in optuna.get_all_study_summaries(url)]
    return sum(len(schema.rows(t)) for name in names for t in optuna.load_study(study_name=name, storage=url).trials)


def _search_span(folder: Path) -> float:
    """Seconds from the search's first trial start to its last trial end: the loop, without start-up."""
    url = f"sqlite:///{folder / 'studies' / 'hpsearch.db'}"
    trials = optuna.load_study(study_name="hpsearch", storage=url).trials
    return (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()


def _pick(records: list[dict[str, Any]], arm: str) -> dict[str, Any]:
    if arm == "a":
        chosen = next(r for r in records if r["best"])
    else:
        chosen = next(r for r in records if r.get("confirmation") and r["confirmation"]["winner"])
    return {"trial": chosen["number"], "params": chosen["params"], "recipe": bool(chosen.get("recipe"))}


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def _test_scores(params: dict[str, Any], base: list[str], seeds: int, env: dict[str, str]) -> list[float]:
    """The configuration's test objective on seeds 42 .. 42+S-1: a one-trial race with it as the recipe."""
    with tempfile.TemporaryDirectory(prefix="bench-race-test-") as tmp:
        folder = Path(tmp)
        recipe = "\n".join(f"{k} = {json.dumps(v)}" for k, v in params.items())
        (folder / "pick.toml").write_text(f"[recipe]\n{recipe}\n", encoding="utf-8")
        _hpsearch([*base, "--config", "pick.toml", "--trials", "1", "--seeds", str(seeds)], folder, env, "test")
        runs = _records(folder, env)[0]["confirmation"]["runs"]
        return [r["test"] for r in sorted(runs, key=lambda r: r["seed"])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="builtin", help="builtin, or a dataset folder such as ../shared/data/sms_spam")
    p.add_argument("--searches", type=int, default=3, help="sampler seeds 42, 43, ...")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--max-eval-samples", type=int, default=None)
    p.add_argument("--max-length", type=int, default=64)
    args = p.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    dataset = args.dataset if args.dataset == "builtin" else str(Path(args.dataset).resolve())
    base = ["run", "--dataset", dataset, "--epochs", str(args.epochs), "--max-length", str(args.max_length)]
    for flag in ("max_train_samples", "max_eval_samples"):
        if getattr(args, flag):
            base += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    chain = {
        "a": [],
        "b": ["--confirm-top", str(args.top), "--seeds", str(args.seeds)],
        "c": ["--seeds", str(args.seeds)],
    }
    machine, searches, path = h.machine(), [], None
    tests: dict[str, list[float]] = {}
    for i in range(args.searches):
        arms: dict[str, dict[str, Any]] = {}
        for arm in ARMS:
            extra = (
                chain[arm] if arm in chain else ["--seeds", str(args.seeds), "--timeout", f"{arms['a']['wall_s']:.0f}"]
            )
            with tempfile.TemporaryDirectory(prefix=f"bench-race-{arm}-") as tmp:
                folder = Path(tmp)
                (folder / "bench.toml").write_text(f"[sampler]\nseed = {42 + i}\n", encoding="utf-8")
                argv = [*base, "--config", "bench.toml", "--trials", str(args.trials), *extra]
                load = os.getloadavg()[0]
                wall = _hpsearch(argv, folder, env, arm)
                arms[arm] = {
                    "wall_s": wall,
                    "span_s": _search_span(folder),
                    "load1_before": load,
                    "epochs": _epochs(folder),
                }
                records = _records(folder, env)
                arms[arm] |= _pick(records, arm)
                # who raced, how many seeds each ran and where it stands: where a race's time goes
                arms[arm]["seeded"] = [
                    {"trial": r["number"], "seeds": r["confirmation"]["seeds"], "race": r["confirmation"]["race"]}
                    for r in records
                    if r.get("confirmation")
                ]
            print(f"seed {42 + i} arm {arm}: {wall:.0f} s, {arms[arm]['epochs']} epochs, trial {arms[arm]['trial']}")
        for arm in ARMS:  # outside the timed runs: every pick's test scores over the seeds
            key = _key(arms[arm]["params"])
            if key not in tests:
                tests[key] = _test_scores(arms[arm]["params"], base, args.seeds, env)
            scores = tests[key]
            arms[arm]["test_scores"] = scores
            arms[arm]["test_mean"] = statistics.fmean(scores)
            arms[arm]["test_se"] = statistics.stdev(scores) / len(scores) ** 0.5
        searches.append(
            {
                "sampler_seed": 42 + i,
                "arms": arms,
                "c_over_b_wall": arms["c"]["wall_s"] / arms["b"]["wall_s"],
                "b_c_agree": _key(arms["b"]["params"]) == _key(arms["c"]["params"]),
            }
        )
        payload = {"machine": machine, "command": h.command_line(), "args": vars(args), "searches": searches}
        payload["summary"] = _summary(searches)
        if path is None:
            path = h.save("race", payload)
        else:
            path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
        print(json.dumps(payload["summary"], indent=1), flush=True)
    print(path)


def _summary(searches: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arm in ARMS:
        runs = [s["arms"][arm] for s in searches]
        out[arm] = {
            "wall_s": statistics.fmean(r["wall_s"] for r in runs),
            "epochs": statistics.fmean(r["epochs"] for r in runs),
            "test_mean": statistics.fmean(r["test_mean"] for r in runs),
            "picks": [r["trial"] for r in runs],
        }
    out["c_over_b_wall"] = statistics.fmean(s["c_over_b_wall"] for s in searches)
    out["b_c_agree"] = sum(s["b_c_agree"] for s in searches)
    # Per search: (c) no worse than (b) within (c)'s standard error; (d) no worse than (a)
    out["c_not_worse_than_b"] = sum(
        s["arms"]["c"]["test_mean"] + s["arms"]["c"]["test_se"] >= s["arms"]["b"]["test_mean"] for s in searches
    )
    out["d_not_worse_than_a"] = sum(s["arms"]["d"]["test_mean"] >= s["arms"]["a"]["test_mean"] for s in searches)
    return out


if __name__ == "__main__":
    main()
