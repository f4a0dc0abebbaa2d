"""What a trial tells the outside while it trains: the Trainer's trackers, and its steps.

``report_to`` goes to the Trainer as it is, so every tracker the Trainer knows works; each
trial is its own run, named ``<study>/trial-<N>`` (TrainingArguments ``run_name``), with the
trial's TrainingArguments as its hyperparameters and every epoch's evaluation as its
metrics. TensorBoard's runs go to ``<workdir>/<study>/runs/trial-<N>/`` (the Trainer would
put them in the trial's temporary output folder, which is deleted), with the searched
parameters also in TensorBoard's HParams view. Other trackers keep their own settings
(``WANDB_PROJECT``, ``MLFLOW_TRACKING_URI``, ...).

:class:`StepCallback` turns every optimiser update into the listeners' ``step`` event, which
the terminal progress bar draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from transformers import TrainerCallback

from hpsearch.errors import ConfigError
from hpsearch.events import RunListener


def check_trackers(report_to: Sequence[str]) -> None:
    """Refuse, before any training, a tracker the Trainer does not know or cannot import.

    Raises:
        ConfigError: An unknown name, or a known tracker whose package is not installed.
    """
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    names = [n for n in report_to if n not in ("none", "all")]
    unknown = [n for n in names if n not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise ConfigError(
            f"report_to: expected trackers the Trainer knows ({', '.join(INTEGRATION_TO_CALLBACK)}), got {unknown[0]!r}"
        )
    available = get_available_reporting_integrations()
    # The Trainer cannot tell whether these two are installed (azure_ml hides behind mlflow).
    missing = [n for n in names if n not in available and n not in ("azure_ml", "flyte")]
    if missing:
        raise ConfigError(
            f"report_to: {missing[0]} is not installed; "
            f"install its package (pip install {missing[0]}) or drop it from report_to"
        )


def runs_to(trainer: Any, folder: Path, *, params: dict[str, Any]) -> None:
    """Point the trainer's TensorBoard callback, if it has one, at ``folder``, and log the
    trial's searched ``params`` to TensorBoard's HParams view when training starts."""
    from transformers.integrations import TensorBoardCallback

    board = next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TensorBoardCallback)), None)
    if board is None:
        return
    board.logging_dir = str(folder)
    trainer.add_callback(_HParams(board, params))


class _HParams(TrainerCallback):
    """The searched parameters as TensorBoard hyperparameters, in the trial's own run folder."""

    def __init__(self, board: Any, params: dict[str, Any]) -> None:
        self.board = board
        self.params = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in params.items()}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        writer = getattr(self.board, "tb_writer", None)
        if writer is not None and self.params:
            writer.add_hparams(self.params, {}, run_name=".")


class StepCallback(TrainerCallback):
    """Calls the listeners' ``step`` after every optimiser update."""

    def __init__(self, trial: optuna.Trial, listener: RunListener) -> None:
        self.trial = trial
        self.listener = listener

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # max_steps is the updates of one epoch times the (whole) epochs to train.
        per_epoch = max(1, math.ceil(state.max_steps / max(1, math.ceil(args.num_train_epochs))))
        step = (state.global_step - 1) % per_epoch + 1
        samples = step * args.train_batch_size * args.gradient_accumulation_steps
        loader = kwargs.get("train_dataloader")
        if loader is not None and hasattr(loader, "dataset"):
            samples = min(samples, len(loader.dataset))
        self.listener.step(self.trial, step, per_epoch, epoch=(state.global_step - 1) // per_epoch + 1, samples=samples)
