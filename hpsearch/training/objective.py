"""One trial: a Trainer fine-tune of the recipe with the trial's parameters.

Every epoch the Trainer evaluates on the validation split; :class:`EpochCallback` stores
the epoch's row in the trial's ``epochs`` user attribute, reports the objective to Optuna
at the epoch number, and stops training when the pruner or early stopping says so. A
finished trial's value is the objective of the epoch it ships (``checkpoint = "best"``, the
default, or ``"last"``; a trial stopped early ships its best); if that beats the kept model,
the model is saved to ``studies/<study>/best-model/``.
"""

from __future__ import annotations

import copy
import gc
import math
import os
import socket
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from transformers import TrainerCallback

from hpsearch.search.bestmodel import BestModelStore
from hpsearch.config import SearchConfig
from hpsearch.errors import first_line
from hpsearch.data import Task
from hpsearch.training.metrics import METRICS, RANKING_METRIC, RANKING_METRIC_SE, compute_metrics_for, constant_prediction
from hpsearch.training.modeling import glibc
from hpsearch.search.pruners import RULE_NAMES, AlignedMedianPruner
from hpsearch.training.space import suggest, training_arguments_kwargs, training_values
from hpsearch.views.trials import EPOCHS_ATTR, STOPPED_EARLY_ATTR, count



class TrialFailed(Exception):
    """A trial that could not finish (out of memory, NaN loss, an error in training).

    The reason is stored on the trial as the user attribute ``fail_reason``; the study
    goes on with the next trial.
    """


class NonFiniteLoss(Exception):
    pass


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Resources:
    """What every trial of a run shares, made once: data, tokens, tokenizer, base model."""

    task: Task
    tokenized: dict[str, Any]
    tokenizer: Any
    base_model: Any


class Objective:
    """The callable Optuna optimises: one fine-tune per call, returning the shipped score."""

    def __init__(
        self,
        config: SearchConfig,
        resources: Resources,
        best: BestModelStore,
        *,
        reporter: Any = None,
        callbacks: Sequence[TrainerCallback] = (),
        scratch: Path | None = None,
    ) -> None:
        self.config = config
        self.resources = resources
        self.best = best
        self.reporter = reporter
        self.callbacks = list(callbacks)
        self.scratch = scratch

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.config.space)
        values = training_values(self.config.recipe, params)
        trial.set_user_attr("worker", worker_id())
        trial.set_user_attr("training_args", values)
        if self.reporter is not None:
            self.reporter.trial_start(trial.number, params)
        task = self.resources.task
        epoch_cb = EpochCallback(trial, self.config, self.reporter, average=task.average, n_labels=task.num_labels)
        trainer = None
        try:
            with tempfile.TemporaryDirectory(prefix=f"trial-{trial.number}-", dir=self.scratch) as out:
                trainer = self._trainer(values, out, [epoch_cb, *self.callbacks])
                _train(trial, trainer)
                if epoch_cb.stopped_reason is not None:
                    trial.set_user_attr(STOPPED_EARLY_ATTR, epoch_cb.stopped_reason)
                if epoch_cb.pruned_reason is not None:
                    trial.set_user_attr("pruned_reason", epoch_cb.pruned_reason)
                    raise optuna.TrialPruned(epoch_cb.pruned_reason)
                return self._finish(trial, trainer, epoch_cb)
        finally:
            del trainer
            _release_memory()

    def _trainer(self, values: dict[str, Any], output_dir: str, callbacks: list[TrainerCallback]) -> Any:
        import torch
        from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

        kwargs = training_arguments_kwargs(values)
        kwargs["per_device_eval_batch_size"] = self.config.eval_batch_size
        cuda = torch.cuda.is_available()
        bf16 = cuda and torch.cuda.is_bf16_supported()
        args = TrainingArguments(
            output_dir=output_dir,
            **kwargs,
            eval_strategy="epoch",
            logging_strategy="epoch",
            save_strategy="no",  # only the best model is written, by BestModelStore
            report_to="none",
            disable_tqdm=True,
            log_level="error",
            logging_nan_inf_filter=False,  # a NaN loss must show, so the trial fails early
            bf16=bf16,
            fp16=cuda and not bf16,
            tf32=True if cuda and torch.cuda.get_device_capability()[0] >= 8 else None,
            dataloader_pin_memory=cuda,
        )
        model = copy.deepcopy(self.resources.base_model)
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=self.resources.tokenized["train"],
            eval_dataset=self.resources.tokenized["validation"],
            data_collator=DataCollatorWithPadding(self.resources.tokenizer),
            processing_class=self.resources.tokenizer,
            compute_metrics=compute_metrics_for(self.resources.task.average),
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # progress is ours; the Trainer's log dicts are noise
        return trainer

    def _finish(self, trial: optuna.Trial, trainer: Any, epoch_cb: EpochCallback) -> float:
        rows = epoch_cb.rows
        if not rows:
            raise TrialFailed("training ended before the first evaluation")
        objective = self.config.objective
        # A trial stopped early ends on an epoch that set no new best: it ships its best
        # epoch, as the Trainer pairs EarlyStoppingCallback with load_best_model_at_end.
        if self.config.checkpoint == "best" or epoch_cb.stopped_reason is not None:
            shipped = max(rows, key=lambda r: r[objective])  # the earliest of equal scores
            if epoch_cb.best_state is not None and shipped is not rows[-1]:
                trainer.model.load_state_dict(epoch_cb.best_state)
        else:
            shipped = rows[-1]
        value = float(shipped[objective])
        trial.set_user_attr("shipped_epoch", shipped["epoch"])
        trial.set_user_attr("checkpoint_rule", self.config.checkpoint)

        def save(folder: Path) -> None:
            trainer.save_model(str(folder))
            if "test" in self.resources.tokenized:
                metrics = trainer.evaluate(self.resources.tokenized["test"], metric_key_prefix="test")
                trial.set_user_attr("test_metrics", _prefixed(metrics, "test"))

        kept = self.best.offer(trial.number, value, save, extra={"epoch": shipped["epoch"], "objective": objective})
        if kept:
            trial.set_user_attr("kept_model", True)
        return value


