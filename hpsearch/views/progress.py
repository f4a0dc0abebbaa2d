"""What a user sees while a search runs: one line per trial start, epoch and end, on stderr.

On a terminal the lines are coloured by ``rich``; piped to a file they are plain text.
"""

from __future__ import annotations

import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.search.storage import redact
from hpsearch.views.trials import STOPPED_EARLY_ATTR, best_trial, format_param


class ConsoleReporter:
    def __init__(self, console: Any) -> None:
        self.console = console
        self.total = 0
        self.finished = 0
        self.objective = "f1"
        self.epochs = 0
        self._started: dict[int, float] = {}
        self._epoch_started: dict[int, float] = {}

    def run_start(self, study: optuna.Study, config: Any, task: Any, finished: int) -> None:
        self.total, self.finished = config.trials, finished
        self.objective, self.epochs = config.objective, config.epochs
        sizes = " / ".join(f"{task.size(s)} {s}" for s in ("train", "validation", "test") if s in task.splits)
        self.console.print(f"[bold]study[/] {config.study} in {redact(config.storage)}: {finished} of {config.trials} trials finished")
        self.console.print(f"[bold]model[/] {config.model}   [bold]data[/] {task.name} ({sizes}; {task.num_labels} classes, {task.average} {config.objective})")
        for note in task.notes:
            self.console.print(f"[yellow]note[/] {note}")
        if finished >= config.trials:
            self.console.print(f"the study already has {finished} finished trials; raise --trials to run more")

    def waiting(self, running: int, needed: int) -> None:
        trials = "trial" if running == 1 else "trials"
        self.console.print(
            f"waiting for {running} {trials} running in other workers: the study needs {needed} more "
            "finished; a new trial starts only if they fail (Ctrl-C stops waiting; nothing is lost)"
        )

    def trial_start(self, number: int, params: dict[str, Any]) -> None:
        self._started[number] = self._epoch_started[number] = time.monotonic()
        shown = "  ".join(f"{k}={format_param(v)}" for k, v in params.items())
        self.console.print(f"[bold cyan]trial {number}[/] ({min(self.finished + 1, self.total)}/{self.total})  {shown}")

    def epoch(self, number: int, row: dict[str, Any], *, pruned: bool, stopped: str | None = None) -> None:
        now = time.monotonic()
        seconds = now - self._epoch_started.get(number, now)
        self._epoch_started[number] = now
        loss = "" if row.get("train_loss") is None else f"loss {row['train_loss']:.4f}  "
        self.console.print(
            f"  epoch {row['epoch']}/{self.epochs}  {loss}val_loss {row['eval_loss']:.4f}  "
            f"{self.objective} {row[self.objective]:.4f}  acc {row['accuracy']:.4f}  [dim]{seconds:.1f}s[/]"
            + ("  [yellow]pruned[/]" if pruned else "")
            + ("  [cyan]stopped early: no new best[/]" if stopped else "")
        )

    def trial_end(self, study: optuna.Study, trial: FrozenTrial) -> None:
        seconds = time.monotonic() - self._started.pop(trial.number, time.monotonic())
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self.finished += 1
        best = _best(study)
        best_text = f"best: trial {best.number}, {self.objective} {best.value:.4f}" if best else "no complete trial yet"
        if trial.state == TrialState.COMPLETE:
            star = "  [green]★ new best, model kept[/]" if trial.user_attrs.get("kept_model") else ""
            self.console.print(
                f"[bold]trial {trial.number}[/] complete: {self.objective} {trial.value:.4f} "
                f"(epoch {trial.user_attrs.get('shipped_epoch')})  [dim]{seconds:.1f}s[/]{star}   {best_text}"
            )
            if trial.user_attrs.get(STOPPED_EARLY_ATTR):
                self.console.print(f"  [cyan]{trial.user_attrs[STOPPED_EARLY_ATTR]}[/]")
        elif trial.state == TrialState.PRUNED:
            self.console.print(f"[bold]trial {trial.number}[/] [yellow]{trial.user_attrs.get('pruned_reason', 'pruned')}[/]  [dim]{seconds:.1f}s[/]   {best_text}")
        else:
            self.console.print(f"[bold]trial {trial.number}[/] [red]failed: {trial.user_attrs.get('fail_reason', 'unknown')}[/]   {best_text}")


def _best(study: optuna.Study) -> FrozenTrial | None:
    return best_trial(study)
