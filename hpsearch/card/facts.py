"""What a model card says, read from storage alone: one trial and the study around it.

:func:`gather` picks the trial ("best" or a number) and returns a :class:`CardFacts`; the
card's sections (:mod:`~hpsearch.card.trial_section`, :mod:`~hpsearch.card.search_section`,
:mod:`~hpsearch.card.trust`) read nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import CardError
from hpsearch.search.storage import redact
from hpsearch.views.trials import EPOCHS_ATTR, STATE_NAMES, best_trial

METRIC_LABELS = {"f1": "F1", "accuracy": "Accuracy", "precision": "Precision", "recall": "Recall"}


@dataclass
class CardFacts:
    """Everything a card says, read from storage: one trial and the study around it."""

    study_name: str
    storage: str  # redacted
    trial: FrozenTrial
    is_best: bool  # the card of `hpsearch card best`
    info: dict[str, Any]  # the study's `hpsearch` attribute: config, data, base_model, versions, created
    trials: list[FrozenTrial] = field(default_factory=list)
    best_number: int | None = None

    @property
    def config(self) -> dict[str, Any]:
        return self.info.get("config", {})

    @property
    def data(self) -> dict[str, Any]:
        return self.info.get("data", {})

    @property
    def objective(self) -> str:
        return str(self.config.get("objective", "f1"))

    @property
    def average(self) -> str:
        """How F1, precision and recall average over classes: "binary" (class 1) or "macro"."""
        return self.data.get("average", "binary")

    @property
    def label_names(self) -> list[str]:
        return [str(n) for n in self.data.get("label_names", [])]

    @property
    def positive_label(self) -> str:
        """The class a binary F1 scores: the second label."""
        labels = self.label_names
        return labels[1] if len(labels) > 1 else "1"

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self.trial.user_attrs.get(EPOCHS_ATTR, []))

    @property
    def shipped_row(self) -> dict[str, Any] | None:
        """The epoch whose model the trial ships; for a pruned or failed trial, its last epoch."""
        rows = self.rows
        shipped = self.trial.user_attrs.get("shipped_epoch")
        for row in rows:
            if row.get("epoch") == shipped:
                return row
        return rows[-1] if rows else None

    @property
    def test_metrics(self) -> dict[str, Any] | None:
        """The kept model's scores on the test split, where the run measured them."""
        test = self.trial.user_attrs.get("test_metrics")
        return test if isinstance(test, dict) and test else None


def gather(study: optuna.Study, trial: str, *, storage: str) -> CardFacts:
    """Pick the trial ("best" or a number) and read what the card needs from storage."""
    from hpsearch.search.study import STUDY_ATTR

    info = study.user_attrs.get(STUDY_ATTR)
    if not isinstance(info, dict):
        raise CardError(f"study {study.study_name!r} was not made by `hpsearch run` (it has no {STUDY_ATTR!r} attribute); pass the --study that `hpsearch run` made")
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    if trial == "best":
        if best is None:
            raise CardError(f"study {study.study_name!r} has no complete trial yet; run `hpsearch run` first")
        chosen = best
    else:
        chosen = _numbered(study.study_name, trials, trial)
    return CardFacts(
        study_name=study.study_name,
        storage=redact(storage),
        trial=chosen,
        is_best=trial == "best",
        info=info,
        trials=list(trials),
        best_number=best.number if best is not None else None,
    )


def metric_label(key: str) -> str:
    """The label of a metric key ("f1" → "F1"); a key the card does not know is shown as it is."""
    return METRIC_LABELS.get(key, key)


def state_name(trial: FrozenTrial) -> str:
    return STATE_NAMES.get(trial.state, trial.state.name.lower())


def _numbered(study_name: str, trials: list[FrozenTrial], text: str) -> FrozenTrial:
    try:
        number = int(text)
    except ValueError:
        raise CardError(f"expected 'best' or a trial number, got {text!r}") from None
    found = next((t for t in trials if t.number == number), None)
    if found is None:
        have = f"trials 0 to {len(trials) - 1}" if trials else "no trials yet"
        raise CardError(f"study {study_name!r} has no trial {number} (it has {have}); see `hpsearch trials`")
    if found.state in (TrialState.RUNNING, TrialState.WAITING):
        raise CardError(f"trial {number} is still {STATE_NAMES[found.state]}; write its card once it has finished")
    return found
