"""Pruning: the same search with and without the pruner: epochs, wall time, best F1.

    python benchmarks/pruning.py                                   # none vs median, 12 trials x 5 epochs
    python benchmarks/pruning.py --pruners none,median-w1,median-w0,hyperband --trials 20
    python benchmarks/pruning.py --seeds 42,43,44                 # each pruner once per sampler seed
    python benchmarks/pruning.py --trials 10 --pruned-trials 24   # pruned searches go on past 10 trials

Every side is one fresh process that calls ``run_search`` (with a progress line per epoch
in its log, and without the dashboard notes ``hpsearch run`` adds, on every side alike), on
the same data subset (sms_spam by default), sampler, trials and epochs; only the pruner
differs. Two kinds of preset:

hpsearch's own ``[pruner]`` settings (the figure is of the code a user runs):

* ``none``: no pruning, every trial trains every epoch.
* ``default``: hpsearch's defaults, whatever they are (``best-auc-updates-se1-s1-p2``
  since 2026-11-27; ``median-w0`` without early stopping before). Every other preset
  runs without early stopping unless its name ends in ``-p2``.
* ``median``: Optuna's MedianPruner on the objective at the same epoch, with hpsearch's
  settings for it (3 start-up trials, warm-up 0).
* ``median-w0`` / ``median-w1``: the median pruner judging from epoch 1 / from epoch 2
  (``warmup_epochs = 0`` / ``1``; ``median-early`` is the old name of ``median-w0``).
* ``best-auc-updates-se1``: ``name = "best"``: a trial stops when its best validation ROC
  AUC is below the best complete trial's, read after at most as many optimiser updates,
  by more than 1 standard error of the difference (``margin_se``), here after 3 start-up
  trials; ``-s1``: after 1 (``startup_trials = 1``); ``best-auc-updates-se05-s1``: with a
  margin of 0.5 standard errors; ``best-auc-updates-se1-s1-p2``: ``-s1`` with early stopping
  inside each trial (``early_stopping_patience = 2``: a trial ends, complete, after 2
  epochs without a new best F1, counted once its model no longer calls every example one
  class).
* ``halving`` / ``hyperband``: successive halving / Hyperband over epochs, reduction 3.

Rules hpsearch measured and dropped, passed to ``run_search`` as its pruner from
``_research_pruners.py`` (the median rule's settings unless the name says otherwise:
3 start-up trials, warm-up 0):

* ``median-auc-updates``: the median rule on validation ROC AUC instead of F1, with trials
  compared after at most as many optimiser updates instead of at the same epoch;
  ``median-auc`` and ``median-updates`` make one of the two changes each.
* ``median-auc-updates-se1`` / ``-se05``: the same, stopping a trial only when its ROC AUC
  is below the median by more than 1 / 0.5 standard errors of the difference.
* ``best-auc-lr-se1-s1``: ``best-auc-updates-se1-s1`` with trials compared after at most as
  large a sum of the learning rates of their updates, so that a trial at a low learning
  rate is judged against the others' early epochs, not against epochs in which they moved
  further (the sums are recorded by ``_research_pruners.LrSumRecorder``).

Any preset with ``+grouped`` appended runs the same on length-grouped training batches
(``[recipe] train_sampling_strategy = "group_by_length"``).

Two readings of "fewer epochs for the same best F1": at the same number of trials (the
first ``--trials`` trials of every side), and at the same budget: ``--pruned-trials`` lets
the pruned searches go on, and the summary gives, for each, the best F1 reached within the
epochs the unpruned search trained, and the epochs each search needed to first reach the
unpruned search's best F1. A search is sequential and deterministic, so the first
``--trials`` trials of a longer pruned search are exactly the shorter search.

Epochs trained and best F1 do not depend on the machine's load; wall time does, so the
sides run in lockstep: one process each, taking turns at every epoch (see _harness.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import _harness as h

# hpsearch's [pruner] settings, as TOML. Each names every setting its rule depends on, so
# that a later change of hpsearch's defaults does not change what a preset measures.
CONFIGS = {
    "none": "[pruner]\nname = 'none'\n",
    "default": "",  # no [pruner] table: whatever hpsearch's default is
    "median": "[pruner]\nname = 'median'\n",
    "median-w0": "[pruner]\nname = 'median'\nwarmup_epochs = 0\n",
    "median-w1": "[pruner]\nname = 'median'\nwarmup_epochs = 1\n",
    "best-auc-updates-se1": "[pruner]\nname = 'best'\nmargin_se = 1.0\nstartup_trials = 3\nwarmup_epochs = 0\n",
    # ... judging from the second trial on: one complete trial is a reference already.
    "best-auc-updates-se1-s1": "[pruner]\nname = 'best'\nmargin_se = 1.0\nstartup_trials = 1\nwarmup_epochs = 0\n",
    "best-auc-updates-se1-s1-p2": "early_stopping_patience = 2\n"
    "[pruner]\nname = 'best'\nmargin_se = 1.0\nstartup_trials = 1\nwarmup_epochs = 0\n",
    "best-auc-updates-se05-s1": "[pruner]\nname = 'best'\nmargin_se = 0.5\nstartup_trials = 1\nwarmup_epochs = 0\n",
    "halving": "[pruner]\nname = 'halving'\nreduction_factor = 3\n",
    "hyperband": "[pruner]\nname = 'hyperband'\nreduction_factor = 3\n",
}
# The name the first measurements used for median-w0 (when the default warm-up was 1 epoch).
CONFIGS["median-early"] = CONFIGS["median-w0"]
# Rules that hpsearch's [pruner] table no longer offers, as _research_pruners.make_pruner
# specs; a key left out takes the median rule's setting (_research_pruners.SPEC_DEFAULTS).
RESEARCH = {
    # The median rule on ROC AUC, with trials compared after at most as many optimiser
    # updates; and each of the two changes alone.
    "median-auc-updates": {"metric": "roc_auc", "align": "updates"},
    "median-auc": {"metric": "roc_auc", "align": "epochs"},
    "median-updates": {"metric": "objective", "align": "updates"},
    # ... stopping only gaps larger than the validation split can resolve.
    "median-auc-updates-se1": {"metric": "roc_auc", "align": "updates", "margin_se": 1.0},
    "median-auc-updates-se05": {"metric": "roc_auc", "align": "updates", "margin_se": 0.5},
    # The default rule with trials compared after as large a sum of learning rates instead
    # of as many updates.
    "best-auc-lr-se1-s1": {
        "metric": "roc_auc",
        "align": "lr_sum",
        "margin_se": 1.0,
        "reference": "best",
        "startup_trials": 1,
    },
}
PRESETS = [*CONFIGS, *RESEARCH]
# A preset name ending in this trains on length-grouped batches (the Trainer's
# LengthGroupedSampler) instead of random ones: less padding, other batches for a seed.
GROUPED = "+grouped"


def preset_text(name: str) -> str | None:
    """The config text of a preset name, None if unknown."""
    base = name.removesuffix(GROUPED)
    if base not in CONFIGS and base not in RESEARCH:
        return None
    text = CONFIGS.get(base, "")  # a research rule replaces whatever pruner the table names
    if base != "default" and "early_stopping_patience" not in text:
        text = "early_stopping_patience = 0\n" + text  # as measured: every trial the pruner spares trains every epoch
    if name.endswith(GROUPED):
        text += "[recipe]\ntrain_sampling_strategy = 'group_by_length'\n"
    return text


def research_spec(name: str) -> dict[str, Any] | None:
    """The _research_pruners spec of a preset whose rule hpsearch no longer offers, else None."""
    return RESEARCH.get(name.removesuffix(GROUPED))


def main() -> None:
    h.gate()  # a child waits here for its first turn; the parent passes straight through
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--role", choices=("parent", "child"), default="parent", help=argparse.SUPPRESS)
    p.add_argument("--dataset", default=str(h.SMS_SPAM), help="dataset folder (default ../shared/data/sms_spam)")
    p.add_argument("--train", type=int, default=400, help="training rows")
    p.add_argument("--eval", type=int, default=400, help="validation (and test) rows")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument(
        "--pruned-trials",
        type=int,
        default=None,
        help="trials of the pruned searches (default --trials); the first --trials are compared as the same search",
    )
    p.add_argument("--max-length", type=int, default=128, help="tokens per text (hpsearch's default 128)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument(
        "--pruners",
        default="none,median",
        help=f"comma-separated presets: {', '.join(PRESETS)}; "
        f"any of them with {GROUPED} trains on length-grouped batches",
    )
    p.add_argument(
        "--baseline",
        default=None,
        metavar="FILE",
        help="take the sides named in --reuse from this earlier result file instead of running them "
        "(epochs and F1 are deterministic)",
    )
    p.add_argument("--reuse", default="none", help="comma-separated presets to take from --baseline (default none)")
    p.add_argument("--seeds", default="42", help="comma-separated TPE seeds; every pruner runs once with each")
    p.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    p.add_argument("--src", default=None, help="run hpsearch from this source tree (a proposed change)")
    p.add_argument("--preset", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "child":
        h.emit(_child(args))
        return
    names = args.pruners.split(",")
    unknown = [n for n in names if preset_text(n) is None]
    if unknown:
        p.error(
            f"unknown pruner preset {unknown[0]!r}; expected one of {', '.join(PRESETS)}, "
            f"each optionally with {GROUPED}"
        )
    seeds = [int(x) for x in args.seeds.split(",")]
    reused = _reused_runs(Path(args.baseline), args.reuse.split(","), seeds) if args.baseline else []
    pruned_trials = args.pruned_trials or args.trials
    if pruned_trials < args.trials:
        p.error(f"--pruned-trials must be at least --trials ({args.trials}); got {pruned_trials}")
    common = [
        "--dataset",
        args.dataset,
        "--train",
        str(args.train),
        "--eval",
        str(args.eval),
        "--epochs",
        str(args.epochs),
        "--max-length",
        str(args.max_length),
    ]
    logs = Path(tempfile.mkdtemp(prefix="bench-pruning-logs-"))
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-pruning-") as tmp:
        lockstep = h.Lockstep()
        for seed in seeds:
            for name in names:
                if any(r["pruner"] == name and r["seed"] == seed for r in reused):
                    continue
                key = name if len(seeds) == 1 else f"{name}@{seed}"
                work = Path(tmp) / key
                work.mkdir()
                trials = args.trials if name == "none" else pruned_trials
                argv = [
                    __file__,
                    "--role",
                    "child",
                    "--preset",
                    name,
                    "--seed",
                    str(seed),
                    "--workdir",
                    str(work),
                    "--trials",
                    str(trials),
                    *common,
                ]
                lockstep.add(key, argv, src=args.src, cwd=work, log=logs / f"{key}.log")
        for key, out in lockstep.run().items():
            out["pruner"], _, seed = key.partition("@")
            out["seed"] = int(seed or seeds[0])
            runs.append(out)
            print(
                f"{key:>14}: {out['wall_s']:.1f} s, {out['epochs_trained']} epochs, {out['pruned']} pruned, "
                f"best val F1 {out['best_val_f1']:.4f}, mean load {out['load1_mean']}",
                file=sys.stderr,
            )
    runs += reused
    summary: dict[str, Any] = {}
    for seed in seeds:
        of_seed = [r for r in runs if r["seed"] == seed]
        base = next((r for r in of_seed if r["pruner"] == "none"), of_seed[0])
        # The unpruned search of --trials trials: the first --trials of a longer one reused.
        base_budget = _budget(base["trials"][: args.trials])
        for r in of_seed:
            key = r["pruner"] if len(seeds) == 1 else f"{r['pruner']}@{seed}"
            same = _budget(r["trials"][: args.trials])  # the same search: its first --trials trials
            budget = _budget(r["trials"])
            summary[key] = {
                "wall_s": r["wall_s"],
                "trials_run": len(r["trials"]),
                "epochs_trained": same["epochs"],
                "pruned": r["pruned"],
                "best_val_f1": round(same["best"], 4),
                "max_epoch_val_f1": round(r["max_epoch_val_f1"], 4),
                "test_f1_shipped": None if r["test_f1"] is None else round(r["test_f1"], 4),
                "epochs_saved_vs_none": round(1 - same["epochs"] / base_budget["epochs"], 3),
                # wall times compare only within one invocation, where the sides took turns
                "wall_ratio_vs_none": None
                if r.get("reused_from") != base.get("reused_from")
                else round(_wall_of_first(r, same["epochs"]) / _wall_of_first(base, base_budget["epochs"]), 3),
                "reused_from": r.get("reused_from"),
                "best_f1_minus_none": round(same["best"] - base_budget["best"], 4) + 0.0,  # no -0.0
                # the same budget: as many epochs as the unpruned search trained
                "best_f1_within_none_epochs": round(_best_within(budget["curve"], base_budget["epochs"]), 4),
                "epochs_to_none_best": _epochs_to(budget["curve"], base_budget["best"]),
            }
    if len(seeds) > 1:
        for name in names:
            rows = [v for k, v in summary.items() if k.partition("@")[0] == name]
            summary[f"{name} (mean over seeds)"] = {
                field: None
                if any(row[field] is None for row in rows)
                else round(sum(row[field] for row in rows) / len(rows), 4)
                for field in (
                    "epochs_trained",
                    "best_val_f1",
                    "epochs_saved_vs_none",
                    "wall_ratio_vs_none",
                    "best_f1_minus_none",
                    "best_f1_within_none_epochs",
                )
            }
    presets = {n: {"config": preset_text(n), "research_pruner": research_spec(n)} for n in names}
    payload = {
        "benchmark": "pruning",
        "command": h.command_line(),
        "machine": h.machine(),
        "settings": vars(args),
        "presets": presets,
        "runs": runs,
        "summary": summary,
    }
    path = h.save("pruning", payload)
    print(json.dumps(summary, indent=2))
    print(f"saved {path.relative_to(h.REPO)}; child logs in {logs}", file=sys.stderr)


def _reused_runs(path: Path, names: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    picked = [
        dict(r, reused_from=r.get("reused_from") or path.name)
        for r in runs
        if r["pruner"] in names and r["seed"] in seeds
    ]
    missing = {(n, s) for n in names for s in seeds} - {(r["pruner"], r["seed"]) for r in picked}
    if missing:
        raise SystemExit(f"{path} has no run of {sorted(missing)[0]}")
    return picked


def _budget(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Epochs trained, best value, and the best value after each trial (in trial order,
    which is the order they ran in: one worker) against the epochs trained so far."""
    epochs, best, curve = 0, 0.0, []
    for t in sorted(trials, key=lambda t: t["number"]):
        epochs += len(t["f1"])
        if t["state"] == "complete":
            # Older result files lack "value": it was the last epoch's F1 (checkpoint "last").
            best = max(best, t["value"] if t.get("value") is not None else t["f1"][-1])
        curve.append((epochs, best))
    return {"epochs": epochs, "best": best, "curve": curve}


