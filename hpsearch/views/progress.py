"""What a user sees while a search runs: one line per trial start, epoch and end, on stderr.

    trial 2 (3/20)  lr=1.2e-05  batch=8  warmup=0  decay=0.05
      epoch 1/5  loss 0.6931  val_loss 0.6890  f1 0.4000  acc 0.4100  3.1s
    trial 2 pruned at epoch 1: f1 0.4000 < median 0.6500 of 2 complete trials  3.4s   best: trial 1, f1 0.8200

:class:`ConsoleReporter` is a :class:`~hpsearch.search.events.RunListener`: the search
calls it. Parameters are named by :func:`~hpsearch.views.trials.param_label`, as in the
trials table. On a terminal the lines are coloured by ``rich``; piped they are plain text.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from hpsearch import schema
from hpsearch.search.events import RunInfo, RunListener
from hpsearch.search.storage import redact
from hpsearch.views.trials import count, format_params, human_seconds

if TYPE_CHECKING:
    import optuna
    from rich.console import Console


class ConsoleReporter(RunListener):
    """Prints a search's progress to a ``rich`` console (stderr in ``hpsearch run``).

    Args:
        console: Where the lines go; its markup colours them on a terminal.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.total = 0
        self.finished = 0
        self.objective = ""
        self.epochs = 0
        self._epoch_started: dict[int, float] = {}

    def run_start(self, run: RunInfo) -> None:
        config, data = run.config, run.data
        self.total, self.finished = config.trials, run.finished
        self.objective, self.epochs = config.objective, config.epochs
        sizes = " / ".join(f"{n} {split}" for split, n in data.sizes.items())
        self.console.print(f"[bold]study[/] {config.study} in {redact(config.storage)}: {run.finished} of {config.trials} trials finished")
        self.console.print(
            f"[bold]model[/] {config.model}   [bold]data[/] {data.name} ({sizes}; {len(data.label_names)} classes, {data.average} {config.objective})"
        )
        for note in data.notes:
            self.console.print(f"[yellow]note[/] {note}")
        if run.finished >= config.trials:
            self.console.print(f"the study already has {run.finished} finished trials; raise --trials to run more")

    def waiting(self, running: int, needed: int) -> None:
        trials = "trial" if running == 1 else "trials"
        self.console.print(
            f"waiting for {running} {trials} running in other workers: the study needs {needed} more "
            "finished; a new trial starts only if they fail (Ctrl-C stops waiting; nothing is lost)"
        )

    def trial_start(self, trial: optuna.Trial, params: dict[str, Any]) -> None:
        self._epoch_started[trial.number] = time.monotonic()
        # The reader takes a FrozenTrial; a live trial's attributes read the same.
        recipe = "  [dim]the recipe[/]" if schema.is_recipe(trial) else ""  # type: ignore[arg-type]
        position = f"({min(self.finished + 1, self.total)}/{self.total})"
        self.console.print(f"[bold cyan]trial {trial.number}[/] {position}  {format_params(params)}{recipe}")

    def epoch(self, trial: optuna.Trial, row: schema.EpochRow, *, pruned: str | None, stopped: str | None) -> None:
        # How the trial ends is said once, on its end line; this line is the epoch's scores.
        now = time.monotonic()
        seconds = now - self._epoch_started.get(trial.number, now)
        self._epoch_started[trial.number] = now
        loss = "" if row["train_loss"] is None else f"loss {row['train_loss']:.4f}  "
        self.console.print(
            f"  epoch {row['epoch']}/{self.epochs}  {loss}val_loss {row['eval_loss']:.4f}  "
            f"{self.objective} {row[self.objective]:.4f}  acc {row['accuracy']:.4f}  [dim]{seconds:.1f}s[/]"
        )

    def trial_end(self, trial: optuna.Trial, frozen: FrozenTrial) -> None:
        self._epoch_started.pop(trial.number, None)
        if frozen.state in schema.FINISHED:
            self.finished += 1
        took = f"[dim]{human_seconds(frozen.duration.total_seconds())}[/]" if frozen.duration is not None else ""
        best = schema.best_trial(trial.study.get_trials(deepcopy=False))
        best_text = f"best: trial {best.number}, {self.objective} {best.value:.4f}" if best is not None else "no complete trial yet"
        head = f"[bold]trial {frozen.number}[/]"
        if frozen.state == TrialState.COMPLETE:
            kept = "  [green]★ new best, model kept[/]" if schema.kept_model(frozen) else f"   {best_text}"
            self.console.print(f"{head} complete: {self.objective} {frozen.value:.4f}, {_shipped(frozen)}  {took}{kept}")
            if schema.stopped_early(frozen):
                self.console.print(f"  [cyan]{schema.stopped_early(frozen)}[/]")
        elif frozen.state == TrialState.PRUNED:
            self.console.print(f"{head} [yellow]{_pruned(frozen)}[/]  {took}   {best_text}")
        else:
            self.console.print(f"{head} [red]failed: {schema.fail_reason(frozen)}[/]  {took}   {best_text}")


def _shipped(trial: FrozenTrial) -> str:
    """``shipped epoch 4 of 5 trained``: the epoch behind the score, and how far the trial went."""
    epochs = schema.rows(trial)
    trained = epochs[-1]["epoch"] if epochs else None
    shipped = schema.shipped_epoch(trial)
    if shipped is None or trained is None:
        return f"{count(trained or 0, 'epoch')} trained"
    return f"shipped epoch {shipped} of {trained} trained"


def _pruned(trial: FrozenTrial) -> str:
    """The stored reason, criterion first (``pruned at epoch 1: roc_auc 0.745 < ...``)."""
    reason = schema.pruned_reason(trial)
    if not reason:
        epochs = schema.rows(trial)
        return f"pruned at epoch {epochs[-1]['epoch']}" if epochs else "pruned"
    return reason if reason.startswith("pruned") else f"pruned: {reason}"
