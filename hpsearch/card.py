"""The model card: ``hpsearch card best|N`` writes a Hugging Face README.md from storage alone.

The card is data plus a template. :func:`gather` reads one trial and its study into a
:class:`CardFacts`; :func:`template_context` turns the facts into the variables a Jinja2
template sees (README lists them); the default template is ``templates/model_card.md.j2``.
The YAML front matter is ``huggingface_hub.ModelCardData`` with one ``EvalResult`` per
metric, and the rendered text is parsed back with ``huggingface_hub.ModelCard`` before it
is written, so every card on disk is known to load. Numbers are formatted as the
Trainer's cards format them (see :func:`fmt_metric`).

The card never overwrites a README.md it did not write (it marks its own with
:data:`MARKER`) unless ``force``; the file is written atomically, with the plots beside it.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import math
import os
import re
import shutil
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.config import DEFAULT_MODEL, Param, SearchConfig
from hpsearch.errors import CardError
from hpsearch.storage import redact
from hpsearch.trials import EPOCHS_ATTR, best_trial

MARKER = "<!-- hpsearch:card -->"  # in every card hpsearch writes: the README is ours to replace
TEMPLATE_NAME = "model_card.md.j2"
RESULTS_HEADER = "| Epoch | Step | Validation Loss | F1 | Accuracy | Precision | Recall |"
_RESULT_KEYS = ("epoch", "step", "eval_loss", "f1", "accuracy", "precision", "recall")
_SUMMARY_KEYS = (("Loss", "eval_loss"), ("F1", "f1"), ("Accuracy", "accuracy"), ("Precision", "precision"), ("Recall", "recall"))
_METRIC_LABELS = {"f1": "F1", "accuracy": "Accuracy", "precision": "Precision", "recall": "Recall"}
_STATE_NAMES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed", TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
# PNG files the card shows, by figure name of hpsearch.plots.figures, with their captions.
CARD_PLOTS = {"history": "Optimisation history", "epochs": "Validation {metric} by epoch, every trial", "importances": "Parameter importances"}
TOP_TRIALS = 5  # rows of the top-trials table
LIST_LIMIT = 10  # pruned / failed trials listed by name before "and N more"
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so the same study always gets the same card


@dataclass
class CardFacts:
    """Everything a card says, read from storage: one trial and the study around it."""

    study_name: str
    storage: str  # redacted
    trial: FrozenTrial
    is_best: bool  # the card of `hpsearch card best`
    info: dict[str, Any]  # the study's `hpsearch` attribute: config, data, base_model, versions, created
    trials: list[FrozenTrial] = field(default_factory=list)
    best_number: int | None = None

    @property
    def config(self) -> dict[str, Any]:
        return self.info.get("config", {})

    @property
    def data(self) -> dict[str, Any]:
        return self.info.get("data", {})

    @property
    def objective(self) -> str:
        return str(self.config.get("objective", "f1"))

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self.trial.user_attrs.get(EPOCHS_ATTR, []))

    @property
    def shipped_row(self) -> dict[str, Any] | None:
        """The epoch whose model the trial ships; for a pruned or failed trial, its last epoch."""
        rows = self.rows
        shipped = self.trial.user_attrs.get("shipped_epoch")
        for row in rows:
            if row.get("epoch") == shipped:
                return row
        return rows[-1] if rows else None


# --------------------------------------------------------------------------- public entry


def write_card(config: SearchConfig, trial: str, *, output: str | Path | None = None, template: str | Path | None = None, force: bool = False) -> Path:
    """Render and write the card of trial ``trial`` ("best" or a number); return its path.

    Raises:
        CardError: No complete trial, an unknown or unfinished trial number, a template
            that does not compile or render, an output path that cannot be written, or a
            README.md there that hpsearch did not write (without ``force``). Nothing is
            written then.
        StorageError: The storage or the study is missing.
    """
    from hpsearch.study import load_study

    with warnings.catch_warnings():  # opening an RDB storage notes its experimental heartbeat
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = load_study(config.study, config.storage)
    facts = gather(study, trial, storage=config.storage)
    path = Path(output) if output is not None else default_output(config, facts)
    replacing_ours = _check_output(path, force)
    source, name = load_template(template)
    compiled = _compile(source, name)
    made = _missing_folders(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CardError(f"cannot create {str(path.parent)!r}: {e.strerror or e}; pass a writable --output") from None
    scratch = _scratch(path.parent)
    try:
        plots, skipped = _make_plots(study, facts, scratch)
        card_data = build_card_data(facts)
        text = with_marker(_render(compiled, name, template_context(facts, card_data, plots, skipped)))
        check_card(text, card_data)
        written = _install(path, text, scratch, plots, drop_stale=replacing_ours)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        for folder in made:  # nothing written: not even the folders
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    _upload(config, study, facts.trial, written)
    return path


def default_output(config: SearchConfig, facts: CardFacts) -> Path:
    """``studies/<study>/best-model/README.md`` for best, ``.../trial-<N>/README.md`` otherwise."""
    folder = Path(config.workdir) / config.study
    if not facts.is_best:
        return folder / f"trial-{facts.trial.number}" / "README.md"
    best = folder / "best-model"
    marker = _best_model_marker(best)
    if marker is not None and marker.get("trial") != facts.trial.number:
        raise CardError(
            f"{best} holds the model of trial {marker.get('trial')}, but the best trial in storage is "
            f"{facts.trial.number}; run `hpsearch card {facts.trial.number} --output PATH`, or rerun `hpsearch run`"
        )
    return best / "README.md"


# --------------------------------------------------------------------------- gathering


def gather(study: optuna.Study, trial: str, *, storage: str) -> CardFacts:
    """Pick the trial ("best" or a number) and read what the card needs from storage."""
    from hpsearch.study import STUDY_ATTR

    info = study.user_attrs.get(STUDY_ATTR)
    if not isinstance(info, dict):
        raise CardError(f"study {study.study_name!r} was not made by `hpsearch run` (it has no {STUDY_ATTR!r} attribute); pass the --study that `hpsearch run` made")
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    if trial == "best":
        if best is None:
            raise CardError(f"study {study.study_name!r} has no complete trial yet; run `hpsearch run` first")
        chosen = best
    else:
        chosen = _numbered(study.study_name, trials, trial)
    return CardFacts(
        study_name=study.study_name,
        storage=redact(storage),
        trial=chosen,
        is_best=trial == "best",
        info=info,
        trials=list(trials),
        best_number=best.number if best is not None else None,
    )


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
        raise CardError(f"trial {number} is still {_STATE_NAMES[found.state]}; write its card once it has finished")
    return found


def _best_model_marker(folder: Path) -> dict[str, Any] | None:
    import json

    from hpsearch.bestmodel import MARKER as MODEL_MARKER

    try:
        return json.loads((folder / MODEL_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- formatting


def fmt_metric(value: Any, decimals: int = 4) -> str:
    """A number as the Trainer's cards print it (transformers.modelcard._maybe_round).

    Floats with more than ``decimals`` decimals are rounded and padded (0.63601 → "0.6360");
    shorter ones print as Python prints them (0.5 → "0.5", 1.0 → "1.0"); ints unchanged.
    """
    text = str(value)
    if isinstance(value, float) and "." in text and len(text.split(".")[1]) > decimals:
        return f"{value:.{decimals}f}"
    return text


def md_cell(value: Any) -> str:
    """Text that cannot break a Markdown table row: pipes escaped, line breaks made spaces."""
    return md_inline(value).replace("|", "\\|")


def md_inline(value: Any) -> str:
    """User text (dataset, label, column names) safe in running Markdown: one line, no HTML."""
    text = " ".join(str(value).split())
    for ch in ("\\", "`", "*", "_", "[", "]"):
        text = text.replace(ch, "\\" + ch)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def md_code(value: Any) -> str:
    """User text as a one-line Markdown code span, whatever backticks it holds."""
    text = " ".join(str(value).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _sig(value: Any) -> str:
    """A parameter value for tables: 4 significant digits for floats."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def results_table(rows: list[dict[str, Any]]) -> str:
    """The Trainer's "Training results" table: one row per epoch, its numbers as fmt_metric prints them."""
    widths = [len(h.strip()) for h in RESULTS_HEADER.strip("|").split("|")]
    lines = [RESULTS_HEADER, "|" + "|".join(":" + "-" * w + ":" for w in widths) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt_metric(row.get(k)) for k in _RESULT_KEYS) + " |")
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- metadata


