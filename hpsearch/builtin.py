"""The built-in task: the data a new user trains on before they have any of their own."""

from __future__ import annotations

import random

import pandas as pd


def builtin_reviews(seed: int = 20240605) -> dict[str, pd.DataFrame]:
    """A small binary sentiment task the tool makes itself, the same on every machine.

    Short product reviews whose label a bag of words cannot read off: negation flips a
    word ("not great"), a "but" clause overrides the first, and 8% of labels are noise.
    300 train, 100 validation and 100 test rows; labels are the strings "negative" and
    "positive".
    """
    rng = random.Random(seed)
    good = ["great", "excellent", "reliable", "sturdy", "comfortable", "fast", "useful", "pleasant", "solid", "lovely"]
    bad = ["terrible", "flimsy", "slow", "useless", "noisy", "awful", "fragile", "clumsy", "poor", "disappointing"]
    nouns = ["blender", "kettle", "lamp", "backpack", "keyboard", "charger", "jacket", "speaker", "chair", "tent"]
    adverbs = ["", "", "really ", "quite ", "very ", "rather ", "surprisingly "]
    negations = ["not ", "never ", "hardly ", "far from "]

    def clause(noun: str) -> tuple[str, int]:
        positive = rng.random() < 0.5
        negated = rng.random() < 0.3
        word = rng.choice(good if positive else bad)
        adverb = "" if negated else rng.choice(adverbs)
        text = f"the {noun} is {rng.choice(negations) if negated else ''}{adverb}{word}"
        return text, int(positive != negated)

    rows = []
    for _ in range(500):
        noun = rng.choice(nouns)
        text, label = clause(noun)
        if rng.random() < 0.35:
            second, label = clause(rng.choice(["price", "battery", "finish", "design", "handle", noun]))
            text = f"{text}, but {second}"
        if rng.random() < 0.08:
            label = 1 - label
        rows.append({"text": text.capitalize() + ".", "label": ("negative", "positive")[label]})
    frame = pd.DataFrame(rows)
    return {"train": frame.iloc[:300], "validation": frame.iloc[300:400], "test": frame.iloc[400:]}
