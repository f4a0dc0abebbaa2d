"""The card's hyperparameter-search section: how the search ran and where this trial stands.

:func:`search_facts` gives the template the sampler, pruner and objective in words, the
space, trial counts, the epochs trained against an unpruned search, the recipe trial
against this one, the top trials, and why trials were pruned or failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpsearch import schema
from hpsearch.analysis.scores import predicted_class
from hpsearch.card.cost_section import cost_facts
from hpsearch.card.facts import CardFacts, metric_label
from hpsearch.card.markdown import markdown_table, md_code
from hpsearch.config import Param
from hpsearch.errors import ConfigError
from hpsearch.formatting import count, fmt_metric, format_param

TOP_TRIALS = 5  # rows of the top-trials table
LIST_LIMIT = 10  # pruned / failed trials listed by name before "and N more"


def search_facts(facts: CardFacts) -> dict[str, Any]:
    """How the search ran: settings, the space, trial counts, epoch cost, recipe and top trials."""
    config = facts.config
    counts = {name: sum(1 for t in facts.trials if t.state == state) for state, name in schema.STATE_NAMES.items()}
    trained = [t for t in facts.trials if t.state in (*schema.FINISHED, TrialState.FAIL)]
    per_trial = int(config["recipe"]["num_train_epochs"])
    recipe = schema.recipe_trial(facts.trials)
    return {
        "study": facts.study_name,
        "storage": facts.storage,
        "created": facts.settings.created,
        "sampler": describe_sampler(config["sampler"]),
        "pruner": describe_pruner(config["pruner"], facts.objective, per_trial),
        "objective": describe_objective(facts),
        "checkpoint": config["checkpoint"],
        "early_stopping": _early_stopping(facts),
        "trackers": trackers(facts),
        # Code handed in from Python (hpsearch.hooks): its qualified names, the facts a card can state.
        "hooks": {k: ", ".join(v) if isinstance(v, list) else v for k, v in facts.settings.hooks.items()},
        "space_table": space_table(facts, recipe),
        "counts": {"total": len(facts.trials), **counts},
        "epochs_per_trial": per_trial,
        "epochs_trained": sum(len(schema.rows(t)) for t in facts.trials),
        "epochs_unpruned": len(trained) * per_trial,
        "trials_trained": len(trained),
        "budget": learning_rate_budget(facts),
        "recipe": _recipe_comparison(facts, recipe),
        "top_table": top_trials_table(facts),
        "pruned": _reasons(facts, TrialState.PRUNED, schema.pruned_reason),
        "failed": _reasons(facts, TrialState.FAIL, schema.fail_reason),
        "compute": cost_facts(facts),  # None where no trial stored a cost: the card reads as before
    }


def _early_stopping(facts: CardFacts) -> dict[str, Any] | None:
    """The patience, and which complete trials it stopped; None where it was off."""
    patience = facts.config["early_stopping_patience"]
    if not patience:
        return None
    stopped = [t for t in facts.trials if t.state == TrialState.COMPLETE and schema.stopped_early(t)]
    return {
        "patience": count(patience, "epoch"),
        "objective": metric_label(facts.objective),
        "stopped": [t.number for t in stopped],
        # Under checkpoint = "best" every trial ships its best epoch anyway.
        "ships_best": facts.config["checkpoint"] == "last",
    }


def trackers(facts: CardFacts) -> dict[str, Any] | None:
    """The Trainer's trackers the trials were logged to, and where; None where there were none."""
    names = [str(n) for n in facts.config.get("report_to") or ("none",)]
    if names == ["none"]:
        return None
    board = "tensorboard" in names or "all" in names
    runs = f"{Path(str(facts.config['workdir'])) / facts.study_name / 'runs'}/" if board else None
    return {"names": names, "run_name": f"{facts.study_name}/trial-<N>", "runs_dir": runs}


def learning_rate_budget(facts: CardFacts) -> dict[str, Any] | None:
    """Whether every complete trial whose model still called all examples one class after
    its last epoch planned a smaller sum of learning rates than every complete trial that
    learned (whose last epoch's confusion matrix shows more than one class called); None
    where that does not hold, or where a trial ran a schedule other than the linear one.

    Adam's steps scale with the learning rate, so the sum over a trial's schedule is how far
    it can move; where it alone splits the trials, the lowest learning rates searched could
    not arrive in the epochs given (docs/card.md).
    """
    stuck: list[float] = []
    learned: list[float] = []
    for trial in facts.trials:
        rows = schema.rows(trial)
        if trial.state != TrialState.COMPLETE or not rows:
            continue
        budget = planned_lr_sum(
            schema.training_args(trial), updates_per_epoch=round(rows[-1]["step"] / rows[-1]["epoch"])
        )
        if budget is None:
            return None
        (learned if predicted_class(rows[-1]["confusion"]) is None else stuck).append(budget)
    if not stuck or not learned or max(stuck) >= min(learned):
        return None
    return {
        "stuck": count(len(stuck), "complete trial"),
        "stuck_max": f"{max(stuck):.2e}",
        "learned": count(len(learned), "trial"),
        "learned_min": f"{min(learned):.2e}",
    }