def build_card_data(facts: CardFacts) -> Any:
    """The YAML front matter: huggingface_hub.ModelCardData with one EvalResult per metric and split."""
    from huggingface_hub import EvalResult, ModelCardData

    data = facts.data
    dataset_name = str(data.get("name") or "unknown")
    hub_id = data.get("hub_id")
    results = []
    for split, metrics in (("validation", facts.shipped_row), ("test", _test_metrics(facts.trial))):
        if not metrics:
            continue
        for key, label in _METRIC_LABELS.items():
            if _is_number(metrics.get(key)):
                results.append(
                    EvalResult(
                        task_type="text-classification",
                        task_name="Text Classification",
                        dataset_type=str(hub_id) if hub_id else "local",
                        dataset_name=dataset_name,
                        dataset_config=facts.config.get("dataset_config") if hub_id else None,
                        dataset_split=split,
                        metric_type=key,
                        metric_name=label,
                        metric_value=float(metrics[key]),
                    )
                )
    hub_base = _hub_base_model(facts)
    return ModelCardData(
        library_name="transformers",
        base_model=hub_base,
        tags=["text-classification", "hpsearch", "optuna"],
        datasets=[str(hub_id)] if hub_id else None,
        metrics=list(_METRIC_LABELS),
        model_name=model_name(facts),
        eval_results=results or None,
    )


