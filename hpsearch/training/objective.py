"""One trial: a Trainer fine-tune of the recipe with the trial's parameters.

Every epoch the Trainer evaluates on the validation split; :class:`EpochCallback` stores
the epoch's row (scores and confusion matrix) on the trial, reports the objective to Optuna
at the epoch number, and stops training when the pruner or early stopping says so.
:meth:`Objective.run` returns the trial's :class:`Outcome` for the loop to tell Optuna: a
complete trial's value is the objective of the epoch it ships (its best by default, or its
last), and a model that beats the kept one goes to ``studies/<study>/best-model/``.
"""

from __future__ import annotations

import copy
import gc
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from transformers import TrainerCallback

from hpsearch import schema
from hpsearch.analysis.scores import predicted_class
from hpsearch.bestmodel import BestModelStore, Marker
from hpsearch.config import SearchConfig
from hpsearch.data import Task
from hpsearch.errors import HpsearchError, first_line
from hpsearch.events import RunListener
from hpsearch.formatting import count
from hpsearch.hooks import Hooks
from hpsearch.layout import StudyLayout
from hpsearch.schema import METRICS, EpochRow
from hpsearch.training.adapters import name_base_model, with_adapter
from hpsearch.training.cost import CostMeter, store_cost
from hpsearch.training.metrics import MetricsComputer
from hpsearch.training.modeling import device_name, glibc, resolve_precision
from hpsearch.training.space import split_values, suggest, training_arguments_kwargs, training_values
from hpsearch.training.trackers import StepCallback, runs_to


class NonFiniteLoss(Exception):
    pass


@dataclass(frozen=True)
class Outcome:
    """What to tell Optuna about a trial: its state, and its value when complete."""

    state: TrialState
    value: float | None = None
    reason: str | None = None  # why it was pruned or failed


@dataclass
class Resources:
    """What every trial of a run shares, made once: data, tokens, tokenizer, base model."""

    task: Task
    tokenized: dict[str, Any]
    tokenizer: Any
    base_model: Any
    metrics: list[Any] = field(default_factory=list)  # evaluate_metrics.AddedMetric, scored every epoch