def planned_lr_sum(args: dict[str, Any], *, updates_per_epoch: int) -> float | None:
    """The sum of the learning rates of every update a trial's schedule plans; None for a
    schedule other than transformers' linear one (with or without warm-up)."""
    if args.get("lr_scheduler_type") != "linear":
        return None
    total = updates_per_epoch * int(args["num_train_epochs"])
    warmup = math.ceil(total * args["warmup_ratio"])  # TrainingArguments.get_warmup_steps
    # Update k applies k / W during the warm-up and (T - k) / (T - W) after it, k < T.
    rising = min(warmup, total) * (min(warmup, total) - 1) / 2 / max(1, warmup)
    falling = (total - warmup + 1) / 2 if total > warmup else 0.0
    return float(args["learning_rate"]) * (rising + falling)


def describe_sampler(sampler: dict[str, Any]) -> str:
    name, seed = sampler["name"], sampler["seed"]
    if name == "tpe":
        return (
            f"TPESampler (seed {seed}; the first {sampler['startup_trials']} trials, the recipe included, are random)"
        )
    return {"random": "RandomSampler", "qmc": "QMCSampler (Sobol)"}.get(name, str(name)) + f" (seed {seed})"


def describe_pruner(pruner: dict[str, Any], objective: str, epochs: int) -> str:
    """The ``[pruner]`` settings in words: name, warm-up, startup trials, margin, reduction factor."""
    name = pruner["name"]
    if name in ("best", "median"):
        warmup = pruner["warmup_epochs"]
        settings = f"({count(pruner['startup_trials'], 'startup trial')}, warm-up {count(warmup, 'epoch')})"
        start = f"from epoch {warmup + 1} on, a trial stops when"
        if name == "median":
            return (
                f"MedianPruner {settings}: {start} its validation {metric_label(objective)} "
                "is below the median of the complete trials at the same epoch"
            )
        margin = pruner["margin_se"]
        by = f" by more than {count(margin, 'standard error')} of the difference (Hanley and McNeil)" if margin else ""
        return (
            f"best-trial rule on validation ROC AUC {settings}: {start} its best validation ROC AUC so far is below "
            f"the best complete trial's (read after at most as many optimiser updates){by}"
        )
    if name == "halving":
        return f"SuccessiveHalvingPruner (min resource 1 epoch, reduction factor {pruner['reduction_factor']})"
    if name == "hyperband":
        return f"HyperbandPruner (1 to {epochs} epochs, reduction factor {pruner['reduction_factor']})"
    return "none (every trial trains all its epochs)"


def describe_objective(facts: CardFacts) -> str:
    text = f"maximise validation {metric_label(facts.objective)}"
    if facts.objective not in ("f1", "precision", "recall"):  # accuracy, or an added metric
        return text
    if facts.average == "binary":
        return text + f" (binary average: the positive class is {md_code(facts.positive_label)})"
    return text + f" (macro average over {len(facts.label_names)} classes)"


def space_table(facts: CardFacts, recipe: FrozenTrial | None) -> str:
    recipe_values = facts.config["recipe"]
    rows = []
    for name, spec in facts.config["space"].items():
        try:
            described = Param(name, **spec).describe()
        except (ConfigError, TypeError):  # a hand-edited study attribute: show it as stored
            described = str(spec)
        recipe_value = recipe_values.get(name, recipe.params.get(name) if recipe is not None else None)
        rows.append(
            [
                name,
                described,
                format_param(recipe_value) or "default",
                format_param(facts.trial.params.get(name)) or "not sampled",
            ]
        )
    return markdown_table(["Parameter", "Range or choices", "Recipe value", "This trial"], rows)


def _recipe_comparison(facts: CardFacts, recipe: FrozenTrial | None) -> dict[str, Any] | None:
    if recipe is None:
        return None
    mine = facts.trial.value
    theirs = recipe.value
    difference = None if mine is None or theirs is None else mine - theirs
    return {
        "number": recipe.number,
        "state": schema.state_name(recipe),
        "value": None if theirs is None else fmt_metric(theirs),
        "this_value": None if mine is None else fmt_metric(mine),
        "difference": None if difference is None else f"{difference:+.4f}",
        "is_this_trial": recipe.number == facts.trial.number,
        "reason": schema.pruned_reason(recipe) or schema.fail_reason(recipe),
    }


def top_trials_table(facts: CardFacts) -> str:
    done = sorted(
        (t for t in facts.trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: (-t.value, t.number),
    )
    if not done:
        return ""
    names = list(facts.config["space"]) or sorted({k for t in done for k in t.params})
    rows = []
    for t in done[:TOP_TRIALS]:
        notes = [n for n, on in (("this card", t.number == facts.trial.number), ("recipe", schema.is_recipe(t))) if on]
        shipped = schema.shipped_epoch(t)
        rows.append(
            [
                t.number,
                fmt_metric(t.value),
                "" if shipped is None else shipped,
                *[format_param(t.params.get(n)) for n in names],
                ", ".join(notes),
            ]
        )
    return markdown_table(["Trial", f"Validation {metric_label(facts.objective)}", "Epoch", *names, "Note"], rows)


def _reasons(facts: CardFacts, state: TrialState, reason: Callable[[FrozenTrial], str | None]) -> dict[str, Any]:
    trials = [t for t in facts.trials if t.state == state]
    shown = [{"number": t.number, "reason": str(reason(t) or "no reason recorded")} for t in trials[:LIST_LIMIT]]
    return {"trials": shown, "more": max(0, len(trials) - LIST_LIMIT)}
