"""Validation metrics, computed with scikit-learn (what the Hub's `evaluate` modules wrap)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

METRICS = ("f1", "accuracy", "precision", "recall")
# Stored in every epoch's row beside METRICS for the pruner (see hpsearch/pruners.py), not
# shown in the card: a threshold-free score that moves while F1 is still 0.
RANKING_METRIC = "roc_auc"
# Its standard error, stored beside it so that a pruner can tell a real gap from noise.
RANKING_METRIC_SE = "roc_auc_se"


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


def roc_auc(labels: np.ndarray, logits: np.ndarray) -> float:
    """Area under the ROC curve of the softmax scores, one class against the rest, averaged
    over the classes the labels hold (for two classes, the AUC of either).

    It ranks examples rather than thresholding them, so it tells a model that is learning
    from one that is not while both still predict the majority class for everything (F1 0).
    NaN when the labels hold a single class.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels)
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    scores = z / z.sum(axis=1, keepdims=True)
    present = np.unique(y)
    if len(present) < 2:
        return math.nan
    return float(np.mean([roc_auc_score(y == c, scores[:, c]) for c in present]))


def roc_auc_se(labels: np.ndarray, auc: float) -> float:
    """Standard error of a ROC AUC of ``auc`` on these labels, by Hanley and McNeil (1982),
    from the AUC and the class counts alone; for more than two classes, that of the mean of
    the one-against-the-rest AUCs, each taken at ``auc`` and treated as independent.

    On 32 positives and 224 negatives it is 0.013 at AUC 0.989 and 0.004 at 0.999: two
    trials whose AUCs differ by less than that are not told apart by the validation split.
    NaN when the labels hold a single class or the AUC is not finite.
    """
    y = np.asarray(labels)
    present = np.unique(y)
    if len(present) < 2 or not math.isfinite(auc):
        return math.nan
    a = min(max(auc, 0.0), 1.0)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    # Two classes: one AUC, class 1 the positive one (the formula is not symmetric).
    variances = []
    for c in present[-1:] if len(present) == 2 else present:
        pos = int(np.sum(y == c))
        neg = len(y) - pos
        variances.append(max(a * (1 - a) + (pos - 1) * (q1 - a * a) + (neg - 1) * (q2 - a * a), 0.0) / (pos * neg))
    return math.sqrt(sum(variances)) / len(variances)


def compute_metrics_for(average: str) -> Any:
    """A ``compute_metrics`` function for the Trainer: METRICS, RANKING_METRIC and its standard error."""

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        out = classification_metrics(labels, np.argmax(logits, axis=-1), average)
        out[RANKING_METRIC] = roc_auc(labels, logits)
        out[RANKING_METRIC_SE] = roc_auc_se(labels, out[RANKING_METRIC])
        return out

    return compute_metrics


def constant_predictor_scores(labels: list[int], label: int, average: str) -> dict[str, float]:
    """What a model that predicts ``label`` for every example would score."""
    y = np.asarray(labels)
    return classification_metrics(y, np.full_like(y, label), average)


def constant_prediction(row: dict[str, Any], average: str, n_labels: int, rate: float | None = None) -> str | None:
    """Whether an epoch's model called every validation example one class, from its row.

    Binary: recall 1 with precision equal to accuracy (both are then the positive rate) is
    "positive"; recall 0 and precision 0 with accuracy equal to the negative rate (or,
    where the rate is unknown, recall and precision 0) is "negative". Macro averages over K
    classes: recall 1/K with precision accuracy/K is "one class". None otherwise.
    """
    if not all(is_number(row.get(k)) for k in ("recall", "precision", "accuracy")):
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


def is_number(value: Any) -> bool:
    """A stored metric that can be printed and compared: a finite int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _close(a: float, b: float, tol: float = 1e-6) -> bool:
    return abs(a - b) <= tol