class EpochCallback(TrainerCallback):
    """Records each epoch's row, reports it to Optuna, prunes and stops early; fails on a NaN loss.

    ``average`` and ``n_labels`` describe the task, so that early stopping can tell an
    epoch whose model still calls every example one class (which does not count against
    the patience: a slow starter is not a plateau).
    """

    def __init__(self, trial: optuna.Trial, config: SearchConfig, reporter: Any = None, *, average: str = "binary", n_labels: int = 2) -> None:
        self.trial = trial
        self.objective = config.objective
        self.keep_best = config.checkpoint == "best"
        self.pruner_name = config.pruner.name
        self.patience = config.early_stopping_patience
        self.average, self.n_labels = average, n_labels
        self.reporter = reporter
        self.rows: list[dict[str, Any]] = []
        self.best_state: dict[str, Any] | None = None
        self.pruned_reason: str | None = None
        self.stopped_reason: str | None = None
        self._stalled = 0  # epochs in a row, since the model began to learn, without a new best
        self._learning = False
        self._train_loss: float | None = None
        self._lr_sum = 0.0

    def on_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        # Called after the optimiser's step and before the scheduler's: this is the rate
        # the update was made with. The sum is how far the trial's updates could move
        # it, what align = "lr_sum" compares trials by.
        if optimizer is not None:
            self._lr_sum += float(optimizer.param_groups[0]["lr"])

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self._train_loss = float(logs["loss"])
            if not math.isfinite(self._train_loss):
                raise NonFiniteLoss(f"training loss became {self._train_loss} at epoch {state.epoch:.0f}")

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not metrics or "eval_loss" not in metrics:
            return  # a test-split evaluation of the kept model, not an epoch
        epoch = int(round(state.epoch))
        row = {"epoch": epoch, "step": state.global_step, "lr_sum": self._lr_sum, "train_loss": self._train_loss, "eval_loss": float(metrics["eval_loss"])}
        row.update({m: float(metrics[f"eval_{m}"]) for m in METRICS})
        for key in (RANKING_METRIC, RANKING_METRIC_SE):
            row[key] = float(metrics.get(f"eval_{key}", math.nan))
        if not math.isfinite(row["eval_loss"]):
            raise NonFiniteLoss(f"validation loss became {row['eval_loss']} at epoch {epoch}")
        best_before = max((r[self.objective] for r in self.rows), default=-math.inf)
        self.rows.append(row)
        self.trial.set_user_attr(EPOCHS_ATTR, self.rows)
        if row[self.objective] > best_before and self._may_ship(epoch, args.num_train_epochs) and kwargs.get("model") is not None:
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in kwargs["model"].state_dict().items()}
        self.trial.report(row[self.objective], epoch)
        if epoch < args.num_train_epochs and self.trial.should_prune():
            self.pruned_reason = self._why_pruned(epoch, row[self.objective])
            control.should_training_stop = True
        elif epoch < args.num_train_epochs and self._plateaued(row, best_before):
            self.stopped_reason = (
                f"stopped early after epoch {epoch}: validation {self.objective} had not beaten "
                f"{best_before:.4f} for {count(self.patience, 'epoch')}"
            )
            control.should_training_stop = True
        if self.reporter is not None:
            self.reporter.epoch(self.trial.number, row, pruned=self.pruned_reason is not None, stopped=self.stopped_reason)

    def _may_ship(self, epoch: int, planned: float) -> bool:
        """Whether a new best at this epoch could be the shipped one while later epochs exist.

        Under ``checkpoint = "best"`` always; otherwise only if early stopping could still
        stop the trial after it (``patience`` epochs later, before the last epoch), so the
        copy of the weights is not paid where it can never be used.
        """
        return self.keep_best or bool(self.patience and epoch + self.patience < planned)

    def _plateaued(self, row: dict[str, Any], best_before: float) -> bool:
        """Count the epoch against the patience; True once the patience is spent."""
        if not self.patience:
            return False
        if row[self.objective] > best_before:
            self._stalled = 0
        elif self._learning:
            self._stalled += 1
        self._learning = self._learning or constant_prediction(row, self.average, self.n_labels) is None
        return self._stalled >= self.patience

    def _why_pruned(self, epoch: int, value: float) -> str:
        pruner = self.trial.study.pruner
        # Named as the card names it: an aligned rule by what it compares with.
        rule = pruner.reference if isinstance(pruner, AlignedMedianPruner) else self.pruner_name
        label = RULE_NAMES.get(rule, rule)
        text = f"pruned after epoch {epoch} by the {label} pruner: validation {self.objective} {value:.4f}"
        if isinstance(pruner, AlignedMedianPruner):
            verdict = pruner.judge(self.trial.study, self.rows)
            if verdict is not None:
                where = {
                    "updates": f"within {self.rows[-1]['step']} updates",
                    "lr_sum": f"within a summed learning rate of {self.rows[-1]['lr_sum']:.3g}",
                }.get(pruner.align, "at that epoch")
                margin = f" by more than {verdict.margin:.4f} ({count(pruner.margin_se, 'standard error')})" if pruner.margin_se else ""
                text += f"; best {pruner.metric} {verdict.best:.4f} below the {pruner.reference} {verdict.against:.4f}{margin} of {count(verdict.n, 'complete trial')} {where}"
            return text
        if self.pruner_name == "median":
            done = self.trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            at_epoch = [t.intermediate_values[epoch] for t in done if epoch in t.intermediate_values]
            if at_epoch:
                text += f" below the median {statistics.median(at_epoch):.4f} of {count(len(at_epoch), 'complete trial')} at that epoch"
        return text