def model_name(facts: CardFacts) -> str:
    base = str(facts.info.get("base_model") or "model").rstrip("/").split("/")[-1]
    name = f"{base}-{facts.study_name}"
    return name if facts.is_best else f"{name}-trial-{facts.trial.number}"


def _hub_base_model(facts: CardFacts) -> str | None:
    """The base model's Hub id, or None when it was a local folder (no Hub page to link)."""
    base = facts.info.get("base_model")
    given = facts.config.get("model")
    if not base:
        return None
    if given == DEFAULT_MODEL or (given == base and not Path(str(given)).expanduser().is_dir()):
        return str(base)
    return None


def with_marker(text: str) -> str:
    """The card with :data:`MARKER` in it (after the front matter), for templates that leave it out."""
    if MARKER in text:
        return text
    match = re.match(r"---\r?\n.*?\r?\n---\r?\n", text, flags=re.DOTALL)
    at = match.end() if match else 0
    return f"{text[:at]}{MARKER}\n{text[at:]}"


def check_card(text: str, card_data: Any) -> None:
    """Parse the rendered card back; its model-index must give back the eval results we put in."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard(text)
    except Exception as e:
        raise CardError(f"the rendered card does not parse as a model card: {_first_line(e)}; check the template's YAML front matter") from None
    want = [(r.metric_type, r.dataset_split, r.metric_value) for r in card_data.eval_results or []]
    got = [(r.metric_type, r.dataset_split, r.metric_value) for r in card.data.eval_results or []]
    if want != got:
        raise CardError(
            "the rendered card's model-index does not read back the evaluation results; "
            "the template must start with the YAML front matter: ---, {{ card_data_yaml }}, ---"
        )


# --------------------------------------------------------------------------- context


def template_context(facts: CardFacts, card_data: Any, plots: list[dict[str, str]], plots_skipped: str | None) -> dict[str, Any]:
    """The variables every card template sees (the README documents them)."""
    trial = facts.trial
    row = facts.shipped_row
    test = _test_metrics(trial)
    data = facts.data
    hub_base = _hub_base_model(facts)
    rows = facts.rows
    return {
        "marker": MARKER,
        "card_data_yaml": card_data.to_yaml(),
        "model_name": model_name(facts),
        "base_model": str(facts.info.get("base_model") or "an unnamed model"),
        "base_model_url": f"https://huggingface.co/{hub_base}" if hub_base else None,
        "dataset_name": str(data.get("name") or "unknown"),
        "dataset_hub_id": data.get("hub_id"),
        "data": data,
        "label_names": [str(n) for n in data.get("label_names", [])],
        "sizes": dict(data.get("sizes", {})),
        "objective": facts.objective,
        "objective_label": _METRIC_LABELS.get(facts.objective, facts.objective),
        "trial": {
            "number": trial.number,
            "state": _STATE_NAMES.get(trial.state, trial.state.name.lower()),
            "value": trial.value,
            "params": dict(trial.params),
            "is_best": trial.number == facts.best_number,
            "is_recipe": bool(trial.user_attrs.get("recipe", False)),
            "shipped_epoch": trial.user_attrs.get("shipped_epoch"),
            "last_epoch": rows[-1]["epoch"] if rows else None,
            "planned_epochs": _planned_epochs(facts),
            "checkpoint_rule": trial.user_attrs.get("checkpoint_rule", facts.config.get("checkpoint", "last")),
            "pruned_reason": trial.user_attrs.get("pruned_reason"),
            "fail_reason": trial.user_attrs.get("fail_reason"),
            "kept_model": bool(trial.user_attrs.get("kept_model", False)),
        },
        "epochs": rows,
        "shipped": row,
        "summary": _summary(row),
        "test_summary": _summary(test),
        "hyperparameters": hyperparameters(facts),
        "results_header": RESULTS_HEADER,
        "results_table": results_table(rows),
        "single_class": single_class_epochs(facts),
        "search": search_facts(facts),
        "trust": trust_facts(facts),
        "plots": plots,
        "plots_skipped": plots_skipped,
        "versions": {str(k): str(v) for k, v in facts.info.get("versions", {}).items()},
    }


def _summary(metrics: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not metrics:
        return []
    out = []
    for label, key in _SUMMARY_KEYS:
        value = metrics.get(key, metrics.get("loss") if key == "eval_loss" else None)  # test metrics say "loss"
        if _is_number(value):
            out.append((label, fmt_metric(value)))
    return out


def _test_metrics(trial: FrozenTrial) -> dict[str, Any] | None:
    test = trial.user_attrs.get("test_metrics")
    return test if isinstance(test, dict) and test else None


def _training_args(facts: CardFacts) -> dict[str, Any]:
    """The trial's TrainingArguments values; rebuilt from the recipe and params if not stored."""
    stored = facts.trial.user_attrs.get("training_args")
    if isinstance(stored, dict):
        return dict(stored)
    return {**facts.config.get("recipe", {}), **facts.trial.params}


