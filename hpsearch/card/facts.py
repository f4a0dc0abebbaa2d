"""What a model card says, read from storage alone: one trial and the study around it.

:func:`gather` picks the trial ("best" or a number) and returns a :class:`CardFacts`; the
card's sections (:mod:`~hpsearch.card.trial_section`, :mod:`~hpsearch.card.search_section`,
:mod:`~hpsearch.card.trust`) read nothing else. Every stored value is read through
:mod:`hpsearch.schema`, so a study written in another schema version is refused here, in
one line, before anything is rendered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch import schema
from hpsearch.analysis.seeds import Confirmation
from hpsearch.bestmodel import Marker
from hpsearch.errors import CardError
from hpsearch.schema import DataFacts, EpochRow, StudySettings
from hpsearch.search.storage import redact


@dataclass
class CardFacts:
    """Everything a card says, read from storage: one trial and the study around it."""

    study_name: str
    storage: str  # redacted
    trial: FrozenTrial
    is_best: bool  # the card of `hpsearch card best`
    settings: StudySettings
    trials: list[FrozenTrial] = field(default_factory=list)
    best_number: int | None = None
    confirmation: Confirmation | None = None  # once `hpsearch confirm` has stored a plan
    # The run the card's numbers describe when it is not ``trial`` itself: the confirmed
    # winner's confirmation run that best-model/ ships, and its seed.
    shipped_run: FrozenTrial | None = None
    shipped_seed: int | None = None

    @property
    def run(self) -> FrozenTrial:
        """The run whose epochs, shipped epoch and test scores the card gives."""
        return self.shipped_run or self.trial

    @property
    def config(self) -> dict[str, Any]:
        """The resolved configuration the study ran with (``SearchConfig.to_dict()``)."""
        return self.settings.config

    @property
    def data(self) -> DataFacts:
        return self.settings.data

    @property
    def objective(self) -> str:
        return self.settings.objective

    @property
    def average(self) -> str:
        """How F1, precision and recall average over classes: "binary" (class 1) or "macro"."""
        return self.data.average

    @property
    def label_names(self) -> list[str]:
        return list(self.data.label_names)

    @property
    def positive_label(self) -> str:
        """The class a binary F1 scores: the second label."""
        return self.data.positive_label

    @property
    def validation_counts(self) -> list[int]:
        """Validation examples of each class, in label order."""
        return list(self.data.class_counts["validation"])

    @property
    def rows(self) -> list[EpochRow]:
        return schema.rows(self.run)

    @property
    def shipped_row(self) -> EpochRow | None:
        """The epoch whose model the trial ships; for a pruned or failed trial, its last epoch."""
        return schema.shipped_row(self.run)

    @property
    def test_metrics(self) -> dict[str, float] | None:
        """The kept model's scores on the test split, where the run measured them."""
        return schema.test_metrics(self.run)


def gather(
    study: optuna.Study,
    trial: str,
    *,
    storage: str,
    confirmation: Confirmation | None = None,
    shipped: Marker | None = None,
) -> CardFacts:
    """Pick the trial ("best" or a number) and read what the card needs from storage.

    After a confirmation whose winner ``shipped`` (the best-model marker) says is confirmed,
    "best" is the winner's configuration, and the card's numbers are those of the run it ships.

    Raises:
        StorageError: The study was not made by ``hpsearch run``, or in another schema version.
        CardError: No complete trial, or an unknown or unfinished trial number.
    """
    settings = schema.read_settings(study)
    trials = study.get_trials(deepcopy=False)
    best = schema.best_trial(trials)
    shipped_run, shipped_seed = None, None
    if trial == "best":
        if best is None:
            raise CardError(f"study {study.study_name!r} has no complete trial yet; run `hpsearch run` first")
        chosen = best
        # A race's winner is its last incumbent even when it stopped short (--timeout).
        settled = confirmation is not None and (confirmation.done or confirmation.race is not None)
        winner = confirmation.winner if settled else None
        if winner is not None and shipped is not None and shipped.confirmed and shipped.trial == winner.trial:
            first = next((r.trial for r in winner.runs if r.original), winner.trial)  # the recipe may have run twice
            chosen = next(t for t in trials if t.number == first)
            run = next((r for r in winner.runs if r.seed == shipped.seed), None)
            shipped_seed = shipped.seed
            if run is not None and not run.original:
                shipped_run = confirmation.units.get(run.trial)
    else:
        chosen = _numbered(study.study_name, trials, trial)
    return CardFacts(
        study_name=study.study_name,
        storage=redact(storage),
        trial=chosen,
        is_best=trial == "best",
        settings=settings,
        trials=list(trials),
        best_number=best.number if best is not None else None,
        confirmation=confirmation,
        shipped_run=shipped_run,
        shipped_seed=shipped_seed,
    )


def metric_label(key: str) -> str:
    """The label of a metric key ("f1" → "F1"); a key the card does not know is shown as it is."""
    return schema.METRIC_LABELS.get(key, key)


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
        raise CardError(f"trial {number} is still {schema.state_name(found)}; write its card once it has finished")
    return found
