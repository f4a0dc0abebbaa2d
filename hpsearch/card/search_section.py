"""The card's hyperparameter-search section: how the search ran and where this trial stands.

:func:`search_facts` gives the template the sampler, pruner and objective in words, the
space, trial counts, the epochs trained against an unpruned search, the recipe trial
against this one, the top trials, and why trials were pruned or failed.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpsearch.card.facts import STATE_NAMES, CardFacts, metric_label, state_name
from hpsearch.config import Param, is_plain_median
from hpsearch.card.markdown import fmt_metric, fmt_param, markdown_table, md_code
from hpsearch.training.metrics import is_number
from hpsearch.search.pruners import RULE_NAMES
from hpsearch.views.trials import EPOCHS_ATTR, STOPPED_EARLY_ATTR, count, recipe_trial, shipped_best_after_stop
from hpsearch.card.trust import all_rows, positive_rate, predicts_one_class

TOP_TRIALS = 5  # rows of the top-trials table
LIST_LIMIT = 10  # pruned / failed trials listed by name before "and N more"


def search_facts(facts: CardFacts) -> dict[str, Any]:
    """How the search ran: settings, the space, trial counts, epoch cost, recipe and top trials."""
    config = facts.config
    counts = {name: sum(1 for t in facts.trials if t.state == state) for state, name in STATE_NAMES.items()}
    trained = [t for t in facts.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    per_trial = int(config.get("recipe", {}).get("num_train_epochs", 0)) or None
    recipe = recipe_trial(facts.trials)
    return {
        "study": facts.study_name,
        "storage": facts.storage,
        "created": facts.info.get("created"),
        "sampler": describe_sampler(config.get("sampler", {})),
        "pruner": describe_pruner(config.get("pruner", {}), facts.objective, per_trial),
        "objective": describe_objective(facts),
        "checkpoint": config.get("checkpoint", "last"),
        "early_stopping": _early_stopping(facts),
        "space_table": space_table(facts, recipe),
        "counts": {"total": len(facts.trials), **counts},
        "epochs_per_trial": per_trial,
        "epochs_trained": sum(len(t.user_attrs.get(EPOCHS_ATTR, [])) for t in facts.trials),
        "epochs_unpruned": len(trained) * per_trial if per_trial else None,
        "trials_trained": len(trained),
        "budget": learning_rate_budget(facts),
        "recipe": _recipe_comparison(facts, recipe),
        "top_table": top_trials_table(facts),
        "pruned": _reasons(facts, TrialState.PRUNED, "pruned_reason"),
        "failed": _reasons(facts, TrialState.FAIL, "fail_reason"),
    }


def _early_stopping(facts: CardFacts) -> dict[str, Any] | None:
    """The patience, and which complete trials it stopped; None where it was off."""
    patience = facts.config.get("early_stopping_patience") or 0
    if not patience:
        return None
    stopped = [t for t in facts.trials if t.state == TrialState.COMPLETE and t.user_attrs.get(STOPPED_EARLY_ATTR)]
    # Under checkpoint = "last" a stopped trial ships its best epoch, not the one it stopped
    # at; said only where every stopped trial did (a study from before the rule did not).
    ships_best = facts.config.get("checkpoint", "last") == "last" and all(shipped_best_after_stop(t) for t in stopped)
    return {"patience": count(patience, "epoch"), "objective": metric_label(facts.objective), "stopped": [t.number for t in stopped], "ships_best": ships_best}


def learning_rate_budget(facts: CardFacts) -> dict[str, Any] | None:
    """Whether every complete trial whose model still called all examples one class after
    its last epoch planned a smaller sum of learning rates than every complete trial that
    learned; None where that does not hold (or the rows predate ``lr_sum``).

    A complete trial's last row holds the sum of the learning rates of all its updates: how
    far its schedule let it move. On sms_spam that sum alone told the trials that would
    learn from those that would not (benchmarks/RESULTS.md, section 2); where a study shows
    the same split, its lowest learning rates could not arrive in the epochs given.
    """
    rate = positive_rate(all_rows(facts))
    stuck: list[float] = []
    learned: list[float] = []
    for trial in facts.trials:
        rows = trial.user_attrs.get(EPOCHS_ATTR) or []
        if trial.state != TrialState.COMPLETE or not rows or not is_number(rows[-1].get("lr_sum")):
            continue
        (stuck if predicts_one_class(facts, rows[-1], rate) else learned).append(rows[-1]["lr_sum"])
    if not stuck or not learned or max(stuck) >= min(learned):
        return None
    return {"stuck": count(len(stuck), "complete trial"), "stuck_max": f"{max(stuck):.2e}", "learned": count(len(learned), "trial"), "learned_min": f"{min(learned):.2e}"}


def describe_sampler(sampler: dict[str, Any]) -> str:
    name, seed = sampler.get("name", "tpe"), sampler.get("seed")
    if name == "tpe":
        return f"TPESampler (seed {seed}; the first {sampler.get('startup_trials')} trials, the recipe included, are random)"
    return {"random": "RandomSampler", "qmc": "QMCSampler (Sobol)"}.get(name, str(name)) + f" (seed {seed})"


def describe_pruner(pruner: dict[str, Any], objective: str, epochs: int | None) -> str:
    name = pruner.get("name", "median")
    if name in ("best", "median"):
        start = int(pruner.get("warmup_epochs", 1)) + 1
        settings = f"({count(pruner.get('startup_trials'), 'startup trial')}, warm-up {count(pruner.get('warmup_epochs', 1), 'epoch')})"
        if not is_plain_median(pruner):
            metric, align = pruner.get("metric", "objective"), pruner.get("align", "epochs")
            margin, reference = pruner.get("margin_se", 0), pruner.get("reference", "median")
            label = metric_label(objective) if metric == "objective" else "ROC AUC"
            point = {
                "updates": "after at most as many optimiser updates",
                "lr_sum": "after at most as large a sum of the learning rates of their optimiser updates",
            }.get(align, "at the same epoch")
            by = f" by more than {count(margin, 'standard error')} of the difference (Hanley and McNeil)" if margin else ""
            against = "the best" if reference == "best" else "the median"
            return (
                f"{RULE_NAMES[reference]} rule on validation {label} {settings}: "
                f"from epoch {start} on, a trial stops when its best validation {label} so far is below {against} of the complete trials {point}{by}"
            )
        return (
            f"MedianPruner {settings}: "
            f"from epoch {start} on, a trial stops when its validation {metric_label(objective)} is below the median of the complete trials at the same epoch"
        )
    if name == "halving":
        return f"SuccessiveHalvingPruner (min resource 1 epoch, reduction factor {pruner.get('reduction_factor')})"
    if name == "hyperband":
        return f"HyperbandPruner (1 to {epochs} epochs, reduction factor {pruner.get('reduction_factor')})"
    return "none (every trial trains all its epochs)"


def describe_objective(facts: CardFacts) -> str:
    text = f"maximise validation {metric_label(facts.objective)}"
    if facts.objective == "accuracy":
        return text
    if facts.average == "binary":
        return text + f" (binary average: the positive class is {md_code(facts.positive_label)})"
    return text + f" (macro average over {len(facts.label_names)} classes)"


def space_table(facts: CardFacts, recipe: FrozenTrial | None) -> str:
    recipe_values = facts.config.get("recipe", {})
    rows = []
    for name, spec in facts.config.get("space", {}).items():
        try:
            described = Param(name, **spec).describe()
        except Exception:  # a hand-edited study attribute: show it as stored
            described = str(spec)
        recipe_value = recipe_values.get(name, recipe.params.get(name) if recipe is not None else None)
        rows.append([name, described, fmt_param(recipe_value) or "default", fmt_param(facts.trial.params.get(name)) or "not sampled"])
    return markdown_table(["Parameter", "Range or choices", "Recipe value", "This trial"], rows)


def _recipe_comparison(facts: CardFacts, recipe: FrozenTrial | None) -> dict[str, Any] | None:
    if recipe is None:
        return None
    mine = facts.trial.value
    theirs = recipe.value
    difference = None if mine is None or theirs is None else mine - theirs
    return {
        "number": recipe.number,
        "state": state_name(recipe),
        "value": None if theirs is None else fmt_metric(theirs),
        "this_value": None if mine is None else fmt_metric(mine),
        "difference": None if difference is None else f"{difference:+.4f}",
        "is_this_trial": recipe.number == facts.trial.number,
        "reason": recipe.user_attrs.get("pruned_reason") or recipe.user_attrs.get("fail_reason"),
    }


def top_trials_table(facts: CardFacts) -> str:
    done = sorted((t for t in facts.trials if t.state == TrialState.COMPLETE and t.value is not None), key=lambda t: (-t.value, t.number))
    if not done:
        return ""
    names = list(facts.config.get("space", {})) or sorted({k for t in done for k in t.params})
    rows = []
    for t in done[:TOP_TRIALS]:
        notes = [n for n, on in (("this card", t.number == facts.trial.number), ("recipe", bool(t.user_attrs.get("recipe")))) if on]
        rows.append([t.number, fmt_metric(t.value), t.user_attrs.get("shipped_epoch", ""), *[fmt_param(t.params.get(n)) for n in names], ", ".join(notes)])
    return markdown_table(["Trial", f"Validation {metric_label(facts.objective)}", "Epoch", *names, "Note"], rows)


def _reasons(facts: CardFacts, state: TrialState, attr: str) -> dict[str, Any]:
    trials = [t for t in facts.trials if t.state == state]
    shown = [{"number": t.number, "reason": str(t.user_attrs.get(attr) or "no reason recorded")} for t in trials[:LIST_LIMIT]]
    return {"trials": shown, "more": max(0, len(trials) - LIST_LIMIT)}
