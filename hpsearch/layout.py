"""Where a study's files live under ``--workdir``: one object, so every path is spelled once.

``<workdir>/<study>/`` holds the kept model (``best-model/``; with ``[peft]`` an adapter of
``base-model/``), the cards of other trials
(``trial-<N>/``), the confirmation's models (``confirm/trial-<N>/best-model/``), the HTML
report, the trackers' runs and the dashboard's artifact store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

BEST_MODEL = "best-model"  # the kept model, its marker and its card


class _HasStudy(Protocol):
    study: str
    workdir: str


@dataclass(frozen=True)
class StudyLayout:
    """The files of study ``study`` under ``workdir``."""

    workdir: Path
    study: str

    @classmethod
    def of(cls, config: _HasStudy) -> StudyLayout:
        """The layout of a :class:`~hpsearch.config.SearchConfig` (or anything with ``study`` and ``workdir``)."""
        return cls(Path(config.workdir), config.study)

    @property
    def root(self) -> Path:
        return self.workdir / self.study

    @property
    def best_model(self) -> Path:
        return best_model_in(self.root)

    @property
    def base_model(self) -> Path:
        """With ``[peft]``: the base model with the task's head, which every kept adapter names."""
        return self.root / "base-model"

    @property
    def confirm(self) -> Path:
        """Per configuration, the best confirmation run's model: ``confirm/trial-<N>/best-model/``."""
        return self.root / "confirm"

    def confirm_root(self, trial: int) -> Path:
        """The folder whose ``best-model/`` keeps trial ``trial``'s configuration's best run."""
        return self.confirm / f"trial-{trial}"

    def trial_card(self, trial: int) -> Path:
        """Where ``hpsearch card N`` writes trial N's card."""
        return self.root / f"trial-{trial}"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def runs(self) -> Path:
        """The trackers' runs (TensorBoard's event files), one folder per trial."""
        return self.root / "runs"

    @property
    def artifacts(self) -> Path:
        """The Optuna artifact store that optuna-dashboard shows."""
        return self.root / "artifacts"


def best_model_in(root: Path) -> Path:
    """``root/best-model``: a kept model's folder, for the study's root or a configuration's."""
    return Path(root) / BEST_MODEL
