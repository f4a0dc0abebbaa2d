"""Pruning rules that hpsearch measured and did not keep, for the benchmarks that re-run them.

hpsearch's ``[pruner]`` table offers ``best`` (ROC AUC at equal updates against the best
complete trial, with a margin of standard errors), ``median`` (Optuna's MedianPruner on the
objective at equal epochs), ``halving``, ``hyperband`` and ``none``. RESULTS.md section 2
also measured the median rule on ROC AUC, trials compared at equal updates or at equal
summed learning rate, and margins around the median; those rules live here, so that
``pruning.py`` can run them through ``run_search(config, pruner=...)``:

* :class:`AlignedMedianPruner`: the general rule (``metric``, ``align``, ``margin_se``,
  ``reference``), as hpsearch had it up to commit 241830e (``hpsearch/pruners.py``).
* :class:`LrSumRecorder`: what ``align = "lr_sum"`` compares. hpsearch's epoch rows no
  longer store the summed learning rate, so this listener-and-callback pair sums the rate
  of every optimiser update and stores the sums per epoch in the trial attribute
  :data:`LR_SUM_ATTR`, which the pruner reads beside the rows.
* :func:`make_pruner`: a benchmark's variant spec turned into a pruner.

The pruner depends on nothing of hpsearch but the name of the rows' attribute,
:data:`EPOCHS_ATTR`, and the keys of a row it compares (``epoch``, ``step``, the metric and
``<metric>_se``); the recorder implements hpsearch's listener interface. Import this
module in the process that trains: it imports transformers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any, NamedTuple

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState
from transformers import TrainerCallback

from hpsearch import RunListener

EPOCHS_ATTR = "epochs"  # hpsearch's trial attribute: one row per evaluated epoch
LR_SUM_ATTR = "bench_lr_sum"  # this module's: [{"epoch": 1, "lr_sum": ...}, ...]

ALIGNS = {"epochs": "epoch", "updates": "step", "lr_sum": "lr_sum"}  # align -> the row key it compares
REFERENCES = ("median", "best")
# What a variant spec leaves out: the median rule's settings, as a `[pruner] name = "median"`
# table resolved them when these rules were measured (hpsearch's config at commit 241830e).
SPEC_DEFAULTS: dict[str, Any] = {
    "metric": "objective",
    "align": "epochs",
    "margin_se": 0.0,
    "reference": "median",
    "startup_trials": 3,
    "warmup_epochs": 0,
}


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
    trials' ``metric`` at the same point: after as many epochs, after at most as many
    optimiser updates, or after at most as large a sum of learning rates; with
    ``margin_se``, below it by more than that many standard errors. With
    ``reference="best"``, the best complete trial's value at that point replaces the median.

    Args:
        metric: Key of the ``epochs`` rows to compare; higher is better.
        align: "epochs", "updates" or "lr_sum" (the last needs :class:`LrSumRecorder`).
        startup_trials: Complete trials needed before any trial is judged.
        warmup_epochs: Epochs every trial trains before it may be judged.
        margin_se: Standard errors of the difference between the trial's best value and the
            reference that the gap must exceed; the rows' ``<metric>_se`` give them (the
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
        if align not in ALIGNS:
            raise ValueError(f"align: expected one of {', '.join(ALIGNS)}, got {align!r}")
        if reference not in REFERENCES:
            raise ValueError(f"reference: expected median or best, got {reference!r}")
        if startup_trials < 0 or warmup_epochs < 0 or not margin_se >= 0:
            raise ValueError(
                "startup_trials, warmup_epochs and margin_se must be >= 0; "
                f"got {startup_trials}, {warmup_epochs} and {margin_se}"
            )
        if reference == "best" and not margin_se:
            raise ValueError(
                "reference: 'best' needs margin_se > 0; without a margin every trial below the best would stop"
            )
        self.metric = metric
        self.align = align
        self.startup_trials = startup_trials
        self.warmup_epochs = warmup_epochs
        self.margin_se = margin_se
        self.reference = reference

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        verdict = self.judge(study, trial_rows(trial))
        return verdict is not None and verdict.prune

    def judge(self, study: optuna.Study, rows: list[dict[str, Any]]) -> Verdict | None:
        """How a trial with these epoch rows stands, or None where the rule does not judge it yet."""
        if not rows or rows[-1]["epoch"] <= self.warmup_epochs:
            return None
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self.startup_trials:
            return None
        mine = [row for row in rows if _finite(row.get(self.metric))]
        if not mine:
            return None  # nothing to judge by (a single-class validation split)
        key = ALIGNS[self.align]
        point = rows[-1].get(key)
        if not _finite(point):
            return None  # no lr_sum for this epoch: the recorder was not installed
        others = [row for t in done if (row := _row_at(trial_rows(t), key, point, self.metric)) is not None]
        if not others:
            return None  # every complete trial was further along after its first epoch
        best = max(mine, key=lambda row: row[self.metric])
        se_key = f"{self.metric}_se"
        if self.reference == "best":
            top = max(others, key=lambda row: row[self.metric])
            against, their_errors = top[self.metric], [top.get(se_key)]
        else:
            against, their_errors = (
                statistics.median(row[self.metric] for row in others),
                [row.get(se_key) for row in others],
            )
        margin = 0.0
        if self.margin_se > 0:
            errors = [e for e in their_errors if _finite(e)]
            if not _finite(best.get(se_key)) or not errors:
                return None  # no standard errors to weigh the gap with
            margin = self.margin_se * math.hypot(best[se_key], statistics.median(errors))
        return Verdict(best[self.metric], against, len(others), margin)


def trial_rows(trial: FrozenTrial) -> list[dict[str, Any]]:
    """The trial's epoch rows, each with the ``lr_sum`` that :class:`LrSumRecorder` stored
    for its epoch (rows of studies from before hpsearch dropped the key carry their own)."""
    rows = list(trial.user_attrs.get(EPOCHS_ATTR) or [])
    sums = {r["epoch"]: r["lr_sum"] for r in trial.user_attrs.get(LR_SUM_ATTR) or []}
    if not sums:
        return rows
    return [{**row, "lr_sum": sums.get(row["epoch"], row.get("lr_sum"))} for row in rows]


def _row_at(rows: list[dict[str, Any]], key: str, point: float, metric: str) -> dict[str, Any] | None:
    """The row of the last epoch whose ``key`` (epoch, step or lr_sum) is at most ``point``
    and that holds ``metric``: the same epoch, or the last epoch within as many updates or
    as large a sum of learning rates."""
    found = None
    for row in rows:
        if not _finite(row.get(key)):
            return None  # a trial whose sums were not recorded cannot be placed
        if row[key] > point:
            break
        if _finite(row.get(metric)):
            found = row
    return found


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- specs


def make_pruner(spec: Mapping[str, Any], *, objective: str = "f1") -> BasePruner:
    """The pruner a variant spec describes.

    Args:
        spec: Any of ``metric`` ("objective" or a row key such as "roc_auc"), ``align``,
            ``margin_se``, ``reference``, ``startup_trials`` and ``warmup_epochs``; what it
            leaves out takes :data:`SPEC_DEFAULTS`.
        objective: The row key that ``metric = "objective"`` stands for.

    The objective at equal epochs with no margin against the median is Optuna's
    MedianPruner, and is built as one, as hpsearch built it.
    """
    unknown = set(spec) - set(SPEC_DEFAULTS)
    if unknown:
        raise ValueError(f"pruner spec: unknown key {sorted(unknown)[0]!r}; expected any of {', '.join(SPEC_DEFAULTS)}")
    full = {**SPEC_DEFAULTS, **spec}
    metric = objective if full["metric"] == "objective" else full["metric"]
    if metric == objective and full["align"] == "epochs" and not full["margin_se"] and full["reference"] == "median":
        # Steps are epoch numbers from 1; MedianPruner skips steps < n_warmup_steps.
        return optuna.pruners.MedianPruner(
            n_startup_trials=full["startup_trials"], n_warmup_steps=full["warmup_epochs"] + 1
        )
    return AlignedMedianPruner(
        metric=metric,
        align=full["align"],
        startup_trials=full["startup_trials"],
        warmup_epochs=full["warmup_epochs"],
        margin_se=full["margin_se"],
        reference=full["reference"],
    )


def needs_lr_sum(spec: Mapping[str, Any]) -> bool:
    """Whether the spec's rule reads the sums :class:`LrSumRecorder` stores."""
    return spec.get("align", SPEC_DEFAULTS["align"]) == "lr_sum"


