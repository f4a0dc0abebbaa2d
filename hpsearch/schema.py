"""What hpsearch stores, and the only module that reads or writes it.

A study made by ``hpsearch run`` holds:

- the study user attribute :data:`STUDY_KEY` (``"hpsearch"``): :class:`StudySettings`, the
  resolved configuration, the data's facts (label names, split sizes, class counts), the
  base model, the framework versions and the :data:`SCHEMA_VERSION` they were written in;
- on every trial, the user attributes named below, among them :data:`EPOCHS` (``"epochs"``),
  one :class:`EpochRow` per evaluated epoch, with the epoch's confusion matrix as integers;
- in ``studies/<study>/best-model/hpsearch.json``, the :class:`Marker` of the kept model.

Every other module goes through the constants, records and readers here, so that a key is
spelled once. A study written in another schema version is refused with one line
(:class:`~hpsearch.errors.StorageError`): nothing is released yet, so there is no migration.
See ``docs/schema.md`` for the full layout.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import StorageError

SCHEMA_VERSION = 3

STUDY_KEY = "hpsearch"  # study user attribute: StudySettings

# Trial user attributes.
EPOCHS = "epochs"  # list[EpochRow], one per evaluated epoch
RECIPE = "recipe"  # True on the recipe trial (set when it is enqueued)
WORKER = "worker"  # "host:pid" of the process that ran the trial
HEARTBEAT = "heartbeat"  # Unix time of the running trial's last sign of life
TRAINING_ARGS = "training_args"  # the TrainingArguments values the trial trained with
SHIPPED_EPOCH = "shipped_epoch"  # the epoch whose model and score the trial ships
CHECKPOINT_RULE = "checkpoint_rule"  # "best" or "last": how that epoch was chosen
STOPPED_EARLY = "stopped_early"  # why a complete trial trained fewer epochs than planned
PRUNED_REASON = "pruned_reason"  # why the pruner stopped it
FAIL_REASON = "fail_reason"  # why it failed
KEPT_MODEL = "kept_model"  # True when its model went to best-model/
TEST_METRICS = "test_metrics"  # the kept model's scores on the test split
DEVICE = "device"  # what trained it: {"name": ..., "peak_memory_mib": ... (CUDA only, else null)}
PARAMETERS = "parameters"  # the model's parameter counts: {"trainable": n, "total": m}
COST = "cost"  # what it cost: {"wall_seconds", "device_seconds", "energy_kwh", "co2_g", "tracker", "hardware"}
# On the runs of `hpsearch confirm`, in the sibling study "<study>.confirm" (CONFIRM_SUFFIX):
CONFIRMS = "confirms"  # the search trial whose configuration the run trains again
SEED = "run_seed"  # the seed the run trains with

# Every trial attribute hpsearch writes.
TRIAL_KEYS = (EPOCHS, RECIPE, WORKER, HEARTBEAT, TRAINING_ARGS, SHIPPED_EPOCH, CHECKPOINT_RULE, STOPPED_EARLY)
TRIAL_KEYS += (PRUNED_REASON, FAIL_REASON, KEPT_MODEL, TEST_METRICS, DEVICE, COST, PARAMETERS, CONFIRMS, SEED)

CONFIRM_SUFFIX = ".confirm"  # the confirmation runs of study S live in the study "S.confirm"
CONFIRM_KEY = "hpsearch_confirm"  # that study's user attribute: ConfirmPlan
RACE_KEY = "hpsearch_race"  # and, after `run --seeds S`, the race: hpsearch.analysis.race.Race.to_dict()

INTERRUPTED = "interrupted"  # the fail reason of a trial stopped by Ctrl-C or SIGTERM

# The scores of every epoch row, in the card's order, with their labels.
METRICS = ("f1", "accuracy", "precision", "recall")
METRIC_LABELS = {"f1": "F1", "accuracy": "Accuracy", "precision": "Precision", "recall": "Recall"}
# Threshold-free, so it moves while a model still predicts one class and F1 is 0: the
# default pruner compares it (hpsearch/search/pruners.py), with its standard error.
RANKING_METRIC = "roc_auc"
RANKING_METRIC_SE = "roc_auc_se"
# Names an added (``evaluate``) metric may not store under: every row has them already.
ROW_KEYS = ("epoch", "step", "train_loss", "eval_loss", *METRICS, RANKING_METRIC, RANKING_METRIC_SE, "confusion")
ROW_KEYS += ("loss",)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STATE_NAMES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


# --------------------------------------------------------------------------- records


class EpochRow(TypedDict):
    """One evaluated epoch of one trial, as stored in the trial's ``epochs`` attribute.

    ``step`` counts optimiser updates so far. ``confusion[i][j]`` counts the validation
    examples of class ``i`` (label order) that the epoch's model called class ``j``.
    """

    epoch: int
    step: int
    train_loss: float | None
    eval_loss: float
    f1: float
    accuracy: float
    precision: float
    recall: float
    roc_auc: float
    roc_auc_se: float
    confusion: list[list[int]]
    # Metrics added with ``metrics`` (the ``evaluate`` library) follow as more number keys:
    # see :func:`added_metrics`.


@dataclass(frozen=True)
class DataFacts:
    """What the card and the views say about the data; stored once per study."""

    name: str
    hub_id: str | None
    text_column: str
    text_pair_column: str | None
    label_names: list[str]
    sizes: dict[str, int]  # split -> rows
    class_counts: dict[str, list[int]]  # split -> examples per class, in label order
    notes: list[str] = field(default_factory=list)
    revision: str | None = None  # the Hub dataset's commit the data came from

    @property
    def average(self) -> str:
        """How F1, precision and recall average: "binary" (the second class) or "macro"."""
        return "binary" if len(self.label_names) == 2 else "macro"

    @property
    def positive_label(self) -> str:
        return self.label_names[1] if len(self.label_names) > 1 else "1"


@dataclass(frozen=True)
class StudySettings:
    """The study attribute :data:`STUDY_KEY`: what every card and view says the study ran."""

    config: dict[str, Any]  # SearchConfig.to_dict(), storage URL redacted
    data: DataFacts
    base_model: str
    versions: dict[str, str]
    created: str  # ISO 8601, UTC
    schema: int = SCHEMA_VERSION
    hooks: dict[str, Any] = field(default_factory=dict)  # hpsearch.hooks.Hooks.names(): code handed in from Python

    @property
    def objective(self) -> str:
        return str(self.config["objective"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, study_name: str, value: Any) -> StudySettings:
        if not isinstance(value, dict):
            raise StorageError(
                f"study {study_name!r} was not made by `hpsearch run` (it has no {STUDY_KEY!r} attribute); "
                "pass the --study that `hpsearch run` made"
            )
        version = value.get("schema")
        if version != SCHEMA_VERSION:
            raise StorageError(
                f"study {study_name!r} was written in hpsearch schema {version or 1}, this hpsearch reads schema "
                f"{SCHEMA_VERSION}; start a new study (--study NAME or another --storage)"
            )
        fields = dict(value)
        fields["data"] = DataFacts(**fields["data"])
        return cls(**fields)


# --------------------------------------------------------------------------- study


def write_settings(study: optuna.Study, settings: StudySettings) -> None:
    study.set_user_attr(STUDY_KEY, settings.to_dict())


def read_settings(study: optuna.Study) -> StudySettings:
    """The study's settings; one clear error for a study hpsearch did not make or cannot read."""
    return StudySettings.from_dict(study.study_name, study.user_attrs.get(STUDY_KEY))


