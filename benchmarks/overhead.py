"""Overhead: hpsearch's wall time against a hand-written loop's training and evaluation steps.

    python benchmarks/overhead.py                      # 4 fixed trials x 2 epochs, 256/200 rows, 64 tokens
    python benchmarks/overhead.py --rounds 2           # A B B A: hpsearch, floor, floor, hpsearch
    python benchmarks/overhead.py --variant proposed=/tmp/hp-proposed   # also a patched tree

Both sides train the same fixed list of trial configurations (no pruning) of the same model
on the same tokenised data with the same batch sizes and epochs, one fresh process each:

* hpsearch: the real ``hpsearch run`` command (in a child process, with timers wrapped
  around the library calls it makes), on a study into which the fixed configurations were
  enqueued. Its figure is the child's whole wall time, interpreter start and imports included.
* floor: a minimal loop written here: a deep copy of the same base model, fused AdamW with
  the Trainer's parameter groups, the linear schedule, gradient clipping at 1.0, the same
  data collator, and an evaluation each epoch under ``torch.inference_mode()``. Its figure
  is the time of its training and evaluation steps alone (data and model made untimed).

Both evaluate in batches of the recipe's ``per_device_eval_batch_size`` and run with the
heap settings hpsearch makes for a CPU search (the floor gets them through glibc's
environment, ``_harness.HEAP_SETTINGS_ENV``). The ratio hpsearch / floor is the overhead
(target at most 1.10). The hpsearch side's buckets say where the rest goes: each is a call
into a library (transformers, torch, Optuna's storage and sampler, the dashboard's notes,
``gc``), timed from outside hpsearch; what hpsearch does between them is "hpsearch (other)".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h

# Fixed trial configurations: every batch size of the default space, warm-up and decay on and off.
CONFIGS = [
    {"learning_rate": 5e-05, "per_device_train_batch_size": 8, "warmup_ratio": 0.0, "weight_decay": 0.0},
    {"learning_rate": 3e-05, "per_device_train_batch_size": 16, "warmup_ratio": 0.1, "weight_decay": 0.01},
    {"learning_rate": 8e-05, "per_device_train_batch_size": 32, "warmup_ratio": 0.05, "weight_decay": 0.05},
    {"learning_rate": 2e-05, "per_device_train_batch_size": 8, "warmup_ratio": 0.15, "weight_decay": 0.0},
    {"learning_rate": 1e-04, "per_device_train_batch_size": 16, "warmup_ratio": 0.0, "weight_decay": 0.1},
    {"learning_rate": 4e-05, "per_device_train_batch_size": 32, "warmup_ratio": 0.2, "weight_decay": 0.02},
]


def main() -> None:
    h.gate()  # a child waits here for its first turn; the parent passes straight through
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--role", choices=("parent", "hpsearch", "floor"), default="parent", help=argparse.SUPPRESS)
    p.add_argument("--dataset", default=str(h.SMS_SPAM), help="dataset folder (default ../shared/data/sms_spam)")
    p.add_argument("--model", default=None, help="model folder (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--train", type=int, default=256, help="training rows")
    p.add_argument("--eval", type=int, default=200, help="validation (and test) rows")
    p.add_argument("--trials", type=int, default=4, help=f"how many of the {len(CONFIGS)} fixed configurations")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--rounds", type=int, default=1, help="hpsearch/floor pairs, in A B B A order")
    p.add_argument("--variant", action="append", default=[], help="NAME=PATH: also time hpsearch from this source tree")
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    h.dispatch(args, _parent, hpsearch=_hpsearch_child, floor=_floor_child)


# --------------------------------------------------------------------------- parent


def _parent(args: argparse.Namespace) -> None:
    sides = [("hpsearch", None), *[tuple(v.split("=", 1)) for v in args.variant], ("floor", None)]
    base = _child_args(args)
    runs: list[dict[str, Any]] = []
    logs = Path(tempfile.mkdtemp(prefix="bench-overhead-logs-"))
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
            lockstep = h.Lockstep()
            for name, src in sides if r % 2 == 0 else list(reversed(sides)):
                role = "floor" if name == "floor" else "hpsearch"
                work = Path(tmp) / name
                work.mkdir()
                lockstep.add(
                    name,
                    [__file__, "--role", role, "--workdir", str(work), *base],
                    src=src,
                    cwd=work,
                    log=logs / f"{r}-{name}.log",
                    env=h.HEAP_SETTINGS_ENV if role == "floor" else None,
                )
            for name, out in lockstep.run().items():
                out["side"], out["round"] = name, r
                runs.append(out)
                print(
                    f"round {r} {name:>10}: {out['wall_s']:.1f} s wall, {out['cpu_s']:.1f} s CPU, "
                    f"steps {out.get('steps_s', float('nan')):.1f} s, mean load {out['load1_mean']}",
                    file=sys.stderr,
                )
    summary = _summarise(runs, [s for s, _ in sides])
    payload = {
        "benchmark": "overhead",
        "command": h.command_line(),
        "machine": h.machine(),
        "settings": vars(args),
        "configs": CONFIGS[: args.trials],
        "runs": runs,
        "summary": summary,
    }
    path = h.save("overhead", payload)
    print(json.dumps(summary, indent=2))
    print(f"saved {path.relative_to(h.REPO)}; child logs in {logs}", file=sys.stderr)


def _child_args(args: argparse.Namespace) -> list[str]:
    out = [
        "--dataset",
        args.dataset,
        "--train",
        str(args.train),
        "--eval",
        str(args.eval),
        "--trials",
        str(args.trials),
        "--epochs",
        str(args.epochs),
        "--max-length",
        str(args.max_length),
    ]
    if args.model:
        out += ["--model", args.model]
    return out


def _summarise(runs: list[dict[str, Any]], sides: list[str]) -> dict[str, Any]:
    """Per side: wall and CPU time against the floor of the same round, and the buckets.

    The floor's figure is its training and evaluation steps (its buckets' sum); hpsearch's
    is its whole process, less the benchmark's own enqueueing and reading back.
    """
    floors = {r["round"]: r for r in runs if r["side"] == "floor"}
    for f in floors.values():
        f["steps_cpu_s"] = round(sum(v["cpu_s"] for v in f["buckets"].values()), 3)
    out: dict[str, Any] = {
        "floor_steps_s": [f["steps_s"] for f in floors.values()],
        "floor_steps_cpu_s": [f["steps_cpu_s"] for f in floors.values()],
        "floor_best_f1": max(f["best_f1"] for f in floors.values()),
    }
    own_work = ("benchmark: enqueue fixed configurations", "benchmark: read results", "benchmark: storage")
    for side in sides:
        if side == "floor":
            continue
        mine = [r for r in runs if r["side"] == side]
        for r in mine:
            r["wall_s"] = round(r["wall_s"] - sum(r["buckets"].get(k, {}).get("s", 0.0) for k in own_work), 3)
            r["cpu_s"] = round(r["cpu_s"] - sum(r["buckets"].get(k, {}).get("cpu_s", 0.0) for k in own_work), 3)
            counted = sum(v["s"] for k, v in r["buckets"].items() if not k.startswith("benchmark:"))
            r["buckets"]["interpreter start"] = {"s": r["start_s"], "cpu_s": None, "calls": 1}
            r["buckets"]["interpreter exit and unattributed"] = {
                "s": round(r["wall_s"] - r["start_s"] - counted, 3),
                "cpu_s": None,
                "calls": 1,
            }
        buckets: dict[str, float] = {}
        for r in mine:
            for k, v in r["buckets"].items():
                if not k.startswith("benchmark:"):
                    buckets[k] = buckets.get(k, 0.0) + v["s"] / len(mine)
        out[side] = {
            "wall_s": [r["wall_s"] for r in mine],
            "cpu_s": [r["cpu_s"] for r in mine],
            # Each run against the floor run beside it (same rounds, turns at every epoch).
            "wall_ratio_to_floor": [round(r["wall_s"] / floors[r["round"]]["steps_s"], 3) for r in mine],
            "cpu_ratio_to_floor": [round(r["cpu_s"] / floors[r["round"]]["steps_cpu_s"], 3) for r in mine],
            "best_f1": max(r["best_f1"] for r in mine),
            "same_f1_as_floor": all(r["f1_by_trial"] == floors[r["round"]]["f1_by_trial"] for r in mine),
            "buckets_s": {k: round(v, 2) for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])},
        }
    return out


# --------------------------------------------------------------------------- hpsearch side


def _hpsearch_child(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    b = h.Buckets()
    with b.bucket("imports"):
        import datasets  # noqa: F401
        import optuna
        import optuna_dashboard
        import sklearn.metrics  # noqa: F401
        import torch  # noqa: F401
        import transformers
        import transformers.models.bert.modeling_bert  # noqa: F401
        from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments  # noqa: F401

        import hpsearch
        import hpsearch.cli
        from hpsearch import schema

        # What the command uses anyway, loaded here so that its import is not counted as work.
        for name in ("load_task", "tokenize_task", "load_tokenizer", "load_base_model", "run_search"):
            getattr(hpsearch, name)
    _instrument(b, transformers, optuna, optuna_dashboard)
    _enqueue_fixed_configs(b, optuna, args.trials)
    h.gate_each_epoch_in_every_trainer(b)
    argv = [
        "run",
        "--dataset",
        args.dataset,
        "--max-train-samples",
        str(args.train),
        "--max-eval-samples",
        str(args.eval),
        "--epochs",
        str(args.epochs),
        "--pruner",
        "none",
        "--early-stopping-patience",
        "0",
        "--trials",
        str(args.trials),
        "--max-length",
        str(args.max_length),
        "--study",
        "bench",
        "--storage",
        f"sqlite:///{args.workdir}/hpsearch.db",
        "--workdir",
        f"{args.workdir}/studies",
    ]
    if args.model:
        argv += ["--model", args.model]
    with b.bucket("hpsearch (other)"):
        code = hpsearch.cli.main(argv)
    if code:
        raise SystemExit(f"hpsearch run exited {code}")
    in_process = time.perf_counter() - t0 - b.seconds.get("benchmark: waiting for turn", 0.0)
    with b.bucket("benchmark: read results"):
        study = optuna.load_study(study_name="bench", storage=f"sqlite:///{args.workdir}/hpsearch.db")
        rows = [schema.rows(t) for t in study.trials]
    steps = sum(
        v["s"]
        for k, v in b.as_dict().items()
        if k
        in (
            "training steps",
            "optimizer step",
            "grad clipping",
            "train loop (Trainer)",
            "evaluation (per epoch)",
            "metrics",
            "collate",
        )
    )
    return {
        "in_process_s": round(in_process, 3),
        "steps_s": round(steps, 3),
        "buckets": b.as_dict(),
        "best_f1": max(r[-1]["f1"] for r in rows),
        "f1_by_trial": [[round(e["f1"], 4) for e in r] for r in rows],
        "epochs_trained": sum(len(r) for r in rows),
    }


def _enqueue_fixed_configs(b: h.Buckets, optuna: Any, trials: int) -> None:
    """Make the study run CONFIGS in order: hpsearch enqueues the recipe (CONFIGS[0]) as
    trial 0 of a new study; the others are enqueued behind it at the search's first ask,
    which every way of running trials (``optimize``, or ``ask`` and ``tell``) goes through."""
    ask = optuna.study.Study.ask
    enqueued = [False]  # one study per run: enqueue once

    def ask_fixed(study: Any, *a: Any, **k: Any) -> Any:
        if not enqueued[0]:
            enqueued[0] = True
            with b.bucket("benchmark: enqueue fixed configurations"):
                first = study.get_trials(deepcopy=False)
                if len(first) != 1 or first[0].params != {} and first[0].params != CONFIGS[0]:
                    raise SystemExit(
                        f"expected a new study holding the recipe trial only, got {[t.params for t in first]}"
                    )
                waiting = first[0].system_attrs.get("fixed_params")
                if waiting is not None and waiting != CONFIGS[0]:
                    raise SystemExit(f"the recipe trial {waiting} is not CONFIGS[0] {CONFIGS[0]}")
                for config in CONFIGS[1:trials]:
                    study.enqueue_trial(config)
        return ask(study, *a, **k)

    optuna.study.Study.ask = ask_fixed


def _instrument(b: h.Buckets, transformers: Any, optuna: Any, optuna_dashboard: Any) -> None:
    """Timers around the library calls of a run; the innermost bucket running owns each second."""
    import gc

    import accelerate
    import torch

    b.wrap(optuna.study.Study, "optimize", "optuna (ask, tell, sampler)")
    b.wrap(optuna.study.Study, "ask", "optuna (ask, tell, sampler)")
    b.wrap(optuna.study.Study, "tell", "optuna (ask, tell, sampler)")
    # Every call that reaches the database, whichever hpsearch or Optuna layer makes it; not
    # the benchmark's own (enqueueing, reading back), which are timed apart.
    rdb = optuna.storages.RDBStorage
    for name in [n for n in vars(rdb) if not n.startswith("_") and callable(vars(rdb)[n])]:
        b.wrap(
            rdb,
            name,
            lambda *a, **k: "benchmark: storage" if (b.current() or "").startswith("benchmark:") else "storage",
        )
    b.wrap(transformers.Trainer, "train", "train loop (Trainer)")
    b.wrap(transformers.Trainer, "training_step", "training steps")
    b.wrap(
        transformers.Trainer,
        "evaluate",
        lambda *a, **k: (
            "evaluation (test set of kept model)" if k.get("metric_key_prefix") == "test" else "evaluation (per epoch)"
        ),
    )
    b.wrap(transformers.Trainer, "save_model", "checkpoint (best model write)")
    b.wrap(transformers.DataCollatorWithPadding, "__call__", "collate")
    b.wrap(torch.optim.AdamW, "step", "optimizer step")
    b.wrap(accelerate.Accelerator, "clip_grad_norm_", "grad clipping")
    b.wrap(optuna_dashboard, "save_note", "dashboard notes and plot after each trial")
    b.wrap(optuna_dashboard, "save_plotly_graph_object", "dashboard notes and plot after each trial")
    b.wrap(gc, "collect", "memory release (gc)")


# --------------------------------------------------------------------------- floor side


def _floor_child(args: argparse.Namespace) -> dict[str, Any]:
    import copy

    import torch
    import transformers
    from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup, set_seed

    from hpsearch import load_base_model, load_config, load_task, load_tokenizer, resolve_model, tokenize_task

    # The floor runs with the heap settings hpsearch makes for a CPU search (its parent put
    # them in its environment), so that they do not flatter the ratio.
    overrides = {
        "dataset": args.dataset,
        "max_train_samples": args.train,
        "max_eval_samples": args.eval,
        "max_length": args.max_length,
        "epochs": args.epochs,
    }
    if args.model:
        overrides["model"] = args.model
    config = load_config(overrides=overrides)
    transformers.utils.logging.set_verbosity_error()
    source = resolve_model(config.model)
    task = load_task(config)
    tokenizer = load_tokenizer(source, config)
    data = tokenize_task(task, tokenizer, config.max_length)
    base = load_base_model(source, config, task.label_names)
    train_set = data["train"]
    val_set = data["validation"]
    collate = DataCollatorWithPadding(tokenizer)

    b = h.Buckets()
    b.wrap(DataCollatorWithPadding, "__call__", "collate")
    f1_by_trial = []
    for params in CONFIGS[: args.trials]:
        set_seed(config.recipe.seed)
        model = copy.deepcopy(base)
        model.train()
        batch = params["per_device_train_batch_size"]
        loader = torch.utils.data.DataLoader(
            train_set,
            batch_size=batch,
            shuffle=True,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(config.recipe.seed),
        )
        total_steps = math.ceil(len(train_set) / batch) * args.epochs
        no_decay = ("bias", "LayerNorm.weight", "layernorm", "layer_norm")
        groups = [
            {
                "params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
                "weight_decay": params["weight_decay"],
            },
            {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=params["learning_rate"], betas=(0.9, 0.999), eps=1e-08, fused=True)
        schedule = get_linear_schedule_with_warmup(
            optimizer, math.ceil(params["warmup_ratio"] * total_steps), total_steps
        )
        rows = []
        for _ in range(args.epochs):
            h.gate()  # take turns with the hpsearch side at every epoch
            with b.bucket("training steps"):
                for inputs in loader:
                    loss = model(**inputs).loss
                    loss.backward()
                    with b.bucket("grad clipping"):
                        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    with b.bucket("optimizer step"):
                        optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
            with b.bucket("evaluation"):
                rows.append(
                    _evaluate(
                        model,
                        val_set,
                        collate,
                        config.recipe.per_device_eval_batch_size,
                        task.average,
                        b,
                    )
                )
        f1_by_trial.append([round(r["f1"], 4) for r in rows])
        del model, optimizer, schedule
    steps = sum(v for v in b.seconds.values())
    return {
        "in_process_s": None,
        "steps_s": round(steps, 3),
        "buckets": b.as_dict(),
        "best_f1": max(r[-1] for r in f1_by_trial),
        "f1_by_trial": f1_by_trial,
        "epochs_trained": args.epochs * len(f1_by_trial),
    }


def _evaluate(model: Any, dataset: Any, collate: Any, batch: int, average: str, b: h.Buckets) -> dict[str, float]:
    import numpy as np
    import torch
    from sklearn.metrics import precision_recall_fscore_support

    model.eval()
    predictions, labels = [], []
    rows = dataset.to_dict()
    keys = [k for k in rows if k in ("input_ids", "attention_mask", "token_type_ids", "labels")]
    with torch.inference_mode():
        for start in range(0, len(rows["labels"]), batch):
            inputs = collate(
                [{k: rows[k][i] for k in keys} for i in range(start, min(start + batch, len(rows["labels"])))]
            )
            logits = model(**inputs).logits
            predictions.append(logits.argmax(-1).numpy())
            labels.append(inputs["labels"].numpy())
    model.train()
    with b.bucket("metrics"):
        # F1 as hpsearch computes it: a class never predicted counts as precision 0
        _, _, f1, _ = precision_recall_fscore_support(
            np.concatenate(labels), np.concatenate(predictions), average=average, zero_division=0
        )
        return {"f1": float(f1)}


if __name__ == "__main__":
    main()