def _wall_of_first(run: dict[str, Any], epochs: int) -> float:
    """Wall time of a run's first ``epochs`` epochs: its start-up, then one stretch up to
    its first epoch and one per epoch (each ends where the next epoch begins)."""
    return run["start_s"] + sum(x["s"] for x in run["stretches"][: epochs + 1])


def _best_within(curve: list[tuple[int, float]], epochs: int) -> float:
    return max((b for e, b in curve if e <= epochs), default=0.0)


def _epochs_to(curve: list[tuple[int, float]], target: float) -> int | None:
    """Epochs trained when the search first held a trial at least as good as ``target``
    (to 4 decimals: older result files hold F1 rounded to 4)."""
    return next((e for e, b in curve if round(b, 4) >= round(target, 4)), None)


def _child(args: argparse.Namespace) -> dict[str, Any]:
    from hpsearch import load_config, run_search

    path = Path(args.workdir) / "pruner.toml"
    path.write_text(preset_text(args.preset) + f"\n[sampler]\nseed = {args.seed}\n", encoding="utf-8")
    config = load_config(
        path,
        overrides={
            "dataset": args.dataset,
            "max_train_samples": args.train,
            "max_eval_samples": args.eval,
            "epochs": args.epochs,
            "max_length": args.max_length,
            "trials": args.trials,
            "storage": f"sqlite:///{args.workdir}/hpsearch.db",
            "workdir": f"{args.workdir}/studies",
        },
    )
    listeners, callbacks, pruner = [h.progress_listener()], [h.epoch_gate()], None
    spec = research_spec(args.preset)
    if spec is not None:
        import _research_pruners as research

        pruner = research.make_pruner(spec, objective=config.objective)
        if research.needs_lr_sum(spec):
            recorder = research.LrSumRecorder()
            listeners.append(recorder)
            callbacks.append(recorder.callback)
    run_search(config, listeners=listeners, callbacks=callbacks, pruner=pruner)
    return h.study_summary(config.storage, config.study)


if __name__ == "__main__":
    main()
