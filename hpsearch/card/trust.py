"""How far to trust a card's number: sampling noise, selection, the test split, a baseline.

Everything here is recovered from the per-epoch metric rows in storage; no predictions
are kept. The validation split's positive rate (:func:`positive_rate`) turns a binary
epoch's four scores back into its confusion counts (:func:`confusion_counts`), which give
a bootstrap interval of F1 and the scores of a constant predictor. Epochs whose model
predicted one class for everything are found by :func:`single_class_epochs`.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState

from hpsearch.card.facts import METRIC_LABELS, CardFacts
from hpsearch.card.markdown import fmt_metric
from hpsearch.training.metrics import constant_prediction, is_number
from hpsearch.views.trials import EPOCHS_ATTR

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so the same study always gets the same card


def trust_facts(facts: CardFacts) -> dict[str, Any]:
    """How far to trust the number: sampling noise, selection, the test split, a baseline."""
    row = facts.shipped_row
    n = facts.data.get("sizes", {}).get("validation")
    rate = positive_rate(all_rows(facts)) if facts.average == "binary" else None
    done = [t.value for t in facts.trials if t.state == TrialState.COMPLETE and t.value is not None]
    return {
        "validation_size": n,
        "positives": round(rate * n) if rate is not None and n else None,
        "accuracy_interval": _accuracy_interval(row, n),
        "f1_interval": _f1_interval(row, n, rate),
        "complete_trials": len(done),
        "complete_low": fmt_metric(min(done)) if done else None,
        "complete_high": fmt_metric(max(done)) if done else None,
        "test": _test_against_validation(facts, row),
        "baseline": _baseline(facts, row, rate),
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
    }


def _accuracy_interval(row: dict[str, Any] | None, n: int | None) -> tuple[str, str] | None:
    if not (row and n and is_number(row.get("accuracy"))):
        return None
    low, high = wilson_interval(round(row["accuracy"] * n), n)
    return f"{low:.4f}", f"{high:.4f}"


def _f1_interval(row: dict[str, Any] | None, n: int | None, rate: float | None) -> tuple[str, str] | None:
    counts = confusion_counts(row, n, rate) if row and n and rate is not None else None
    if counts is None or counts[0] == 0:  # no true positive: F1 is 0 in every resample
        return None
    low, high = bootstrap_f1_interval(*counts)
    return f"{low:.3f}", f"{high:.3f}"


def _test_against_validation(facts: CardFacts, row: dict[str, Any] | None) -> dict[str, Any] | None:
    test = facts.test_metrics
    key = facts.objective
    if not (test and row and is_number(test.get(key)) and is_number(row.get(key))):
        return None
    return {"value": fmt_metric(test[key]), "validation": fmt_metric(row[key]), "difference": f"{test[key] - row[key]:+.4f}", "size": facts.data.get("sizes", {}).get("test")}


def _baseline(facts: CardFacts, row: dict[str, Any] | None, rate: float | None) -> dict[str, Any] | None:
    """What predicting the positive class for every example scores, against the model's F1."""
    if rate is None:
        return None
    positive = 2 * rate / (1 + rate)  # F1 at precision = rate, recall = 1
    model_f1 = row.get("f1") if row else None
    return {
        "label": str((facts.data.get("label_names") or ["0", "1"])[-1]),
        "f1": fmt_metric(positive),
        "accuracy": fmt_metric(rate),
        "majority_accuracy": fmt_metric(max(rate, 1 - rate)),
        "beats_model": is_number(model_f1) and positive >= model_f1,
    }


def confusion_counts(row: dict[str, Any], n: int, rate: float) -> tuple[int, int, int, int] | None:
    """(TP, FP, FN, TN) of a binary epoch on n examples, or None if the row does not fit any."""
    if not all(is_number(row.get(k)) for k in ("recall", "precision", "accuracy", "f1")):
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


def single_class_epochs(facts: CardFacts) -> list[dict[str, Any]]:
    """Runs of epochs whose model predicted one class for every validation example.

    Read from the rows alone. Binary: recall 1 with precision equal to accuracy (both are
    then the positive rate) means every example was called positive; recall 0 and precision
    0 with accuracy equal to the negative rate (or, where the rate is unknown, recall and
    precision 0) means every example was called negative. Macro averages over K classes:
    recall 1/K with precision accuracy/K. ``scores`` are what that constant predictor scores
    (which are the epoch's own scores).
    """
    labels = facts.label_names
    rate = positive_rate(all_rows(facts))
    found: list[dict[str, Any]] = []
    for row in facts.rows:
        kind = constant_prediction(row, facts.average, len(labels), rate)
        if kind is None:
            continue
        label = {"positive": facts.positive_label, "negative": labels[0] if labels else "0"}.get(kind)
        if found and found[-1]["kind"] == kind and found[-1]["epochs"][-1] == row["epoch"] - 1:
            found[-1]["epochs"].append(row["epoch"])
            continue
        found.append({"kind": kind, "label": label, "epochs": [row["epoch"]], "scores": {k: fmt_metric(row[k]) for k in METRIC_LABELS}})
    return found


def predicts_one_class(facts: CardFacts, row: dict[str, Any], rate: float | None) -> bool:
    """Whether the epoch's model called every validation example one class (see above)."""
    return constant_prediction(row, facts.average, len(facts.label_names), rate) is not None


def all_rows(facts: CardFacts) -> list[dict[str, Any]]:
    """The epoch rows of every trial in the study: they share one validation split."""
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
        if not all(is_number(row.get(k)) for k in ("recall", "precision", "accuracy")):
            continue
        r, p, acc = row["recall"], row["precision"], row["accuracy"]
        if r > 0 and p > 0:
            denominator = 2 * r - 1 - r / p
            if abs(denominator) > 1e-12:
                value = (acc - 1) / denominator
                if 0 < value < 1:
                    found.append(value)
    return statistics.median(found) if found else None
