"""Validation metrics, computed with scikit-learn (what the Hub's `evaluate` modules wrap);
metrics added with ``metrics`` come from :mod:`hpsearch.training.evaluate_metrics`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hpsearch.analysis.scores import classification_metrics, confusion_matrix
from hpsearch.schema import RANKING_METRIC, RANKING_METRIC_SE


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


class MetricsComputer:
    """The Trainer's ``compute_metrics``: the four scores, ROC AUC and its standard error.

    The epoch's confusion matrix is kept as :attr:`last_confusion` rather than returned: the
    Trainer logs what ``compute_metrics`` returns, and loggers take numbers, not matrices.
    """

    def __init__(self, n_labels: int, added: Sequence[Any] = ()) -> None:
        self.n_labels = n_labels
        self.average = "binary" if n_labels == 2 else "macro"
        self.added = list(added)  # hpsearch.training.evaluate_metrics.AddedMetric
        self.last_confusion: list[list[int]] = []
        self.added_keys: list[str] = []  # the row keys the added metrics returned last

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        predictions = np.argmax(logits, axis=-1)
        self.last_confusion = confusion_matrix(labels, predictions, self.n_labels)
        out = classification_metrics(labels, predictions, self.average)
        out[RANKING_METRIC] = roc_auc(labels, logits)
        out[RANKING_METRIC_SE] = roc_auc_se(labels, out[RANKING_METRIC])
        added = {k: v for metric in self.added for k, v in metric.compute(predictions, labels, self.average).items()}
        self.added_keys = list(added)
        out.update(added)
        return out