def _planned_epochs(facts: CardFacts) -> int | None:
    value = _training_args(facts).get("num_train_epochs")
    return int(value) if _is_number(value) else None


def hyperparameters(facts: CardFacts) -> list[tuple[str, str]]:
    """The Trainer card's hyperparameter list, with every searched or non-default value added."""
    args = _training_args(facts)
    out: list[tuple[str, str]] = []
    shown = {"learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size", "seed", "adam_beta1", "adam_beta2", "adam_epsilon", "lr_scheduler_type", "num_train_epochs", "warmup_ratio"}
    for label, key in (("learning_rate", "learning_rate"), ("train_batch_size", "per_device_train_batch_size"), ("eval_batch_size", "per_device_eval_batch_size"), ("seed", "seed")):
        if key in args:
            out.append((label, str(args[key])))
    if all(k in args for k in ("adam_beta1", "adam_beta2", "adam_epsilon")):
        out.append(("optimizer", f"Adam with betas=({args['adam_beta1']},{args['adam_beta2']}) and epsilon={args['adam_epsilon']}"))
    if "lr_scheduler_type" in args:
        out.append(("lr_scheduler_type", str(args["lr_scheduler_type"])))
    searched = set(facts.config.get("space", {}))
    if "warmup_ratio" in args and (args["warmup_ratio"] or "warmup_ratio" in searched):
        out.append(("lr_scheduler_warmup_ratio", str(args["warmup_ratio"])))
    if "num_train_epochs" in args:
        out.append(("num_epochs", str(args["num_train_epochs"])))
    recipe_defaults = {"weight_decay": 0.0}
    for key, value in args.items():
        if key in shown:
            continue
        if key in searched or key not in recipe_defaults or value != recipe_defaults[key]:
            out.append((key, str(value)))
    return out


def single_class_epochs(facts: CardFacts) -> list[dict[str, Any]]:
    """Runs of epochs whose model predicted one class for every validation example.

    Read from the rows alone. Binary: recall 1 with precision equal to accuracy (both are
    then the positive rate) means every example was called positive; recall 0 and precision
    0 with accuracy equal to the negative rate (or, where the rate is unknown, recall and
    precision 0) means every example was called negative. Macro averages over K classes:
    recall 1/K with precision accuracy/K. ``scores`` are what that constant predictor scores
    (which are the epoch's own scores).
    """
    average = facts.data.get("average", "binary")
    labels = [str(n) for n in facts.data.get("label_names", [])]
    rate = positive_rate(_all_rows(facts))
    found: list[dict[str, Any]] = []
    for row in facts.rows:
        kind = _constant_kind(row, average, len(labels), rate)
        if kind is None:
            continue
        label = {"positive": labels[1] if len(labels) > 1 else "1", "negative": labels[0] if labels else "0"}.get(kind)
        if found and found[-1]["kind"] == kind and found[-1]["epochs"][-1] == row["epoch"] - 1:
            found[-1]["epochs"].append(row["epoch"])
            continue
        found.append({"kind": kind, "label": label, "epochs": [row["epoch"]], "scores": {k: fmt_metric(row[k]) for k in _METRIC_LABELS}})
    return found