class Objective:
    """One fine-tune per call of :meth:`run`."""

    def __init__(
        self,
        config: SearchConfig,
        resources: Resources,
        best: BestModelStore | None,
        *,
        listener: RunListener | None = None,
        hooks: Hooks | None = None,
        test_every_run: bool = False,
    ) -> None:
        self.config = config
        # Confirmation runs compare their test scores over seeds, so each run is scored on
        # the test split, not only the one whose model is kept.
        self.test_every_run = test_every_run
        self.resources = resources
        self.best = best
        self.listener = listener or RunListener()
        self.hooks = hooks or Hooks()
        self.precision = resolve_precision(config.precision)

    def run(self, trial: optuna.Trial) -> Outcome:
        """Train ``trial``; every way it can break becomes a failed :class:`Outcome`.

        Raises:
            KeyboardInterrupt: Ctrl-C or SIGTERM; the trial's reason is already stored.
        """
        params = suggest(trial, self.config.space)
        values = training_values(self.config.recipe, params)
        self.listener.trial_start(trial, params)
        epoch_cb = EpochCallback(
            trial, self.config, self.listener, n_labels=self.resources.task.num_labels, added=self.resources.metrics
        )
        trainer = None
        meter = CostMeter().start()  # failed, pruned and interrupted trials are measured too
        try:
            try:
                model = self._model(values)
            except Exception as e:  # the user's model_init: the trial's failure, not the search's
                reason = f"model_init raised {type(e).__name__}: {first_line(e)}"
                schema.record_failure(trial, reason)
                return Outcome(TrialState.FAIL, reason=reason)
            model, parameters = with_adapter(model, self.config.peft, values)  # [peft]: LoRA and the head train
            schema.record_parameters(trial, **parameters)
            with tempfile.TemporaryDirectory(prefix=f"trial-{trial.number}-") as out:
                trainer = self._trainer(trial, model, values, out, epoch_cb)
                del model
                schema.record_training_args(
                    trial,
                    {
                        **values,
                        "optim": str(trainer.args.optim.value),
                        "precision": self.precision.name,
                        "tf32": self.precision.tf32,
                    },
                )
                _reset_peak_memory()
                failure = _train(trainer)
                schema.record_device(trial, name=device_name(), peak_memory_mib=_peak_memory_mib())
                if failure is not None:
                    schema.record_failure(trial, failure)
                    return Outcome(TrialState.FAIL, reason=failure)
                if epoch_cb.stopped_reason is not None:
                    schema.record_stopped_early(trial, epoch_cb.stopped_reason)
                if epoch_cb.pruned_reason is not None:
                    schema.record_pruned(trial, epoch_cb.pruned_reason)
                    return Outcome(TrialState.PRUNED, reason=epoch_cb.pruned_reason)
                return self._finish(trial, trainer, epoch_cb)
        except KeyboardInterrupt:
            schema.record_failure(trial, schema.INTERRUPTED)
            raise
        finally:
            del trainer
            _release_memory()
            store_cost(trial, meter.stop())

    def _model(self, values: dict[str, Any]) -> Any:
        """The trial's fresh copy of the base model, through the ``model_init`` hook where one is given."""
        model = copy.deepcopy(self.resources.base_model)
        return model if self.hooks.model_init is None else self.hooks.model_init(dict(values), model)

    def _trainer(
        self, trial: optuna.Trial, model: Any, values: dict[str, Any], output_dir: str, epoch_cb: EpochCallback
    ) -> Any:
        import torch
        from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

        cuda = torch.cuda.is_available()
        training, _ = split_values(values)  # your own parameters went to model_init only
        args = TrainingArguments(
            output_dir=output_dir,
            **training_arguments_kwargs(training),
            eval_strategy="epoch",
            logging_strategy="epoch",
            save_strategy="no",  # only the best model is written, by BestModelStore
            report_to=list(self.config.report_to),
            run_name=f"{self.config.study}/trial-{trial.number}",
            disable_tqdm=True,
            log_level="error",
            logging_nan_inf_filter=False,  # a NaN loss must show, so the trial fails early
            **self.precision.training_arguments(),
            dataloader_pin_memory=cuda,
        )
        trainer_class = self.hooks.trainer_class or Trainer
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=self.resources.tokenized["train"],
            eval_dataset=self.resources.tokenized["validation"],
            data_collator=self.hooks.data_collator or DataCollatorWithPadding(self.resources.tokenizer),
            processing_class=self.resources.tokenizer,
            compute_metrics=epoch_cb.metrics,
            callbacks=[epoch_cb, StepCallback(trial, self.listener), *self.hooks.callbacks],
        )
        runs_to(trainer, StudyLayout.of(self.config).runs / f"trial-{trial.number}", params=trial.params)
        trainer.remove_callback(PrinterCallback)  # progress is ours; the Trainer's log dicts are noise
        return trainer

    def _finish(self, trial: optuna.Trial, trainer: Any, epoch_cb: EpochCallback) -> Outcome:
        rows = epoch_cb.rows
        if not rows:
            reason = "training ended before the first evaluation"
            schema.record_failure(trial, reason)
            return Outcome(TrialState.FAIL, reason=reason)
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
        schema.record_shipped(trial, epoch=shipped["epoch"], rule=self.config.checkpoint)

        def score_test() -> None:
            if "test" in self.resources.tokenized:
                metrics = trainer.evaluate(self.resources.tokenized["test"], metric_key_prefix="test")
                schema.record_test_metrics(trial, _prefixed(metrics, "test", added=epoch_cb.added_keys))

        def save(folder: Path) -> None:
            trainer.save_model(str(folder))
            if self.config.peft is not None:  # the adapter names the study's base model with this task's head
                base = StudyLayout.of(self.config).base_model
                name_base_model(folder, self.resources.base_model, self.resources.tokenizer, base)
            if not self.test_every_run:
                score_test()

        if self.test_every_run:
            score_test()
        if self.best is None:  # a seed run whose weights are not kept
            return Outcome(TrialState.COMPLETE, value)
        try:
            kept = self.best.offer(
                Marker(trial=trial.number, value=value, epoch=shipped["epoch"], objective=objective), save
            )
        except OSError as e:
            # A full disk, say: the kept model stays as it was, and a trial whose better model
            # could not be kept must not rank as the best.
            reason = f"its model could not be saved: {first_line(e)}"
            schema.record_failure(trial, reason)
            return Outcome(TrialState.FAIL, reason=reason)
        if kept:
            schema.record_kept(trial)
        return Outcome(TrialState.COMPLETE, value)


