"""What a search tells the outside while it runs: the listener interface.

The search loop (:mod:`hpsearch.search.loop`) and a trial's callbacks
(:mod:`hpsearch.training.objective`) call these methods; the terminal progress
(:mod:`hpsearch.views.progress`) and the dashboard's notes (:mod:`hpsearch.views.dashboard`)
implement them. The interface sits below all of them, so training and search tell the
views what happens without importing them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpsearch.config import SearchConfig
    from hpsearch.schema import DataFacts, EpochRow


@dataclass(frozen=True)
class RunInfo:
    """What a listener learns when a worker starts."""

    study: optuna.Study
    config: SearchConfig
    data: DataFacts
    finished: int  # finished trials in the study when this worker started
    # The study's lock (see hpsearch.search.locks): take it for writes that several workers
    # must not interleave, such as the study's dashboard note.
    lock: Callable[[], AbstractContextManager[None]]
    # "search" (the study's trials) or "confirm" (runs of the sibling ``<study>.confirm``): a
    # chained run (``run --confirm-top``) tells the same listeners about one, then the other.
    kind: str = "search"


class RunListener:
    """Receives a search's events; every method does nothing unless overridden.

    A listener must not raise: the search does not catch what it raises.
    """

    def run_start(self, run: RunInfo) -> None:
        """The worker has opened the study and is about to start trials."""

    def waiting(self, running: int, needed: int) -> None:
        """Trials other workers run may reach the total: this worker waits for them."""

    def trial_start(self, trial: optuna.Trial, params: dict[str, Any]) -> None:
        """A trial starts with these sampled parameters."""

    def step(self, trial: optuna.Trial, step: int, steps_in_epoch: int, *, epoch: int, samples: int) -> None:
        """An optimiser update ended: ``step`` of ``steps_in_epoch`` of ``epoch``, after
        ``samples`` training examples of that epoch. Called often: keep it cheap."""

    def epoch(self, trial: optuna.Trial, row: EpochRow, *, pruned: str | None, stopped: str | None) -> None:
        """An epoch was evaluated and stored; ``pruned``/``stopped`` say why training ends after it."""

    def trial_end(self, trial: optuna.Trial, frozen: FrozenTrial) -> None:
        """The trial was told to Optuna; ``frozen`` is its stored record, ``trial`` the live handle."""

    def note(self, text: str) -> None:
        """A line about the run that is no trial's: a challenger enters the race, drops out, takes over."""


class Listeners(RunListener):
    """Several listeners as one, called in order."""

    def __init__(self, listeners: Sequence[RunListener] = ()) -> None:
        self.listeners = list(listeners)

    def run_start(self, run: RunInfo) -> None:
        for listener in self.listeners:
            listener.run_start(run)

    def waiting(self, running: int, needed: int) -> None:
        for listener in self.listeners:
            listener.waiting(running, needed)

    def trial_start(self, trial: optuna.Trial, params: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener.trial_start(trial, params)

    def step(self, trial: optuna.Trial, step: int, steps_in_epoch: int, *, epoch: int, samples: int) -> None:
        for listener in self.listeners:
            listener.step(trial, step, steps_in_epoch, epoch=epoch, samples=samples)

    def epoch(self, trial: optuna.Trial, row: EpochRow, *, pruned: str | None, stopped: str | None) -> None:
        for listener in self.listeners:
            listener.epoch(trial, row, pruned=pruned, stopped=stopped)

    def trial_end(self, trial: optuna.Trial, frozen: FrozenTrial) -> None:
        for listener in self.listeners:
            listener.trial_end(trial, frozen)

    def note(self, text: str) -> None:
        for listener in self.listeners:
            listener.note(text)
