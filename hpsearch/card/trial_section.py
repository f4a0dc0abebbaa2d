"""The card's account of its own trial, in the words of the Trainer's cards.

:func:`trial_facts` says what the trial is (state, value, epochs, checkpoint rule, why it
stopped); :func:`hyperparameters` is the Trainer card's hyperparameter list, read from the
TrainingArguments values the trial stored, and :func:`metric_summary` its "results on the
evaluation set" lines.
"""

from __future__ import annotations

from typing import Any

from hpsearch import schema
from hpsearch.card.facts import CardFacts
from hpsearch.config import PEFT_PREFIX
from hpsearch.formatting import fmt_metric, is_number
from hpsearch.schema import METRIC_LABELS, METRICS

# TrainingArguments values the Trainer card's own lines name, in its order and words.
_TRAINER_LINES = (
    ("learning_rate", "learning_rate"),
    ("train_batch_size", "per_device_train_batch_size"),
    ("eval_batch_size", "per_device_eval_batch_size"),
    ("seed", "seed"),
)
# Values said in the optimizer and scheduler lines (or, for weight decay, only when non-zero).
_DESCRIBED = {
    *(key for _, key in _TRAINER_LINES),
    "optim",
    "optim_args",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "lr_scheduler_type",
    "warmup_ratio",
    "num_train_epochs",
    "weight_decay",
    "tf32",
}
_NO_OPTIMIZER_ARGS = "No additional optimizer arguments"  # the Trainer card's words


def trial_facts(facts: CardFacts) -> dict[str, Any]:
    """The trial the card is about: what it is, how far it trained, and why it stopped."""
    trial = facts.trial
    run = facts.run  # the shipped confirmation run, once one is shipped; else the trial
    rows = facts.rows
    return dict(
        number=trial.number,
        state=schema.state_name(trial),
        value=trial.value,
        params=dict(trial.params),
        is_best=trial.number == facts.best_number,
        is_recipe=schema.is_recipe(trial),
        shipped_epoch=schema.shipped_epoch(run),
        last_epoch=rows[-1]["epoch"] if rows else None,
        planned_epochs=_planned_epochs(facts),
        checkpoint_rule=schema.checkpoint_rule(run),
        pruned_reason=schema.pruned_reason(run),
        stopped_early=schema.stopped_early(run),
        shipped_best_after_stop=schema.shipped_best_after_stop(run),
        fail_reason=schema.fail_reason(run),
        kept_model=schema.kept_model(run) or facts.shipped_seed is not None,
        device=schema.device(run),
    )


def metric_summary(metrics: dict[str, Any] | None, *, loss: str = "eval_loss") -> list[tuple[str, str]]:
    """(label, value) lines of the scores an epoch row has, or the test split's scores
    (whose loss is stored as ``loss``)."""
    if not metrics:
        return []
    keys = (
        ("Loss", loss),
        *((METRIC_LABELS[k], k) for k in METRICS),
        *((k, k) for k in schema.added_metrics([metrics])),
    )
    return [(label, fmt_metric(metrics[key])) for label, key in keys if is_number(metrics.get(key))]


def hyperparameters(facts: CardFacts) -> list[tuple[str, str]]:
    """The Trainer card's hyperparameter list, then every other value the trial trained with.

    The optimizer line is the Trainer card's own (``transformers.modelcard``), from the
    optimizer the trial's TrainingArguments resolved; weight decay is listed when non-zero.
    """
    args = schema.training_args(facts.run)
    out = [(label, str(args[key])) for label, key in _TRAINER_LINES if key in args]
    if "optim" in args:
        out.append(("optimizer", optimizer_line(args)))
    if "lr_scheduler_type" in args:
        out.append(("lr_scheduler_type", str(args["lr_scheduler_type"])))
    if args.get("warmup_ratio"):
        out.append(("lr_scheduler_warmup_ratio", str(args["warmup_ratio"])))
    if "num_train_epochs" in args:
        out.append(("num_epochs", str(args["num_train_epochs"])))
    if args.get("weight_decay"):
        out.append(("weight_decay", str(args["weight_decay"])))
    if args.get("precision") in ("bf16", "fp16"):
        out.append(("mixed_precision_training", "Native AMP"))  # as the Trainer's card says it
    if args.get("tf32"):
        out.append(("tf32", "True (matmuls in TensorFloat-32)"))
    # The adapter's settings (peft_r) are listed with the rest of the adapter's (adapter_section.py).
    out += [(k, str(v)) for k, v in args.items() if k not in _DESCRIBED and not k.startswith(PEFT_PREFIX)]
    return out


def optimizer_line(args: dict[str, Any]) -> str:
    """The optimizer as ``transformers.modelcard.extract_hyperparameters_from_trainer`` says it.

    The name is the ``OptimizerNames`` member, printed as the Trainer card prints it; some
    members are not the value in capitals (``adamw_bnb_8bit`` is ``ADAMW_BNB``), so the
    enum itself is asked. The card's list puts the text on one line.
    """
    from transformers.training_args import OptimizerNames

    name = f"{OptimizerNames(args['optim'])}"
    extra = args.get("optim_args") or _NO_OPTIMIZER_ARGS
    if "adam" not in name.lower():
        return f"Use {name} and the args are:\n{extra}"
    return (
        f"Use {name} with betas=({args['adam_beta1']},{args['adam_beta2']}) "
        f"and epsilon={args['adam_epsilon']} and optimizer_args={extra}"
    )


def _planned_epochs(facts: CardFacts) -> int | None:
    value = schema.training_args(facts.run).get("num_train_epochs")
    return int(value) if is_number(value) else None
