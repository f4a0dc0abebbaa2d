"""Validation metrics, computed with scikit-learn (what the Hub's `evaluate` modules wrap)."""

from __future__ import annotations

from typing import Any

import numpy as np

METRICS = ("f1", "accuracy", "precision", "recall")


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, average: str) -> dict[str, float]:
    """F1, accuracy, precision and recall; ``average`` is "binary" (class 1) or "macro".

    A class never predicted counts as precision 0 rather than a warning, as the Trainer
    cards of collapsed runs show.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, average=average, zero_division=0
    )
    return {
        "f1": float(f1),
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision": float(precision),
        "recall": float(recall),
    }


def compute_metrics_for(average: str) -> Any:
    """A ``compute_metrics`` function for the Trainer."""

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        return classification_metrics(labels, np.argmax(logits, axis=-1), average)

    return compute_metrics


def constant_predictor_scores(labels: list[int], label: int, average: str) -> dict[str, float]:
    """What a model that predicts ``label`` for every example would score."""
    y = np.asarray(labels)
    return classification_metrics(y, np.full_like(y, label), average)