def _constant_kind(row: dict[str, Any], average: str, n_labels: int, rate: float | None) -> str | None:
    if not all(_is_number(row.get(k)) for k in ("recall", "precision", "accuracy")):
        return None
    r, p, acc = row["recall"], row["precision"], row["accuracy"]
    if average == "binary":
        if _close(r, 1.0) and _close(p, acc) and acc < 1.0:
            return "positive"
        if _close(r, 0.0) and _close(p, 0.0) and (rate is None or _close(acc, 1.0 - rate, 1e-4)):
            return "negative"
        return None
    if n_labels > 1 and _close(r, 1.0 / n_labels) and _close(p, acc / n_labels):
        return "one class"
    return None


def _close(a: float, b: float, tol: float = 1e-6) -> bool:
    return abs(a - b) <= tol


def _all_rows(facts: CardFacts) -> list[dict[str, Any]]:
    return [r for t in facts.trials for r in t.user_attrs.get(EPOCHS_ATTR, [])]


def positive_rate(rows: list[dict[str, Any]]) -> float | None:
    """The validation split's share of the positive class, recovered from binary metric rows.

    An all-positive epoch has precision equal to it. Any epoch with recall r > 0 and
    precision p > 0 also fixes it: with P positives among n, TP = rP and FP = rP/p - rP, so
    accuracy = (TP + (n - P) - FP)/n gives P/n = (accuracy - 1) / (2r - 1 - r/p).
    """
    import statistics

    found = []
    for row in rows:
        if not all(_is_number(row.get(k)) for k in ("recall", "precision", "accuracy")):
            continue
        r, p, acc = row["recall"], row["precision"], row["accuracy"]
        if r > 0 and p > 0:
            denominator = 2 * r - 1 - r / p
            if abs(denominator) > 1e-12:
                value = (acc - 1) / denominator
                if 0 < value < 1:
                    found.append(value)
    return statistics.median(found) if found else None