# --------------------------------------------------------------------------- lr_sum


class LrSumRecorder(RunListener):
    """Stores, per epoch, the sum of the learning rates of the trial's updates so far.

    Adam's steps scale with the learning rate, so the sum is how far a trial's updates
    could move it. The Trainer callbacks do not know the Optuna trial, so this object is
    two things: a run listener (pass it in ``listeners=``) that learns each trial as it
    starts, and :attr:`callback` (pass it in ``callbacks=``), which sums and stores.
    """

    def __init__(self) -> None:
        self.trial: optuna.Trial | None = None
        self.callback = _LrSumCallback(self)

    def trial_start(self, trial: optuna.Trial, params: dict[str, Any]) -> None:
        self.trial = trial


class _LrSumCallback(TrainerCallback):
    def __init__(self, recorder: LrSumRecorder) -> None:
        self.recorder = recorder
        self.total = 0.0
        self.rows: list[dict[str, Any]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.total, self.rows = 0.0, []

    def on_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        # The Trainer calls this after the optimiser's step and before the scheduler's, so
        # the rate read is the one the update was made with, whatever the schedule.
        if optimizer is not None:
            self.total += float(optimizer.param_groups[0]["lr"])

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # Stored at the epoch's end, not at its evaluation: the Trainer calls on_epoch_end
        # before it evaluates, and hpsearch's own callback, which asks the pruner, comes
        # before the extra callbacks in every event, so a sum stored in on_evaluate would
        # reach the pruner one epoch late. No update happens between the two events.
        trial = self.recorder.trial
        if trial is None:
            return
        self.rows.append({"epoch": int(round(state.epoch)), "lr_sum": self.total})
        trial.set_user_attr(LR_SUM_ATTR, list(self.rows))