def _train(trial: optuna.Trial, trainer: Any) -> None:
    """Train, turning every way a trial can break into a stored reason."""
    import torch

    try:
        trainer.train()
    except KeyboardInterrupt:
        trial.set_user_attr("fail_reason", "interrupted")
        raise
    except NonFiniteLoss as e:
        _fail(trial, f"non-finite loss: {e}")
    except (MemoryError, torch.OutOfMemoryError) as e:
        _fail(trial, f"out of memory: {first_line(e)}")
    except RuntimeError as e:
        text = str(e).lower()
        oom = "out of memory" in text or "can't allocate memory" in text
        _fail(trial, f"out of memory: {first_line(e)}" if oom else f"{type(e).__name__}: {first_line(e)}")
    except (optuna.TrialPruned, TrialFailed):
        raise
    except Exception as e:
        _fail(trial, f"{type(e).__name__}: {first_line(e)}")


def _fail(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr("fail_reason", reason)
    raise TrialFailed(reason)



def _prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    out = {k[len(prefix) + 1:]: float(v) for k, v in metrics.items() if k.startswith(prefix + "_")}
    return {k: v for k, v in out.items() if k in (*METRICS, "loss")}


def _release_memory() -> None:
    """Free the trial's model and optimiser, and hand the freed memory back to the system.

    glibc keeps freed blocks in its arenas: without ``malloc_trim`` the resident size of a
    run grew by 20-35 MiB a trial with MiniLM though nothing was kept alive (see
    benchmarks/RESULTS.md, "Memory across trials").
    """
    import torch

    gc.collect()
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

