"""The median stopping rule on any per-epoch metric, at equal epochs, updates or summed learning rate.

Optuna's :class:`~optuna.pruners.MedianPruner` compares a trial's reported value with the
median of the complete trials' values *at the same step*. hpsearch reports validation F1
at the epoch number, and two things make that comparison unfair early in a fine-tune:

* An epoch is not a fixed amount of training: at batch 32 it makes a quarter of the
  optimiser updates it makes at batch 8, so a large-batch trial is judged after one
  epoch against small-batch trials that have trained four times as long.
* F1 is 0 for every model that still predicts the majority class for everything, whether
  it is about to learn or never will; many trials spend their first epochs there.

:class:`AlignedMedianPruner` keeps the median rule and can change both: with
``align="updates"`` a complete trial's value is read at the last epoch it reached *with no
more optimiser updates* than the judged trial has made, and the value compared can be any
metric of the trials' ``epochs`` rows (``roc_auc`` ranks examples instead of thresholding
them). ``align="lr_sum"`` reads it at the last epoch within as large a *sum of the
learning rates* of the updates made: Adam's steps scale with the learning rate, so after
as many updates a trial at half the learning rate has moved about half as far, and judging
it then against one at the full rate compares a model that is behind with one that is
ahead (the short-horizon bias of comparing learning rates early). What trials report to
Optuna, and what the study optimises, stay the objective. With the objective and
``align="epochs"`` it is the MedianPruner's rule, and hpsearch uses Optuna's class for that.

A third change is optional: ``margin_se`` stops a trial only when its value is below the
median by more than that many standard errors of the difference, read from the rows'
``<metric>_se``. On an easy task every trial that learns at all has a ROC AUC near 1, and
the bare median then separates trials by gaps the validation split cannot resolve. With a
margin, ``reference="best"`` compares with the best complete trial instead of the median:
a trial stops when it is clearly worse than the best one so far, as Optuna's
``WilcoxonPruner`` judges against the best trial. That rule, on ROC AUC at equal updates
with a margin of one standard error, is hpsearch's default pruner (``[pruner] name =
"best"``): on sms_spam it keeps the unpruned search's best F1 where the plain median rule
loses it (``benchmarks/RESULTS.md``, section 2).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, NamedTuple

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from hpsearch.views.trials import EPOCHS_ATTR


_ALIGN_KEYS = {"epochs": "epoch", "updates": "step", "lr_sum": "lr_sum"}  # align -> the row key it compares
# How pruned reasons and the card name a rule: by its reference, or the [pruner] name.
RULE_NAMES = {"median": "median", "best": "best-trial"}


class Verdict(NamedTuple):
    """How a trial stands: its best value so far, the value it is compared with (the
    complete trials' median or best), how many complete trials gave that, and how far below
    it the trial must be to stop."""

    best: float
    against: float
    n: int
    margin: float

    @property
    def prune(self) -> bool:
        return self.best < self.against - self.margin


class AlignedMedianPruner(BasePruner):
    """Prune a trial whose best ``metric`` so far is below the median of the complete
    trials' ``metric`` at the same point: after as many epochs, or after at most as many
    optimiser updates; with ``margin_se``, below it by more than that many standard errors.
    With ``reference="best"``, the best complete trial's value at that point replaces the
    median.

    Args:
        metric: Key of the ``epochs`` rows to compare; higher is better.
        align: "epochs", "updates" or "lr_sum".
        startup_trials: Complete trials needed before any trial is judged.
        warmup_epochs: Epochs every trial trains before it may be judged.
        margin_se: Standard errors of the difference between the trial's best value and the
            median that the gap must exceed; the rows' ``<metric>_se`` give them (the
            trial's at its best epoch, and the median of the complete trials' at the
            point compared, or the best trial's). 0 is the plain median rule.
        reference: "median" or "best": what the trial's best value is compared with.
    """

    def __init__(
        self,
        *,
        metric: str,
        align: str = "updates",
        startup_trials: int = 3,
        warmup_epochs: int = 0,
        margin_se: float = 0.0,
        reference: str = "median",
    ) -> None:
        if align not in _ALIGN_KEYS:
            raise ValueError(f"align: expected one of {', '.join(_ALIGN_KEYS)}, got {align!r}")
        if reference not in ("median", "best"):
            raise ValueError(f"reference: expected median or best, got {reference!r}")
        if startup_trials < 0 or warmup_epochs < 0 or not margin_se >= 0:
            raise ValueError(
                f"startup_trials, warmup_epochs and margin_se must be >= 0; got {startup_trials}, {warmup_epochs} and {margin_se}"
            )
        self.metric = metric
        self.align = align
        self.startup_trials = startup_trials
        self.warmup_epochs = warmup_epochs
        self.margin_se = margin_se
        self.reference = reference

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        verdict = self.judge(study, trial.user_attrs.get(EPOCHS_ATTR) or [])
        return verdict is not None and verdict.prune

    def judge(self, study: optuna.Study, rows: list[dict[str, Any]]) -> Verdict | None:
        """How a trial with these epoch rows stands, or None where the rule does not judge
        it yet."""
        if not rows or rows[-1]["epoch"] <= self.warmup_epochs:
            return None
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self.startup_trials:
            return None
        mine = [row for row in rows if _finite(row.get(self.metric))]
        if not mine:
            return None  # nothing to judge by (say, a study from before the metric existed)
        key = _ALIGN_KEYS[self.align]
        point = rows[-1].get(key)
        if point is None:
            return None  # rows from before the key was stored
        others = [row for t in done if (row := _row_at(t, key, point, self.metric)) is not None]
        if not others:
            return None  # every complete trial was further along after its first epoch
        best = max(mine, key=lambda row: row[self.metric])
        se_key = f"{self.metric}_se"
        if self.reference == "best":
            top = max(others, key=lambda row: row[self.metric])
            against, their_errors = top[self.metric], [top.get(se_key)]
        else:
            against, their_errors = statistics.median(row[self.metric] for row in others), [row.get(se_key) for row in others]
        margin = 0.0
        if self.margin_se > 0:
            errors = [e for e in their_errors if _finite(e)]
            if not _finite(best.get(se_key)) or not errors:
                return None  # no standard errors to weigh the gap with
            margin = self.margin_se * math.hypot(best[se_key], statistics.median(errors))
        return Verdict(best[self.metric], against, len(others), margin)


def _row_at(trial: FrozenTrial, key: str, point: float, metric: str) -> dict[str, Any] | None:
    """The row of ``trial``'s last epoch whose ``key`` (epoch, step or lr_sum) is at most
    ``point`` and that holds ``metric``: the same epoch, or the last epoch within as many
    updates or as large a sum of learning rates."""
    found = None
    for row in trial.user_attrs.get(EPOCHS_ATTR) or []:
        if not _finite(row.get(key)):
            return None  # a trial from before the key was stored cannot be placed
        if row[key] > point:
            break
        if _finite(row.get(metric)):
            found = row
    return found


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
