"""The pruners, by ``[pruner] name``; their resources are epochs (trials report at 1, 2, ...).

``best`` (the default) is hpsearch's own rule, :class:`BestTrialPruner`; ``median``,
``halving`` and ``hyperband`` are Optuna's. Why ``best`` is the default, measured against
the median rule and against no pruning: ``docs/pruning.md``.
"""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from hpsearch import schema
from hpsearch.config import PrunerConfig
from hpsearch.formatting import count, is_number
from hpsearch.schema import RANKING_METRIC, RANKING_METRIC_SE, EpochRow


def build_pruner(config: PrunerConfig, epochs: int) -> BasePruner:
    if config.name == "best":
        return BestTrialPruner(
            startup_trials=config.startup_trials, warmup_epochs=config.warmup_epochs, margin_se=config.margin_se
        )
    if config.name == "median":
        # Steps are epoch numbers from 1; MedianPruner skips steps < n_warmup_steps.
        return MedianPruner(n_startup_trials=config.startup_trials, n_warmup_steps=config.warmup_epochs + 1)
    if config.name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=config.reduction_factor)
    if config.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=epochs, reduction_factor=config.reduction_factor
        )
    return optuna.pruners.NopPruner()


class Verdict(NamedTuple):
    """How a trial stands against the best complete trial at the same point of training."""

    value: float  # the judged trial's best ROC AUC so far
    best: float  # the best complete trial's, after at most as many updates
    margin: float  # how far below ``best`` the trial must be to stop
    best_trial: int  # that trial's number
    updates: int  # the judged trial's optimiser updates so far

    @property
    def prune(self) -> bool:
        return self.value < self.best - self.margin


class BestTrialPruner(BasePruner):
    """Stop a trial whose best validation ROC AUC is clearly below the best complete trial's.

    ROC AUC ranks examples, so it tells a model that is learning from one that never will
    while both still call every example one class (F1 0 for both). The complete trials are
    read after at most as many optimiser updates as the judged trial has made, so a
    batch-32 trial is not judged after one epoch against batch-8 trials that made four
    times the updates. "Clearly" is ``margin_se`` standard errors of the difference
    (Hanley and McNeil's, stored with every epoch row), so gaps the validation split
    cannot resolve stop nothing.

    Args:
        startup_trials: Complete trials needed before any trial is judged.
        warmup_epochs: Epochs every trial trains before it may be judged.
        margin_se: Standard errors of the difference the gap must exceed.
    """

    def __init__(self, *, startup_trials: int = 1, warmup_epochs: int = 0, margin_se: float = 1.0) -> None:
        if startup_trials < 0 or warmup_epochs < 0 or not margin_se >= 0:
            raise ValueError(
                "startup_trials, warmup_epochs and margin_se must be >= 0; "
                f"got {startup_trials}, {warmup_epochs} and {margin_se}"
            )
        self.startup_trials = startup_trials
        self.warmup_epochs = warmup_epochs
        self.margin_se = margin_se

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        verdict = self.judge(study, schema.rows(trial))
        return verdict is not None and verdict.prune

    def explain(self, study: optuna.Study, rows: list[EpochRow], objective: str) -> str | None:
        """``roc_auc 0.7451 < 0.8852 - 0.0603 (trial 0 at <=38 updates)``, or None where the rule does not judge."""
        verdict = self.judge(study, rows)
        if verdict is None:
            return None
        return (
            f"{RANKING_METRIC} {verdict.value:.4f} < {verdict.best:.4f} - {verdict.margin:.4f} "
            f"(trial {verdict.best_trial} at <={verdict.updates} updates)"
        )

    def judge(self, study: optuna.Study, rows: list[EpochRow]) -> Verdict | None:
        """How a trial with these epoch rows stands, or None where the rule does not judge it yet."""
        if not rows or rows[-1]["epoch"] <= self.warmup_epochs:
            return None
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self.startup_trials:
            return None
        mine = [row for row in rows if is_number(row[RANKING_METRIC]) and is_number(row[RANKING_METRIC_SE])]
        updates = rows[-1]["step"]
        others = [(t.number, row) for t in done if (row := _row_within(t, updates)) is not None]
        if not mine or not others:
            return None  # a single-class validation split, or every complete trial further along
        own = max(mine, key=lambda row: row[RANKING_METRIC])
        number, top = max(others, key=lambda pair: (pair[1][RANKING_METRIC], -pair[0]))
        margin = self.margin_se * math.hypot(own[RANKING_METRIC_SE], top[RANKING_METRIC_SE])
        return Verdict(own[RANKING_METRIC], top[RANKING_METRIC], margin, number, updates)


class MedianPruner(optuna.pruners.MedianPruner):
    """Optuna's median rule, able to say why it pruned."""

    def explain(self, study: optuna.Study, rows: list[EpochRow], objective: str) -> str | None:
        """``f1 0.5012 < median 0.6100 of 3 complete trials`` at the trial's last epoch."""
        if not rows:
            return None
        epoch, value = rows[-1]["epoch"], rows[-1][objective]
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        at_epoch = [t.intermediate_values[epoch] for t in done if epoch in t.intermediate_values]
        if not at_epoch:
            return None
        return (
            f"{objective} {value:.4f} < median {statistics.median(at_epoch):.4f} "
            f"of {count(len(at_epoch), 'complete trial')}"
        )


def _row_within(trial: FrozenTrial, updates: int) -> EpochRow | None:
    """The trial's row of its last epoch made within ``updates`` optimiser updates, with a ROC AUC."""
    found = None
    for row in schema.rows(trial):
        if row["step"] > updates:
            break
        if is_number(row[RANKING_METRIC]) and is_number(row[RANKING_METRIC_SE]):
            found = row
    return found