def search_facts(facts: CardFacts) -> dict[str, Any]:
    """How the search ran: settings, the space, trial counts, epoch cost, recipe and top trials."""
    config = facts.config
    counts = {name: sum(1 for t in facts.trials if t.state == state) for state, name in _STATE_NAMES.items()}
    trained = [t for t in facts.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    per_trial = int(config.get("recipe", {}).get("num_train_epochs", 0)) or None
    recipe = next((t for t in facts.trials if t.user_attrs.get("recipe")), None)
    return {
        "study": facts.study_name,
        "storage": facts.storage,
        "created": facts.info.get("created"),
        "sampler": describe_sampler(config.get("sampler", {})),
        "pruner": describe_pruner(config.get("pruner", {}), facts.objective, per_trial),
        "objective": describe_objective(facts),
        "checkpoint": config.get("checkpoint", "last"),
        "space_table": space_table(facts, recipe),
        "counts": {"total": len(facts.trials), **counts},
        "epochs_per_trial": per_trial,
        "epochs_trained": sum(len(t.user_attrs.get(EPOCHS_ATTR, [])) for t in facts.trials),
        "epochs_unpruned": len(trained) * per_trial if per_trial else None,
        "trials_trained": len(trained),
        "recipe": _recipe_comparison(facts, recipe),
        "top_table": top_trials_table(facts),
        "pruned": _reasons(facts, TrialState.PRUNED, "pruned_reason"),
        "failed": _reasons(facts, TrialState.FAIL, "fail_reason"),
    }


def describe_sampler(sampler: dict[str, Any]) -> str:
    name, seed = sampler.get("name", "tpe"), sampler.get("seed")
    if name == "tpe":
        return f"TPESampler (seed {seed}; the first {sampler.get('startup_trials')} trials, the recipe included, are random)"
    return {"random": "RandomSampler", "qmc": "QMCSampler (Sobol)"}.get(name, str(name)) + f" (seed {seed})"


def describe_pruner(pruner: dict[str, Any], objective: str, epochs: int | None) -> str:
    name = pruner.get("name", "median")
    label = _METRIC_LABELS.get(objective, objective)
    if name == "median":
        start = int(pruner.get("warmup_epochs", 1)) + 1
        return (
            f"MedianPruner ({pruner.get('startup_trials')} startup trials, warm-up {_epochs(pruner.get('warmup_epochs', 1))}): "
            f"from epoch {start} on, a trial stops when its validation {label} is below the median of the complete trials at the same epoch"
        )
    if name == "halving":
        return f"SuccessiveHalvingPruner (min resource 1 epoch, reduction factor {pruner.get('reduction_factor')})"
    if name == "hyperband":
        return f"HyperbandPruner (1 to {epochs} epochs, reduction factor {pruner.get('reduction_factor')})"
    return "none (every trial trains all its epochs)"


def _epochs(n: Any) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def describe_objective(facts: CardFacts) -> str:
    objective = facts.objective
    labels = [str(n) for n in facts.data.get("label_names", [])]
    text = f"maximise validation {_METRIC_LABELS.get(objective, objective)}"
    if objective == "accuracy":
        return text
    if facts.data.get("average", "binary") == "binary":
        positive = labels[1] if len(labels) > 1 else "1"
        return text + f" (binary average: the positive class is {md_code(positive)})"
    return text + f" (macro average over {len(labels)} classes)"


def space_table(facts: CardFacts, recipe: FrozenTrial | None) -> str:
    recipe_values = facts.config.get("recipe", {})
    rows = []
    for name, spec in facts.config.get("space", {}).items():
        try:
            described = Param(name, **spec).describe()
        except Exception:  # a hand-edited study attribute: show it as stored
            described = str(spec)
        recipe_value = recipe_values.get(name, recipe.params.get(name) if recipe is not None else None)
        rows.append([name, described, _sig(recipe_value) or "default", _sig(facts.trial.params.get(name)) or "not sampled"])
    return markdown_table(["Parameter", "Range or choices", "Recipe value", "This trial"], rows)


def _recipe_comparison(facts: CardFacts, recipe: FrozenTrial | None) -> dict[str, Any] | None:
    if recipe is None:
        return None
    mine = facts.trial.value
    theirs = recipe.value
    difference = None if mine is None or theirs is None else mine - theirs
    return {
        "number": recipe.number,
        "state": _STATE_NAMES.get(recipe.state, recipe.state.name.lower()),
        "value": None if theirs is None else fmt_metric(theirs),
        "this_value": None if mine is None else fmt_metric(mine),
        "difference": None if difference is None else f"{difference:+.4f}",
        "is_this_trial": recipe.number == facts.trial.number,
        "reason": recipe.user_attrs.get("pruned_reason") or recipe.user_attrs.get("fail_reason"),
    }


def top_trials_table(facts: CardFacts) -> str:
    done = sorted((t for t in facts.trials if t.state == TrialState.COMPLETE and t.value is not None), key=lambda t: (-t.value, t.number))
    if not done:
        return ""
    names = list(facts.config.get("space", {})) or sorted({k for t in done for k in t.params})
    label = _METRIC_LABELS.get(facts.objective, facts.objective)
    rows = []
    for t in done[:TOP_TRIALS]:
        notes = [n for n, on in (("this card", t.number == facts.trial.number), ("recipe", bool(t.user_attrs.get("recipe")))) if on]
        rows.append([t.number, fmt_metric(t.value), t.user_attrs.get("shipped_epoch", ""), *[_sig(t.params.get(n)) for n in names], ", ".join(notes)])
    return markdown_table(["Trial", f"Validation {label}", "Epoch", *names, "Note"], rows)


def _reasons(facts: CardFacts, state: TrialState, attr: str) -> dict[str, Any]:
    trials = [t for t in facts.trials if t.state == state]
    shown = [{"number": t.number, "reason": str(t.user_attrs.get(attr) or "no reason recorded")} for t in trials[:LIST_LIMIT]]
    return {"trials": shown, "more": max(0, len(trials) - LIST_LIMIT)}


# --------------------------------------------------------------------------- trust


def trust_facts(facts: CardFacts) -> dict[str, Any]:
    """How far to trust the number: sampling noise, selection, the test split, a baseline."""
    row = facts.shipped_row
    n = facts.data.get("sizes", {}).get("validation")
    binary = facts.data.get("average", "binary") == "binary"
    rate = positive_rate(_all_rows(facts)) if binary else None
    counts = confusion_counts(row, n, rate) if row and n and rate is not None else None
    done = [t.value for t in facts.trials if t.state == TrialState.COMPLETE and t.value is not None]
    out: dict[str, Any] = {
        "validation_size": n,
        "positives": round(rate * n) if rate is not None and n else None,
        "accuracy_interval": None,
        "f1_interval": None,
        "complete_trials": len(done),
        "complete_low": fmt_metric(min(done)) if done else None,
        "complete_high": fmt_metric(max(done)) if done else None,
        "test": None,
        "baseline": None,
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
    }
    if row and n and _is_number(row.get("accuracy")):
        low, high = wilson_interval(round(row["accuracy"] * n), n)
        out["accuracy_interval"] = (f"{low:.4f}", f"{high:.4f}")
    if counts is not None and counts[0] > 0:
        low, high = bootstrap_f1_interval(*counts)
        out["f1_interval"] = (f"{low:.3f}", f"{high:.3f}")
    test = _test_metrics(facts.trial)
    if test and row:
        key = facts.objective
        if _is_number(test.get(key)) and _is_number(row.get(key)):
            out["test"] = {"value": fmt_metric(test[key]), "validation": fmt_metric(row[key]), "difference": f"{test[key] - row[key]:+.4f}", "size": facts.data.get("sizes", {}).get("test")}
    if rate is not None:
        positive = 2 * rate / (1 + rate)
        model_f1 = row.get("f1") if row else None
        out["baseline"] = {
            "label": str((facts.data.get("label_names") or ["0", "1"])[-1]),
            "f1": fmt_metric(positive),
            "accuracy": fmt_metric(rate),
            "majority_accuracy": fmt_metric(max(rate, 1 - rate)),
            "beats_model": _is_number(model_f1) and positive >= model_f1,
        }
    return out


def confusion_counts(row: dict[str, Any], n: int, rate: float) -> tuple[int, int, int, int] | None:
    """(TP, FP, FN, TN) of a binary epoch on n examples, or None if the row does not fit any."""
    if not all(_is_number(row.get(k)) for k in ("recall", "precision", "accuracy", "f1")):
        return None
    positives = round(rate * n)
    tp = round(row["recall"] * positives)
    tn = round(row["accuracy"] * n) - tp
    fp, fn = (n - positives) - tn, positives - tp
    if min(tp, fp, fn, tn) < 0:
        return None
    predicted = tp + fp
    check = {
        "recall": tp / positives if positives else 0.0,
        "precision": tp / predicted if predicted else 0.0,
        "accuracy": (tp + tn) / n,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
    }
    if any(abs(check[k] - row[k]) > 1e-6 for k in check):
        return None
    return tp, fp, fn, tn


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (scipy's binomial test)."""
    from scipy.stats import binomtest

    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_f1_interval(tp: int, fp: int, fn: int, tn: int, confidence: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval of binary F1, resampling the validation examples."""
    import numpy as np
    from scipy.stats import bootstrap

    truth = np.repeat(np.array([1, 0, 1, 0], dtype=np.int8), [tp, fp, fn, tn])
    predicted = np.repeat(np.array([1, 1, 0, 0], dtype=np.int8), [tp, fp, fn, tn])

    def f1(t: Any, p: Any, axis: int = -1) -> Any:
        hits = np.sum((t == 1) & (p == 1), axis=axis)
        wrong = np.sum(t != p, axis=axis)
        return np.where(hits > 0, 2 * hits / np.maximum(2 * hits + wrong, 1), 0.0)

    result = bootstrap(
        (truth, predicted), f1, paired=True, vectorized=True, n_resamples=BOOTSTRAP_RESAMPLES,
        batch=200, method="percentile", confidence_level=confidence, rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]


# --------------------------------------------------------------------------- template


def load_template(template: str | Path | None) -> tuple[str, str]:
    """The template's text and the name errors give it: the user's file, or the default."""
    if template is not None:
        path = Path(template)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as e:
            reason = "does not exist" if isinstance(e, FileNotFoundError) else f"cannot be read ({_first_line(e)})"
            raise CardError(f"template {str(path)!r} {reason}; pass a readable Jinja2 file to --template") from None
    path = default_template_path()
    return path.read_text(encoding="utf-8"), str(path)


def default_template_path() -> Path:
    """templates/model_card.md.j2: inside the installed package (a wheel), else the source checkout's."""
    packaged = importlib.resources.files("hpsearch").joinpath("templates", TEMPLATE_NAME)
    if packaged.is_file():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent / "templates" / TEMPLATE_NAME
    if checkout.is_file():
        return checkout
    raise CardError(f"the default template {TEMPLATE_NAME} is missing from this installation; reinstall hpsearch or pass --template")


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(metric=fmt_metric, md_cell=md_cell, md_inline=md_inline, md_code=md_code, sig=_sig)
    return env


def _compile(source: str, name: str) -> Any:
    """Compile once, so a syntax error is reported (with its line) before anything is written."""
    import jinja2

    env = _environment()
    try:
        code = env.compile(source, name=name, filename=name)
    except jinja2.TemplateSyntaxError as e:
        raise CardError(f"template {name}, line {e.lineno}: {e.message}") from None
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def _render(compiled: Any, name: str, context: dict[str, Any]) -> str:
    try:
        return compiled.render(context)
    except Exception as e:
        line = next((f.lineno for f in reversed(traceback.extract_tb(e.__traceback__)) if f.filename == name), None)
        where = f"template {name}, line {line}" if line is not None else f"template {name}"
        hint = " (the variables a template may use are listed in the README)" if type(e).__name__ == "UndefinedError" else ""
        raise CardError(f"{where}: {_first_line(e)}{hint}") from None


# --------------------------------------------------------------------------- writing


def _check_output(path: Path, force: bool) -> bool:
    """Refuse a README.md that hpsearch did not write; return whether one of ours is there."""
    if path.is_dir():
        raise CardError(f"--output {str(path)!r} is a folder; pass the README.md file to write")
    if not path.exists():
        return False
    try:
        ours = MARKER in path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise CardError(f"cannot read the existing {str(path)!r}: {e.strerror or e}") from None
    if not ours and not force:
        raise CardError(f"{str(path)!r} exists and was not written by hpsearch; pass --force to replace it, or --output elsewhere")
    return ours


def _missing_folders(folder: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would make, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _scratch(folder: Path) -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=".hpsearch-card-", dir=folder))
    except OSError as e:
        raise CardError(f"cannot write in {str(folder)!r}: {e.strerror or e}; pass a writable --output") from None


def _make_plots(study: optuna.Study, facts: CardFacts, scratch: Path) -> tuple[list[dict[str, str]], str | None]:
    """PNG files of the card's plots in ``scratch``; or none, and why."""
    from hpsearch import plots

    figs = plots.figures(study, names=CARD_PLOTS)
    try:
        paths = plots.render_pngs(figs, scratch)
    except plots.PngUnavailable as e:
        return [], str(e)
    label = _METRIC_LABELS.get(facts.objective, facts.objective)
    return [{"name": p.stem, "file": p.name, "title": CARD_PLOTS[p.stem].format(metric=label)} for p in paths], None


def _install(path: Path, text: str, scratch: Path, plots: list[dict[str, str]], *, drop_stale: bool) -> list[Path]:
    """Move the plots beside the card, then replace README.md atomically.

    Where the card replaces one of ours, plots that card had and this one lacks are removed.
    """
    written = []
    try:
        for plot in plots:
            target = path.parent / plot["file"]
            os.replace(scratch / plot["file"], target)
            written.append(target)
        for name in CARD_PLOTS if drop_stale else ():
            stale = path.parent / f"{name}.png"
            if stale not in written:
                stale.unlink(missing_ok=True)
        tmp = scratch / "README.md"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise CardError(f"cannot write {str(path)!r}: {e.strerror or e}; pass a writable --output") from None
    return [path, *written]


def _upload(config: SearchConfig, study: optuna.Study, trial: FrozenTrial, paths: list[Path]) -> None:
    """Attach the card and plots to the trial as Optuna artifacts, where hpsearch.dashboard can."""
    try:
        from hpsearch.dashboard import artifact_dir, upload_card_artifacts
    except ImportError:
        return
    try:
        upload_card_artifacts(study, trial.number, paths, artifact_dir=artifact_dir(config))
    except Exception as e:
        raise CardError(f"wrote {paths[0]}, but attaching it to trial {trial.number}'s artifacts failed: {_first_line(e)}") from None
