"""hpsearch against ``Trainer.hyperparameter_search(backend="optuna")`` on the same search.

    python benchmarks/vs_trainer.py                          # sms_spam, 8 trials x 3 epochs, 600/400 rows
    python benchmarks/vs_trainer.py --dataset ../shared/data/sms_spam --trials 10 --epochs 4

Both sides get the same model (the packaged all-MiniLM-L6-v2), the same data subset and
tokens (hpsearch's reader and tokenizer, so the rows are the same), the same search space
(hpsearch's default: learning rate 1e-5..1e-4 log, batch {8, 16, 32}, warm-up 0..0.2,
weight decay 0..0.1), a TPE sampler with seed 42 and 5 start-up trials, the same number of
trials and epochs, and each is used as its documentation shows, with its own defaults
otherwise (hpsearch: the ``hpsearch run`` command with its default pruner and early
stopping, the recipe as trial 0, the recipe's evaluation batch; Trainer: optuna's default
MedianPruner on the global step, evaluation batch 8, a fresh ``from_pretrained`` per
trial). Each runs in a fresh process, and the two take turns at
every epoch (see _harness.py), so the figures are side by side from one run of this script.

Both are compared on the test F1 of the model each hands back, and each side's checkpoint
rule is named in the output:

- hpsearch ranks a trial by its best epoch and ships that epoch's checkpoint of the best
  trial (``best-model/``); its test F1 is the one stored with that trial.
- ``Trainer.hyperparameter_search`` ranks a trial by its last epoch (``compute_objective``
  reads the metrics of the final evaluation) and keeps no model. The script retrains its
  best parameters once with ``load_best_model_at_end=True`` on validation F1, the Trainer's
  own way to hand back the best epoch, and tests that model. The retraining evaluates only
  the validation split at each epoch, as the search's trials do, and the test split once
  after training: every evaluation draws from torch's global random stream (a DataLoader's
  seed), so an extra one per epoch would reshuffle the next epoch's batches and the
  retraining would no longer repeat the search trial. Its per-epoch validation F1 is kept
  beside that trial's, to show it does. The retraining time is reported apart from (and
  added to) the search time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import _harness as h


def main() -> None:
    h.gate()  # a child waits here for its first turn; the parent passes straight through
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--role", choices=("parent", "hpsearch", "trainer"), default="parent", help=argparse.SUPPRESS)
    p.add_argument("--dataset", default=str(h.SMS_SPAM), help="dataset folder (default ../shared/data/sms_spam)")
    p.add_argument("--train", type=int, default=600, help="training rows")
    p.add_argument("--eval", type=int, default=400, help="validation (and test) rows")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128, help="tokens per text (hpsearch's default 128)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=42, help="the sampler's seed, both sides")
    p.add_argument("--rounds", type=int, default=1, help="pairs of runs, in A B B A order")
    p.add_argument("--src", default=None, help="run the hpsearch side from this source tree (a proposed change)")
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.dataset = str(Path(args.dataset).resolve())  # the children run in folders of their own
    h.dispatch(args, _parent, hpsearch=_hpsearch_child, trainer=_trainer_child)


def _parent(args: argparse.Namespace) -> None:
    common = [
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
        "--seed",
        str(args.seed),
        "--max-length",
        str(args.max_length),
    ]
    runs = []
    logs = Path(tempfile.mkdtemp(prefix="bench-vs-trainer-logs-"))
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-vs-trainer-") as tmp:
            lockstep = h.Lockstep()
            for side in ["hpsearch", "trainer"] if r % 2 == 0 else ["trainer", "hpsearch"]:
                work = Path(tmp) / side
                work.mkdir()
                lockstep.add(
                    side,
                    [__file__, "--role", side, "--workdir", str(work), *common],
                    src=args.src if side == "hpsearch" else None,
                    cwd=work,
                    log=logs / f"{r}-{side}.log",
                )
            for side, out in lockstep.run().items():
                out["side"], out["round"] = side, r
                runs.append(out)
                print(
                    f"round {r} {side:>8}: {out['wall_s']:.1f} s, best val F1 {out['best_val_f1']:.4f}, "
                    f"test F1 of the model handed back {out['test_f1']:.4f}, epochs {out['epochs_trained']}, "
                    f"mean load {out['load1_mean']}; {out['checkpoint_rule']}",
                    file=sys.stderr,
                )
    summary = {}
    for side in ("hpsearch", "trainer"):
        mine = [x for x in runs if x["side"] == side]
        summary[side] = {
            "wall_s": [x["wall_s"] for x in mine],
            "search_s": [x.get("search_s", x["wall_s"]) for x in mine],
            "retrain_s": [x.get("retrain_s", 0.0) for x in mine],
            "best_val_f1": [x["best_val_f1"] for x in mine],
            "checkpoint_rule": mine[0]["checkpoint_rule"] if mine else None,
            "test_f1": [x["test_f1"] for x in mine],
            "retrain_repeats_search_trial": [x.get("retrain_repeats_search_trial") for x in mine],
            "epochs_trained": [x["epochs_trained"] for x in mine],
            "pruned": [x["pruned"] for x in mine],
        }
    # Per round: hpsearch's whole run against the Trainer's search plus its retraining, and
    # against the Trainer's run without the retraining (its search alone).
    pairs = list(
        zip([x for x in runs if x["side"] == "hpsearch"], [x for x in runs if x["side"] == "trainer"], strict=True)
    )
    summary["wall_ratio_hpsearch_to_trainer"] = [round(a["wall_s"] / b["wall_s"], 3) for a, b in pairs]
    summary["wall_ratio_hpsearch_to_trainer_search_only"] = [
        round(a["wall_s"] / (b["wall_s"] - b["retrain_s"]), 3) for a, b in pairs
    ]
    payload = {
        "benchmark": "vs_trainer",
        "command": h.command_line(),
        "machine": h.machine(),
        "settings": vars(args),
        "runs": runs,
        "summary": summary,
    }
    path = h.save("vs_trainer", payload)
    print(json.dumps(summary, indent=2))
    print(f"saved {path.relative_to(h.REPO)}; child logs in {logs}", file=sys.stderr)


# --------------------------------------------------------------------------- hpsearch


def _hpsearch_child(args: argparse.Namespace) -> dict[str, Any]:
    h.gate_each_epoch_in_every_trainer()
    storage = f"sqlite:///{args.workdir}/hpsearch.db"
    h.run_hpsearch_cli(
        [
            "run",
            "--dataset",
            args.dataset,
            "--max-train-samples",
            str(args.train),
            "--max-eval-samples",
            str(args.eval),
            "--epochs",
            str(args.epochs),
            "--max-length",
            str(args.max_length),
            "--trials",
            str(args.trials),
            "--storage",
            storage,
            "--workdir",
            f"{args.workdir}/studies",
            "--config",
            _sampler_toml(args),
        ]
    )
    return {
        **h.study_summary(storage),
        "checkpoint_rule": "ranks each trial by its best epoch; hands back the best trial at that epoch (best-model/)",
    }


def _sampler_toml(args: argparse.Namespace) -> str:
    path = Path(args.workdir) / "sampler.toml"
    path.write_text(f"[sampler]\nname = 'tpe'\nseed = {args.seed}\nstartup_trials = 5\n", encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- Trainer


def _trainer_child(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import optuna
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoModelForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    from hpsearch import load_config, load_task, load_tokenizer, resolve_model, tokenize_task

    hf_logging.set_verbosity_error()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_config(
        overrides={
            "dataset": args.dataset,
            "max_train_samples": args.train,
            "max_eval_samples": args.eval,
            "epochs": args.epochs,
            "max_length": args.max_length,
        }
    )
    source = resolve_model(config.model)
    task = load_task(config)
    tokenizer = load_tokenizer(source, config)
    data = tokenize_task(task, tokenizer, config.max_length)
    id2label = dict(enumerate(task.label_names))

    def model_init(trial: Any = None) -> Any:
        return AutoModelForSequenceClassification.from_pretrained(
            source.location, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()}
        )

    def compute_metrics(pred: Any) -> dict[str, float]:
        labels, predictions = pred.label_ids, np.argmax(pred.predictions, axis=-1)
        return {
            "f1": float(f1_score(labels, predictions, average=task.average, zero_division=0)),
            "accuracy": float(accuracy_score(labels, predictions)),
        }

    def hp_space(trial: optuna.Trial) -> dict[str, Any]:
        # hpsearch's default space; transformers 5 reads a float warmup_steps < 1 as a ratio.
        return {
            "learning_rate": trial.suggest_float("learning_rate", 1e-05, 1e-04, log=True),
            "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [8, 16, 32]),
            "warmup_steps": trial.suggest_float("warmup_steps", 0.0, 0.2),
            "weight_decay": trial.suggest_float("weight_decay", 0.0, 0.1),
        }

    class Epochs(TrainerCallback):
        """Counts the epochs each trial trains (its evaluations) and keeps their F1."""

        def __init__(self) -> None:
            self.trials: list[list[float]] = []

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.trials.append([])

        def on_epoch_begin(self, *a: Any, **k: Any) -> None:
            h.gate()  # take turns with the hpsearch side at every epoch

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **k: Any
        ) -> None:
            if metrics and "eval_f1" in metrics and self.trials:
                self.trials[-1].append(round(metrics["eval_f1"], 4))

    class Retrained(TrainerCallback):
        """The retraining's validation F1 at every epoch, with the step it was taken at."""

        def __init__(self) -> None:
            self.epochs: list[dict[str, float]] = []

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **k: Any
        ) -> None:
            if metrics and "eval_f1" in metrics:
                self.epochs.append(
                    {
                        "epoch": round(state.epoch),
                        "step": state.global_step,
                        "validation_f1": round(metrics["eval_f1"], 4),
                    }
                )

    epochs = Epochs()
    workdir = Path(args.workdir)
    training_args = TrainingArguments(
        output_dir=str(workdir / "trainer"),
        num_train_epochs=args.epochs,
        eval_strategy="epoch",
        report_to="none",
        disable_tqdm=True,
        seed=config.recipe.seed,
        # A float default, else the search's warm-up ratio is cast to int(ratio) == 0.
        warmup_steps=0.0,
    )
    trainer = Trainer(
        model_init=model_init,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=[epochs],
    )
    started = h.active_clock()
    best = trainer.hyperparameter_search(
        hp_space=hp_space,
        compute_objective=lambda metrics: metrics["eval_f1"],
        n_trials=args.trials,
        direction="maximize",
        backend="optuna",
        sampler=optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=5),
    )
    search_s = h.active_clock() - started
    searched = [list(t) for t in epochs.trials]

    # Its best model was not kept: train the best parameters once more, handing back the best
    # epoch on validation F1 as the Trainer does (load_best_model_at_end), then test that model.
    # Validation only during training, as in the search: a test evaluation per epoch would draw
    # from torch's global random stream and change the following epochs' batches.
    started = h.active_clock()
    retrain_args = TrainingArguments(
        output_dir=str(workdir / "retrain"),
        num_train_epochs=args.epochs,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="f1",
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        seed=config.recipe.seed,
        **best.hyperparameters,
    )
    retrained = Retrained()
    final = Trainer(
        model_init=model_init,
        args=retrain_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=[epochs, retrained],
    )
    final.train()
    test = final.evaluate(data["test"], metric_key_prefix="test")
    retrain_s = h.active_clock() - started
    search_trial = searched[int(best.run_id)] if best.run_id is not None else []
    return {
        "search_s": round(search_s, 3),
        "retrain_s": round(retrain_s, 3),
        "checkpoint_rule": "search ranks each trial by its last epoch; hands back the best parameters retrained, "
        "at the epoch of best validation F1 (load_best_model_at_end)",
        "best_val_f1": best.objective,
        "best_val_f1_any_epoch": max((f for t in searched for f in t), default=None),
        "best_params": best.hyperparameters,
        "test_f1": test["test_f1"],
        "retrain_epochs": retrained.epochs,
        # the epoch load_best_model_at_end loaded, by the step the Trainer stored for it
        "retrain_best_epoch": next(
            (e["epoch"] for e in retrained.epochs if e["step"] == final.state.best_global_step), None
        ),
        # the best trial's per-epoch validation F1 in the search, and whether the retraining repeated it
        "search_trial_f1": search_trial,
        "retrain_repeats_search_trial": [e["validation_f1"] for e in retrained.epochs] == search_trial,
        "epochs_trained": sum(len(t) for t in searched),
        "pruned": sum(len(t) < args.epochs for t in searched),
        "trials": [{"f1": t} for t in searched],
    }


if __name__ == "__main__":
    main()
