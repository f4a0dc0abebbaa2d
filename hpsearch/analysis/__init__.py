"""Analysis: what the stored integers say, read-only and without training.

:mod:`~hpsearch.analysis.scores` (scores of a confusion matrix, the constant baseline and
the failure rule), :mod:`~hpsearch.analysis.intervals` (Wilson and bootstrap intervals),
:mod:`~hpsearch.analysis.seeds` (a configuration's runs over seeds, the winner by mean,
Welch's test), :mod:`~hpsearch.analysis.verdict` (the one-sentence verdict) and
:mod:`~hpsearch.analysis.cost` (what a search cost, summed from its trials).
"""
