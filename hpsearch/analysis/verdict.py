"""The verdict: one plain sentence, first in the card and last in ``run`` and ``confirm``.

It is said whenever either holds:

- the constant predictor the card compares with (:func:`hpsearch.analysis.scores.constant_baseline`)
  matches or beats the shipped model: its F1 is at least the model's (all-positive for two
  classes, the majority class for more), or the majority class's accuracy is;
- the winner's advantage over the base recipe is within noise: after a confirmation, the
  Welch interval of the difference of mean validation scores over seeds reaches 0 (or the
  recipe is the winner); before one, the recipe's score lies inside the 95% interval of the
  best trial's own validation score (bootstrap for F1, Wilson for accuracy).

Otherwise there is no verdict (None), and the card reads as it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial

from hpsearch import schema
from hpsearch.analysis.intervals import bootstrap_f1_interval, wilson_interval
from hpsearch.analysis.scores import constant_baseline
from hpsearch.analysis.seeds import Confirmation
from hpsearch.formatting import is_number
from hpsearch.schema import METRIC_LABELS, StudySettings


def verdict(
    settings: StudySettings,
    trials: Sequence[FrozenTrial],
    confirmation: Confirmation | None = None,
    *,
    shipped: dict[str, Any] | None = None,
) -> str | None:
    """The verdict sentence, or None when neither rule holds.

    Args:
        shipped: The shipped model's validation scores; by default the best trial's
            shipped epoch, or the confirmed winner's best run.
    """
    best = schema.best_trial(trials)
    if best is None:
        return None
    confirmed = (
        confirmation if confirmation is not None and confirmation.done and confirmation.winner is not None else None
    )
    if shipped is None:
        run = confirmed.winner.best_run() if confirmed else None
        shipped = run.validation if run is not None else schema.shipped_row(best)
    clauses = [c for c in (_baseline_clause(settings, shipped), _noise_clause(settings, trials, best, confirmed)) if c]
    if not clauses:
        return None
    return "Verdict: " + ", and ".join(clauses) + "."


def _baseline_clause(settings: StudySettings, shipped: dict[str, Any] | None) -> str | None:
    if not shipped:
        return None
    data = settings.data
    counts = list(data.class_counts["validation"])
    label, scores = constant_baseline(counts, data.average)
    name = data.label_names[label]
    if is_number(shipped.get("f1")) and scores["f1"] >= shipped["f1"]:
        return (
            f"calling every example `{name}` scores validation F1 {scores['f1']:.4f}, "
            f"at least this model's {shipped['f1']:.4f}"
        )
    majority = max(counts) / sum(counts) if sum(counts) else 0.0
    if is_number(shipped.get("accuracy")) and majority >= shipped["accuracy"]:
        return (
            f"calling every example the majority class scores validation accuracy {majority:.4f}, "
            f"at least this model's {shipped['accuracy']:.4f}"
        )
    return None


def _noise_clause(
    settings: StudySettings, trials: Sequence[FrozenTrial], best: FrozenTrial, confirmed: Confirmation | None
) -> str | None:
    label = METRIC_LABELS.get(settings.objective, settings.objective)
    if confirmed is not None:
        winner, recipe = confirmed.winner, confirmed.recipe
        if recipe is None:
            return None
        if winner is recipe:
            return f"no configuration beat the base recipe's mean validation {label} over seeds"
        comparison = confirmed.comparison()
        if comparison is None or not comparison.within_noise:
            return None
        return (
            f"the winner's lead over the base recipe ({comparison.difference:+.4f} mean validation {label}) is within "
            f"seed noise (95% interval {comparison.low:+.4f} to {comparison.high:+.4f})"
        )
    recipe = schema.recipe_trial(trials)
    if recipe is None or recipe.value is None:
        return None
    if recipe.number == best.number:
        return "no searched trial beat the base recipe"
    interval = validation_interval(settings, best)
    if interval is None or recipe.value < interval[0]:
        return None
    return (
        f"the best trial's lead over the base recipe ({best.value - recipe.value:+.4f} validation {label}) "
        f"is within the noise of one validation split "
        f"(its 95% interval {interval[0]:.4f} to {interval[1]:.4f} holds the recipe's {recipe.value:.4f})"
    )


def validation_interval(settings: StudySettings, trial: FrozenTrial) -> tuple[float, float] | None:
    """The 95% interval of a trial's shipped validation objective from its confusion matrix:
    bootstrap for F1, Wilson for accuracy; None for other objectives."""
    row = schema.shipped_row(trial)
    if row is None:
        return None
    confusion = row["confusion"]
    if settings.objective == "f1":
        return bootstrap_f1_interval(confusion, settings.data.average)
    if settings.objective == "accuracy":
        return wilson_interval(sum(confusion[i][i] for i in range(len(confusion))), sum(map(sum, confusion)))
    return None
