"""Intervals of a validation score from its confusion matrix: Wilson for accuracy, bootstrap for F1."""

from __future__ import annotations

from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so the same study always gets the same card


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (scipy's binomial test)."""
    from scipy.stats import binomtest  # scipy loads only for a card or a verdict

    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_f1_interval(confusion: list[list[int]], average: str, confidence: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval of F1, resampling the examples a confusion matrix counts.

    ``average`` is "binary" (the F1 of class 1) or "macro" (the mean F1 of the classes a
    resample holds or predicts, as scikit-learn averages them).
    """
    from scipy.stats import bootstrap

    k = len(confusion)
    cells = [(i, j) for i in range(k) for j in range(k)]
    sizes = [confusion[i][j] for i, j in cells]
    truth = np.repeat(np.array([i for i, _ in cells], dtype=np.int32), sizes)
    predicted = np.repeat(np.array([j for _, j in cells], dtype=np.int32), sizes)
    scored = [1] if average == "binary" else list(range(k))

    def f1(t: Any, p: Any, axis: int = -1) -> Any:
        per_class, present = [], []
        for c in scored:
            hits = np.sum((t == c) & (p == c), axis=axis)
            counted = np.sum(t == c, axis=axis) + np.sum(p == c, axis=axis)  # 2TP + FP + FN
            per_class.append(2 * hits / np.maximum(counted, 1))
            present.append(counted > 0)
        if average == "binary":
            return per_class[0]
        return np.sum(np.array(per_class) * present, axis=0) / np.maximum(np.sum(present, axis=0), 1)

    result = bootstrap(
        (truth, predicted),
        f1,
        paired=True,
        vectorized=True,
        n_resamples=BOOTSTRAP_RESAMPLES,
        batch=200,
        method="percentile",
        confidence_level=confidence,
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