class EpochCallback(TrainerCallback):
    """Records each epoch's row, reports it to Optuna, prunes and stops early; fails on a NaN loss."""

    def __init__(
        self,
        trial: optuna.Trial,
        config: SearchConfig,
        listener: RunListener,
        *,
        n_labels: int,
        added: Sequence[Any] = (),
    ) -> None:
        self.trial = trial
        self.objective = config.objective
        self.keep_best = config.checkpoint == "best"
        self.pruner_name = config.pruner.name
        self.patience = config.early_stopping_patience
        self.listener = listener
        self.metrics = MetricsComputer(n_labels, added)
        self.added_keys: list[str] = []  # what the added metrics stored, known after the first epoch
        self.rows: list[EpochRow] = []
        self.best_state: dict[str, Any] | None = None
        self.pruned_reason: str | None = None
        self.stopped_reason: str | None = None
        self._stalled = 0  # epochs in a row, since the model began to learn, without a new best
        self._learning = False
        self._train_loss: float | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self._train_loss = float(logs["loss"])
            if not math.isfinite(self._train_loss):
                raise NonFiniteLoss(f"training loss became {self._train_loss} at epoch {state.epoch:.0f}")

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        if not metrics or "eval_loss" not in metrics:
            return  # a test-split evaluation of the kept model, not an epoch
        epoch = int(round(state.epoch))
        if not math.isfinite(metrics["eval_loss"]):
            raise NonFiniteLoss(f"validation loss became {metrics['eval_loss']} at epoch {epoch}")
        scores = {k[len("eval_") :]: v for k, v in metrics.items() if k.startswith("eval_")}
        self.added_keys = self.added_keys or list(self.metrics.added_keys)
        row = schema.make_row(
            epoch=epoch,
            step=state.global_step,
            train_loss=self._train_loss,
            eval_loss=metrics["eval_loss"],
            scores=scores,
            confusion=self.metrics.last_confusion,
            added=self.added_keys,
        )
        best_before = max((r[self.objective] for r in self.rows), default=-math.inf)
        self.rows.append(row)
        schema.record_rows(self.trial, self.rows)
        if (
            row[self.objective] > best_before
            and self._may_ship(epoch, args.num_train_epochs)
            and kwargs.get("model") is not None
        ):
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in kwargs["model"].state_dict().items()}
        self.trial.report(row[self.objective], epoch)
        if epoch < args.num_train_epochs and self.trial.should_prune():
            self.pruned_reason = self._why_pruned(epoch, row[self.objective])
            control.should_training_stop = True
        elif epoch < args.num_train_epochs and self._plateaued(row, best_before):
            self.stopped_reason = (
                f"stopped early after epoch {epoch}: {self.objective} had not beaten {best_before:.4f} "
                f"for {count(self.patience, 'epoch')}"
            )
            control.should_training_stop = True
        self.listener.epoch(self.trial, row, pruned=self.pruned_reason, stopped=self.stopped_reason)

    def _may_ship(self, epoch: int, planned: float) -> bool:
        """Whether a new best at this epoch could be the shipped one while later epochs exist.

        Under ``checkpoint = "best"`` always; otherwise only if early stopping could still
        stop the trial after it, so the copy of the weights is not paid where it is never used.
        """
        return self.keep_best or bool(self.patience and epoch + self.patience < planned)

    def _plateaued(self, row: EpochRow, best_before: float) -> bool:
        """Count the epoch against the patience; True once the patience is spent.

        Epochs whose model still calls every validation example one class do not count: a
        slow starter is not a plateau.
        """
        if not self.patience:
            return False
        if row[self.objective] > best_before:
            self._stalled = 0
        elif self._learning:
            self._stalled += 1
        self._learning = self._learning or predicted_class(row["confusion"]) is None
        return self._stalled >= self.patience

    def _why_pruned(self, epoch: int, value: float) -> str:
        """The criterion first: ``pruned at epoch 1: roc_auc 0.7451 < 0.8852 - 0.0603 (trial 0 at <=38 updates)``.

        A pruner that can say why it pruned has a method ``explain(study, rows, objective)``
        returning the reason (``hpsearch.search.pruners``); any other is named by its setting.
        """
        study = self.trial.study
        explain = getattr(study.pruner, "explain", None)
        reason = explain(study, self.rows, self.objective) if explain is not None else None
        if reason is None:
            reason = f"{self.objective} {value:.4f} (by the {self.pruner_name} pruner)"
        return f"pruned at epoch {epoch}: {reason}"


def _train(trainer: Any) -> str | None:
    """Train; the reason it broke (out of memory, a NaN loss, an error), or None."""
    import torch

    try:
        trainer.train()
    except NonFiniteLoss as e:
        return f"non-finite loss: {e}"
    except (MemoryError, torch.OutOfMemoryError) as e:
        return f"out of memory: {first_line(e)}"
    except (optuna.exceptions.UpdateFinishedTrialError, HpsearchError):
        # Another worker failed this trial while this one was stopped, or the storage is
        # gone: neither is the trial's failure to record.
        raise
    except RuntimeError as e:
        text = str(e).lower()
        oom = "out of memory" in text or "can't allocate memory" in text
        return f"out of memory: {first_line(e)}" if oom else f"{type(e).__name__}: {first_line(e)}"
    except Exception as e:
        return f"{type(e).__name__}: {first_line(e)}"
    return None


def _prefixed(metrics: dict[str, float], prefix: str, *, added: Sequence[str] = ()) -> dict[str, float]:
    out = {k[len(prefix) + 1 :]: float(v) for k, v in metrics.items() if k.startswith(prefix + "_")}
    return {k: v for k, v in out.items() if k in (*METRICS, "loss", *added)}


def _reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_mib() -> float | None:
    """The trial's peak GPU memory (``torch.cuda.max_memory_allocated``); None on a CPU."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def _release_memory() -> None:
    """Free the trial's model and optimiser, and hand the freed memory back to the system.

    glibc keeps freed blocks in its arenas: without ``malloc_trim`` a run's resident size
    grows with every trial though nothing is kept alive (docs/performance.md).
    """
    import torch

    gc.collect()
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
