"""How far to trust a card's number: sampling noise, selection, the test split, a baseline.

Everything here comes from integers the study stores: the validation split's class counts
(``DataFacts.class_counts``) and each epoch's confusion matrix (``EpochRow.confusion``). The
matrix gives the Wilson interval of accuracy, a bootstrap interval of F1 (resampling the
validation examples it counts) and the epochs whose model called every example one class;
the class counts give what a constant predictor scores.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState

from hpsearch.analysis.intervals import BOOTSTRAP_RESAMPLES, bootstrap_f1_interval, wilson_interval
from hpsearch.analysis.scores import class_counts, constant_scores, predicted_class
from hpsearch.card.facts import CardFacts
from hpsearch.formatting import fmt_metric, is_number
from hpsearch.schema import METRICS, EpochRow


def trust_facts(facts: CardFacts) -> dict[str, Any]:
    """How far to trust the number: sampling noise, selection, the test split, a baseline."""
    row = facts.shipped_row
    counts = facts.validation_counts
    done = [t.value for t in facts.trials if t.state == TrialState.COMPLETE and t.value is not None]
    return {
        "validation_size": facts.data.sizes["validation"],
        "positives": counts[1] if facts.average == "binary" else None,
        "class_counts": [{"label": label, "count": n} for label, n in zip(facts.label_names, counts, strict=True)],
        "accuracy_interval": _accuracy_interval(row),
        "f1_interval": _f1_interval(row, facts.average),
        "complete_trials": len(done),
        "complete_low": fmt_metric(min(done)) if done else None,
        "complete_high": fmt_metric(max(done)) if done else None,
        "test": _test_against_validation(facts, row),
        "baseline": baseline(facts, row),
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
    }


def _accuracy_interval(row: EpochRow | None) -> tuple[str, str] | None:
    if row is None:
        return None
    confusion = row["confusion"]
    correct = sum(confusion[i][i] for i in range(len(confusion)))
    low, high = wilson_interval(correct, sum(class_counts(confusion)))
    return f"{low:.4f}", f"{high:.4f}"


def _f1_interval(row: EpochRow | None, average: str) -> tuple[str, str] | None:
    """None where F1 is 0 in every resample: no example of a scored class called right."""
    if row is None:
        return None
    confusion = row["confusion"]
    scored = [1] if average == "binary" else range(len(confusion))
    if not any(confusion[c][c] for c in scored):
        return None
    low, high = bootstrap_f1_interval(confusion, average)
    return f"{low:.3f}", f"{high:.3f}"


def _test_against_validation(facts: CardFacts, row: EpochRow | None) -> dict[str, Any] | None:
    test = facts.test_metrics
    key = facts.objective
    if not (test and row and is_number(test.get(key)) and is_number(row.get(key))):
        return None
    return {
        "value": fmt_metric(test[key]),
        "validation": fmt_metric(row[key]),
        "difference": f"{test[key] - row[key]:+.4f}",
        "size": facts.data.sizes.get("test"),
    }


def baseline(facts: CardFacts, row: EpochRow | None) -> dict[str, Any]:
    """What a constant predictor scores on the validation split, against the model's F1.

    Binary: calling every example positive, the predictor a binary F1 flatters most.
    Macro: calling every example the majority class (the first, on a tie).
    """
    counts = facts.validation_counts
    majority = counts.index(max(counts))
    label = 1 if facts.average == "binary" else majority
    scores = constant_scores(counts, label, facts.average)
    model_f1 = row.get("f1") if row else None
    return {
        "kind": "positive" if facts.average == "binary" else "majority",
        "label": facts.label_names[label],
        "f1": fmt_metric(scores["f1"]),
        "accuracy": fmt_metric(scores["accuracy"]),
        "majority_accuracy": fmt_metric(max(counts) / sum(counts)),
        "beats_model": is_number(model_f1) and scores["f1"] >= model_f1,
    }


def single_class_epochs(facts: CardFacts) -> list[dict[str, Any]]:
    """Runs of consecutive epochs whose model called every validation example one class.

    ``kind`` is "positive" or "negative" for a binary task and "one class" otherwise;
    ``scores`` are what that constant predictor scores, which are the epochs' own scores.
    """
    runs: list[tuple[int, list[int], EpochRow]] = []  # (class, epochs, first row)
    for row in facts.rows:
        label = predicted_class(row["confusion"])
        if label is None:
            continue
        if runs and runs[-1][0] == label and runs[-1][1][-1] == row["epoch"] - 1:
            runs[-1][1].append(row["epoch"])
        else:
            runs.append((label, [row["epoch"]], row))
    return [_single_class_run(facts, label, epochs, row) for label, epochs, row in runs]


def _single_class_run(facts: CardFacts, label: int, epochs: list[int], row: EpochRow) -> dict[str, Any]:
    scores = constant_scores(class_counts(row["confusion"]), label, facts.average)
    return dict(
        kind=_kind(label, facts.average),
        label=facts.label_names[label],
        epochs=epochs,
        scores={k: fmt_metric(scores[k]) for k in METRICS},
    )


def _kind(label: int, average: str) -> str:
    if average != "binary":
        return "one class"
    return "positive" if label == 1 else "negative"
