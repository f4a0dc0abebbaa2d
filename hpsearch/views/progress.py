"""What a user sees while a search runs: one line per trial start, epoch and end, on stderr.

    trial 2 (3/20)  lr=1.2e-05  batch=8  warmup=0  decay=0.05
      epoch 1/5  loss 0.6931  val_loss 0.6890  f1 0.4000  acc 0.4100  3.1s
    trial 2 pruned at epoch 1: f1 0.4000 < median 0.6500 of 2 complete trials  3.4s   best: trial 1, f1 0.8200

:class:`ConsoleReporter` is a :class:`~hpsearch.events.RunListener`: the search
calls it. Parameters are named by :func:`~hpsearch.views.trials.param_label`, as in the
trials table. On a terminal the lines are coloured by ``rich``, and below them a progress bar
follows the epoch (steps, samples per second, time left) over a line with the trials done
and the search's elapsed time; piped, the output is the plain lines alone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from hpsearch import schema
from hpsearch.events import RunInfo, RunListener
from hpsearch.formatting import count, format_params, human_seconds
from hpsearch.search.storage import redact

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
        self.kind = "search"
        self._epoch_started: dict[int, float] = {}
        self._bars: _Bars | None = None
        self._run_started = time.monotonic()

    def run_start(self, run: RunInfo) -> None:
        config, data = run.config, run.data
        self.total, self.finished, self.kind = config.trials, run.finished, run.kind
        self._run_started = time.monotonic()
        self.objective, self.epochs = config.objective, config.epochs
        sizes = " / ".join(f"{n} {split}" for split, n in data.sizes.items())
        self.console.print(
            f"[bold]study[/] {config.study} in {redact(config.storage)}: "
            f"{run.finished} of {config.trials} trials finished"
        )
        self.console.print(
            f"[bold]model[/] {config.model}   [bold]data[/] {data.name} "
            f"({sizes}; {len(data.label_names)} classes, {data.average} {config.objective})"
        )
        for note in data.notes:
            self.console.print(f"[yellow]note[/] {note}")
        if run.finished >= config.trials and config.seeds == 1:  # a race may still have seed runs to do
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
        position = f" ({min(self.finished + 1, self.total)}/{self.total})"
        if _repeats(trial) and self.kind == "search":  # a race's seed run: the search's count goes on
            position = ""
        self.console.print(f"[bold cyan]{_name(trial)}[/]{position}  {format_params(params)}{recipe}")

    def note(self, text: str) -> None:
        self.console.print(f"[magenta]{text}[/]", markup=True, highlight=False)

    def step(self, trial: optuna.Trial, step: int, steps_in_epoch: int, *, epoch: int, samples: int) -> None:
        if not self.console.is_terminal:
            return
        if self._bars is None:
            self._bars = _Bars(self.console)
        now = time.monotonic()
        seconds = max(now - self._epoch_started.get(trial.number, now), 1e-9)
        left = (steps_in_epoch - step) * seconds / step
        self._bars.epoch(
            f"trial {trial.number} epoch {epoch}/{self.epochs}",
            step,
            steps_in_epoch,
            f"{samples / seconds:.1f} samples/s  ETA {human_seconds(left)}",
        )
        self._show_overall(self._bars)
        self._bars.refresh(force=step in (1, steps_in_epoch))

    def _show_overall(self, bars: _Bars) -> None:
        elapsed = f"elapsed {human_seconds(time.monotonic() - self._run_started)}"
        bars.overall(f"{self.finished}/{self.total} trials finished", elapsed, self.finished, self.total)

    def close(self) -> None:
        """Take the progress bars off the terminal; the printed lines stay."""
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

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
        seed_run = _repeats(frozen)
        if frozen.state in schema.FINISHED and not (seed_run and self.kind == "search"):
            self.finished += 1
        took = f"[dim]{human_seconds(frozen.duration.total_seconds())}[/]" if frozen.duration is not None else ""
        best = schema.best_trial(trial.study.get_trials(deepcopy=False))
        best_text = (
            f"best: trial {best.number}, {self.objective} {best.value:.4f}"
            if best is not None
            else "no complete trial yet"
        )
        head = f"[bold]{_name(frozen)}[/]"
        if seed_run:  # it ranks nothing alone: the race or the confirmation judges its mean
            best_text = ""
        if frozen.state == TrialState.COMPLETE:
            kept = "  [green]★ new best, model kept[/]" if schema.kept_model(frozen) else f"   {best_text}"
            if seed_run:
                kept = (
                    f"  [green]model kept for trial {schema.confirms(frozen)}[/]" if schema.kept_model(frozen) else ""
                )
            self.console.print(
                f"{head} complete: {self.objective} {frozen.value:.4f}, {_shipped(frozen)}  {took}{kept}"
            )
            if schema.stopped_early(frozen):
                self.console.print(f"  [cyan]{schema.stopped_early(frozen)}[/]")
        elif frozen.state == TrialState.PRUNED:
            self.console.print(f"{head} [yellow]{_pruned(frozen)}[/]  {took}   {best_text}")
        else:
            self.console.print(f"{head} [red]failed: {schema.fail_reason(frozen)}[/]  {took}   {best_text}")
        if self._bars is not None:
            self._show_overall(self._bars)
            self._bars.between_trials()


class _Bars:
    """The terminal's live display: the running epoch's bar over the search's overall line.

    Redrawn when :meth:`refresh` is called, at most every :data:`REFRESH_SECONDS`, rather than
    by a thread of its own: the trainer's steps set the pace.
    """

    REFRESH_SECONDS = 0.1

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=True,
            auto_refresh=False,
        )
        self.progress.start()
        self._epoch = self.progress.add_task("", total=1, info="", visible=False)
        self._overall = self.progress.add_task("", total=1, info="", visible=False)
        self._last = 0.0

    def epoch(self, description: str, step: int, steps: int, info: str) -> None:
        self.progress.update(self._epoch, description=description, completed=step, total=steps, info=info, visible=True)

    def overall(self, description: str, info: str, done: int, total: int) -> None:
        self.progress.update(
            self._overall, description=description, completed=done, total=max(total, 1), info=info, visible=True
        )

    def between_trials(self) -> None:
        """Hide the finished trial's epoch bar until the next trial's first step."""
        self.progress.update(self._epoch, visible=False)
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.REFRESH_SECONDS:
            self.progress.refresh()
            self._last = now

    def stop(self) -> None:
        self.progress.stop()


def _repeats(trial: Any) -> bool:
    return schema.confirms(trial) is not None


def _name(trial: Any) -> str:
    """``trial 7``, or for a seed run ``seed run 3 (trial 7, seed 44)``."""
    if not _repeats(trial):
        return f"trial {trial.number}"
    return f"seed run {trial.number} (trial {schema.confirms(trial)}, seed {schema.run_seed(trial)})"


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