def has_settings(study: optuna.Study) -> bool:
    return STUDY_KEY in study.user_attrs


def objective_metric_name(objective: str) -> str:
    """The study's metric name in Optuna and the dashboard: ``validation f1``."""
    return f"validation {objective}"


def objective_name(study: optuna.Study) -> str:
    """The objective the study maximises (``f1``), from its stored settings."""
    return read_settings(study).objective


def best_trial(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The complete trial with the highest value; the earliest wins a tie, as the kept model does."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def recipe_trial(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The recipe trial; where the recipe ran again after an interruption, the finished one."""
    recipes = [t for t in trials if t.user_attrs.get(RECIPE)]
    finished = [t for t in recipes if t.state in FINISHED]
    return (finished or recipes or [None])[0]


def count_finished(trials: Iterable[FrozenTrial]) -> int:
    return sum(t.state in FINISHED for t in trials)


def state_name(trial: FrozenTrial) -> str:
    return STATE_NAMES.get(trial.state, trial.state.name.lower())


# --------------------------------------------------------------------------- trials


def make_row(
    *,
    epoch: int,
    step: int,
    train_loss: float | None,
    eval_loss: float,
    scores: Mapping[str, float],
    confusion: Sequence[Sequence[int]],
    added: Sequence[str] = (),
) -> EpochRow:
    """An epoch row; ``scores`` holds :data:`METRICS`, :data:`RANKING_METRIC` and its standard
    error, and the ``added`` metric keys, stored after them (NaN where one is missing)."""
    row = {"epoch": int(epoch), "step": int(step), "train_loss": train_loss, "eval_loss": float(eval_loss)}
    row.update({k: float(scores.get(k, math.nan)) for k in (*METRICS, RANKING_METRIC, RANKING_METRIC_SE)})
    row["confusion"] = [[int(n) for n in line] for line in confusion]
    row.update({k: float(scores.get(k, math.nan)) for k in added if k not in ROW_KEYS})
    return row  # type: ignore[return-value]


def added_metrics(epochs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The keys of the added (``evaluate``) metrics these rows hold, in the order stored."""
    out: list[str] = []
    for row in epochs:
        out += [k for k in row if k not in ROW_KEYS and k not in out]
    return out


def rows(trial: FrozenTrial) -> list[EpochRow]:
    return list(trial.user_attrs.get(EPOCHS) or [])


def shipped_row(trial: FrozenTrial) -> EpochRow | None:
    """The epoch whose model the trial ships; for a pruned or failed trial, its last epoch."""
    epochs = rows(trial)
    shipped = trial.user_attrs.get(SHIPPED_EPOCH)
    return next((r for r in epochs if r["epoch"] == shipped), epochs[-1] if epochs else None)


def is_recipe(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(RECIPE))


def _reader(key: str) -> Any:
    def read(trial: FrozenTrial | optuna.Trial) -> Any:
        return trial.user_attrs.get(key)

    read.__name__ = read.__qualname__ = key
    return read


# The worker's "host:pid", its last heartbeat (Unix time), the shipped epoch, the checkpoint rule;
# on a seed run, the search trial it repeats and its seed.
worker, heartbeat, shipped_epoch, checkpoint_rule = map(_reader, (WORKER, HEARTBEAT, SHIPPED_EPOCH, CHECKPOINT_RULE))
confirms, run_seed = _reader(CONFIRMS), _reader(SEED)


def training_args(trial: FrozenTrial) -> dict[str, Any]:
    return dict(trial.user_attrs.get(TRAINING_ARGS) or {})


def test_metrics(trial: FrozenTrial) -> dict[str, float] | None:
    value = trial.user_attrs.get(TEST_METRICS)
    return dict(value) if value else None


def device(trial: FrozenTrial) -> dict[str, Any] | None:
    """``{"name": "NVIDIA H200", "peak_memory_mib": 10240.5}``; the peak is None on a CPU."""
    value = trial.user_attrs.get(DEVICE)
    return dict(value) if value else None


def cost(trial: FrozenTrial) -> dict[str, Any] | None:
    """What the trial cost (hpsearch.training.cost.Cost); energy_kwh and co2_g are None unless codecarbon measured."""
    value = trial.user_attrs.get(COST)
    return dict(value) if value else None


def parameters(trial: FrozenTrial) -> dict[str, int] | None:
    """``{"trainable": n, "total": m}``: what the optimiser updated, of the model's own weights."""
    value = trial.user_attrs.get(PARAMETERS)
    return {k: int(v) for k, v in value.items()} if value else None


def kept_model(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(KEPT_MODEL))


def stopped_early(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(STOPPED_EARLY)


def pruned_reason(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(PRUNED_REASON)


def fail_reason(trial: FrozenTrial) -> str | None:
    """Why a trial failed. A trial failed by another worker because its own died carries
    no reason of its own: its ``worker`` attribute names the process that died."""
    reason = trial.user_attrs.get(FAIL_REASON)
    if reason is None and trial.state == TrialState.FAIL:
        who = worker(trial)
        return f"worker {who} died while the trial ran" if who else "failed without a recorded reason"
    return reason


def end_reason(trial: FrozenTrial) -> str | None:
    """Why a trial failed, was pruned or stopped early; None if it trained every epoch."""
    return fail_reason(trial) or pruned_reason(trial) or stopped_early(trial)


def shipped_best_after_stop(trial: FrozenTrial) -> bool:
    """Whether a trial stopped early shipped its best epoch rather than the one it stopped at."""
    epochs = rows(trial)
    shipped = shipped_epoch(trial)
    return bool(stopped_early(trial) and epochs and shipped is not None and shipped != epochs[-1]["epoch"])


# Writers: on the live trial of the process that runs it.


def claim(trial: optuna.Trial, worker_id: str) -> None:
    """Name the worker that runs the trial, and give it its first heartbeat."""
    trial.set_user_attr(WORKER, worker_id)
    beat(trial)


def record_training_args(trial: optuna.Trial, values: Mapping[str, Any]) -> None:
    trial.set_user_attr(TRAINING_ARGS, dict(values))


def beat(trial: optuna.Trial) -> None:
    trial.set_user_attr(HEARTBEAT, round(datetime.datetime.now(datetime.UTC).timestamp(), 3))


def record_rows(trial: optuna.Trial, epochs: Sequence[EpochRow]) -> None:
    trial.set_user_attr(EPOCHS, list(epochs))


def record_shipped(trial: optuna.Trial, *, epoch: int, rule: str) -> None:
    trial.set_user_attr(SHIPPED_EPOCH, int(epoch))
    trial.set_user_attr(CHECKPOINT_RULE, rule)


def record_stopped_early(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr(STOPPED_EARLY, reason)


def record_pruned(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr(PRUNED_REASON, reason)


def record_failure(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr(FAIL_REASON, reason)


def record_device(trial: optuna.Trial, *, name: str, peak_memory_mib: float | None) -> None:
    trial.set_user_attr(DEVICE, {"name": name, "peak_memory_mib": peak_memory_mib})


def record_cost(trial: optuna.Trial, value: Mapping[str, Any]) -> None:
    trial.set_user_attr(COST, dict(value))


def record_parameters(trial: optuna.Trial, *, trainable: int, total: int) -> None:
    trial.set_user_attr(PARAMETERS, {"trainable": int(trainable), "total": int(total)})


def record_kept(trial: optuna.Trial) -> None:
    trial.set_user_attr(KEPT_MODEL, True)


def record_test_metrics(trial: optuna.Trial, metrics: Mapping[str, float]) -> None:
    trial.set_user_attr(TEST_METRICS, {k: float(v) for k, v in metrics.items()})


def recipe_attrs() -> dict[str, Any]:
    """The user attributes the recipe trial is enqueued with."""
    return {RECIPE: True}


# --------------------------------------------------------------------------- confirmation


@dataclass(frozen=True)
class ConfirmPlan:
    """``<study>.confirm``'s :data:`CONFIRM_KEY`: search trials to confirm (best first, the
    recipe last if not among them) and the seeds each trains with, its original trial included."""

    top: int
    seeds: list[int]
    configurations: list[int]
    recipe: int | None

    @classmethod
    def from_dict(cls, value: Any) -> ConfirmPlan | None:
        if not isinstance(value, dict):
            return None
        return cls(
            top=int(value["top"]),
            seeds=[int(s) for s in value["seeds"]],
            configurations=[int(n) for n in value["configurations"]],
            recipe=value.get("recipe"),
        )


def confirm_study_name(study_name: str) -> str:
    return study_name + CONFIRM_SUFFIX


def write_plan(study: optuna.Study, plan: ConfirmPlan) -> None:
    study.set_user_attr(CONFIRM_KEY, asdict(plan))


def read_plan(study: optuna.Study) -> ConfirmPlan | None:
    return ConfirmPlan.from_dict(study.user_attrs.get(CONFIRM_KEY))


def write_race(study: optuna.Study, race: dict[str, Any]) -> None:
    study.set_user_attr(RACE_KEY, race)


def read_race(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(RACE_KEY)


def confirm_attrs(configuration: int, seed: int) -> dict[str, Any]:
    """The user attributes a seed run (of a confirmation or a race) is enqueued with."""
    return {CONFIRMS: int(configuration), SEED: int(seed)}
