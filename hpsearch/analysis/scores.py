"""What a confusion matrix and a constant predictor score: plain functions on stored integers.

A run *fails* when its shipped epoch called every validation example one class, or when
the constant predictor the card compares with (:func:`constant_baseline`) matches or beats
it: F1 at or below the all-positive predictor's (the majority class's for more than two
classes), or accuracy at or below the majority class's (Mosbach et al. 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpsearch.formatting import is_number
from hpsearch.schema import EpochRow


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, average: str) -> dict[str, float]:
    """F1, accuracy, precision and recall; ``average`` is "binary" (class 1) or "macro".

    A class never predicted counts as precision 0 rather than a warning, as the Trainer
    cards of collapsed runs show.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support  # sklearn loads in a second

    precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, average=average, zero_division=0)
    return {
        "f1": float(f1),
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision": float(precision),
        "recall": float(recall),
    }


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_labels: int) -> list[list[int]]:
    """``[i][j]``: examples of class ``i`` the model called class ``j``, classes in label order."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    return sk_confusion_matrix(labels, predictions, labels=list(range(n_labels))).astype(int).tolist()


def predicted_class(confusion: list[list[int]]) -> int | None:
    """The one class a model called every example, from its confusion matrix; None when it
    called more than one (or the matrix is empty)."""
    called = [j for j in range(len(confusion)) if any(line[j] for line in confusion)]
    return called[0] if len(called) == 1 else None


def class_counts(confusion: list[list[int]]) -> list[int]:
    """Examples of each class: the matrix's row sums."""
    return [int(sum(line)) for line in confusion]


def constant_scores(counts: list[int], label: int, average: str) -> dict[str, float]:
    """What a model that calls every example ``label`` scores on a split with these class counts."""
    truth = np.repeat(np.arange(len(counts)), counts)
    return classification_metrics(truth, np.full_like(truth, label), average)


def constant_baseline(counts: Sequence[int], average: str) -> tuple[int, dict[str, float]]:
    """The constant predictor the card compares with, and its scores on these class counts.

    Binary: every example called positive, the predictor a binary F1 flatters most. Macro:
    every example called the majority class (the first, on a tie).
    """
    counts = list(counts)
    label = 1 if average == "binary" else counts.index(max(counts))
    return label, constant_scores(counts, label, average)


def failure(row: EpochRow | None, counts: Sequence[int], average: str) -> str | None:
    """Why a run's shipped epoch counts as a failed fine-tune, or None when it learned."""
    if row is None:
        return "no evaluated epoch"
    if predicted_class(row["confusion"]) is not None:
        return "called every example one class"
    _, scores = constant_baseline(counts, average)
    majority = max(counts) / sum(counts) if sum(counts) else 0.0
    if is_number(row.get("f1")) and row["f1"] <= scores["f1"]:
        return f"F1 {row['f1']:.4f} at or below the constant predictor's {scores['f1']:.4f}"
    if is_number(row.get("accuracy")) and row["accuracy"] <= majority:
        return f"accuracy {row['accuracy']:.4f} at or below the majority class's {majority:.4f}"
    return None
