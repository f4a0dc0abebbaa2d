"""The card's account of its own trial, in the words of the Trainer's cards.

:func:`trial_facts` says what the trial is (state, value, epochs, checkpoint rule, why it
stopped); :func:`hyperparameters` is the Trainer card's hyperparameter list and
:func:`metric_summary` its "results on the evaluation set" lines.
"""

from __future__ import annotations

from typing import Any

from hpsearch.card.facts import CardFacts, state_name
from hpsearch.card.markdown import fmt_metric
from hpsearch.training.metrics import is_number
from hpsearch.views.trials import STOPPED_EARLY_ATTR, shipped_best_after_stop

_SUMMARY_KEYS = (("Loss", "eval_loss"), ("F1", "f1"), ("Accuracy", "accuracy"), ("Precision", "precision"), ("Recall", "recall"))
# TrainingArguments the Trainer card names in its own words; any other value is listed as it is.
_NAMED_ARGS = {"learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size", "seed", "adam_beta1", "adam_beta2", "adam_epsilon", "lr_scheduler_type", "num_train_epochs", "warmup_ratio"}
_RECIPE_DEFAULTS = {"weight_decay": 0.0}  # left off the list unless searched or changed


def trial_facts(facts: CardFacts) -> dict[str, Any]:
    """The trial the card is about: what it is, how far it trained, and why it stopped."""
    trial = facts.trial
    rows = facts.rows
    return {
        "number": trial.number,
        "state": state_name(trial),
        "value": trial.value,
        "params": dict(trial.params),
        "is_best": trial.number == facts.best_number,
        "is_recipe": bool(trial.user_attrs.get("recipe", False)),
        "shipped_epoch": trial.user_attrs.get("shipped_epoch"),
        "last_epoch": rows[-1]["epoch"] if rows else None,
        "planned_epochs": _planned_epochs(facts),
        "checkpoint_rule": trial.user_attrs.get("checkpoint_rule", facts.config.get("checkpoint", "last")),
        "pruned_reason": trial.user_attrs.get("pruned_reason"),
        "stopped_early": trial.user_attrs.get(STOPPED_EARLY_ATTR),
        "shipped_best_after_stop": shipped_best_after_stop(trial),
        "fail_reason": trial.user_attrs.get("fail_reason"),
        "kept_model": bool(trial.user_attrs.get("kept_model", False)),
    }


def metric_summary(metrics: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(label, value) lines of the scores an epoch row or the test split has."""
    if not metrics:
        return []
    out = []
    for label, key in _SUMMARY_KEYS:
        value = metrics.get(key, metrics.get("loss") if key == "eval_loss" else None)  # test metrics say "loss"
        if is_number(value):
            out.append((label, fmt_metric(value)))
    return out


def hyperparameters(facts: CardFacts) -> list[tuple[str, str]]:
    """The Trainer card's hyperparameter list, with every searched or non-default value added."""
    args = _training_args(facts)
    out: list[tuple[str, str]] = []
    for label, key in (("learning_rate", "learning_rate"), ("train_batch_size", "per_device_train_batch_size"), ("eval_batch_size", "per_device_eval_batch_size"), ("seed", "seed")):
        if key in args:
            out.append((label, str(args[key])))
    if all(k in args for k in ("adam_beta1", "adam_beta2", "adam_epsilon")):
        out.append(("optimizer", f"Adam with betas=({args['adam_beta1']},{args['adam_beta2']}) and epsilon={args['adam_epsilon']}"))
    if "lr_scheduler_type" in args:
        out.append(("lr_scheduler_type", str(args["lr_scheduler_type"])))
    searched = set(facts.config.get("space", {}))
    if "warmup_ratio" in args and (args["warmup_ratio"] or "warmup_ratio" in searched):
        out.append(("lr_scheduler_warmup_ratio", str(args["warmup_ratio"])))
    if "num_train_epochs" in args:
        out.append(("num_epochs", str(args["num_train_epochs"])))
    for key, value in args.items():
        if key in _NAMED_ARGS:
            continue
        if key in searched or key not in _RECIPE_DEFAULTS or value != _RECIPE_DEFAULTS[key]:
            out.append((key, str(value)))
    return out


def _training_args(facts: CardFacts) -> dict[str, Any]:
    """The trial's TrainingArguments values; rebuilt from the recipe and params if not stored."""
    stored = facts.trial.user_attrs.get("training_args")
    if isinstance(stored, dict):
        return dict(stored)
    return {**facts.config.get("recipe", {}), **facts.trial.params}


def _planned_epochs(facts: CardFacts) -> int | None:
    value = _training_args(facts).get("num_train_epochs")
    return int(value) if is_number(value) else None
