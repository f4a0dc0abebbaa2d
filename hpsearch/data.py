"""Data: the built-in task, local files or a Hub dataset, made ready for classification.

:func:`load_task` reads the splits once, finds the text and label columns, maps labels
to ids and carves a validation split when there is none. :func:`tokenize_task` turns the
texts into token ids once per run, so that no trial pays for it again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.config import BUILTIN_DATASET, SearchConfig
from hpsearch.errors import DataError, first_line

if TYPE_CHECKING:
    import pandas as pd

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
_SPLIT_NAMES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev", "eval"),
    "test": ("test",),
}
_TEXT_CANDIDATES = ("text", "sentence", "content", "review", "document", "question")
_LABEL_CANDIDATES = ("label", "labels")
# Share of the training split carved off for validation when a dataset has none.
VALIDATION_FRACTION = 0.1


@dataclass
class Task:
    """A classification task: raw splits with integer labels, and what describes them."""

    splits: dict[str, dict[str, list[Any]]]  # split -> column -> values; "label" holds ids
    text_column: str
    text_pair_column: str | None
    label_names: tuple[str, ...]
    name: str  # what the card calls the dataset
    hub_id: str | None = None  # the Hub dataset id, for the card's `datasets:` metadata
    notes: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def average(self) -> str:
        """How F1, precision and recall are averaged: binary for two classes, else macro."""
        return "binary" if self.num_labels == 2 else "macro"

    def size(self, split: str) -> int:
        return len(self.splits[split]["label"]) if split in self.splits else 0

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts for the study's attributes and the card."""
        return {
            "name": self.name,
            "hub_id": self.hub_id,
            "text_column": self.text_column,
            "text_pair_column": self.text_pair_column,
            "label_names": list(self.label_names),
            "average": self.average,
            "sizes": {s: self.size(s) for s in self.splits},
            "notes": list(self.notes),
        }


def load_task(config: SearchConfig) -> Task:
    """Read the configured dataset and make it a :class:`Task`.

    Raises:
        DataError: The dataset cannot be found or read, a column is missing, a split is
            empty, the labels are unusable, or training has a single class.
    """
    if config.dataset == BUILTIN_DATASET:
        frames = builtin_reviews()
        name, hub_id = "hpsearch built-in reviews (synthetic)", None
    elif Path(config.dataset).exists():
        frames = _read_local(Path(config.dataset))
        name, hub_id = Path(config.dataset).name or config.dataset, None
    elif looks_like_path(config.dataset):
        raise DataError(f"dataset path {config.dataset!r} does not exist; pass an existing folder or CSV/JSON/JSONL/Parquet file")
    else:
        frames = _read_hub(config.dataset, config.dataset_config)
        name, hub_id = config.dataset + (f" ({config.dataset_config})" if config.dataset_config else ""), config.dataset
    return _make_task(frames, config, name=name, hub_id=hub_id)


def looks_like_path(name: str) -> bool:
    """A name that can only be meant as a local path, never a Hub id (``user/name``)."""
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or Path(name).suffix.lower() in SUFFIXES
    )


# --------------------------------------------------------------------------- sources


def builtin_reviews(seed: int = 20240605) -> dict[str, pd.DataFrame]:
    """A small binary sentiment task the tool makes itself, the same on every machine.

    Short product reviews whose label a bag of words cannot read off: negation flips a
    word ("not great"), a "but" clause overrides the first, and 8% of labels are noise.
    300 train, 100 validation and 100 test rows; labels are the strings "negative" and
    "positive".
    """
    import pandas as pd

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


def _read_local(path: Path) -> dict[str, pd.DataFrame]:
    if path.is_file():
        return {"train": _read_file(path)}
    files: dict[str, Path] = {}
    for entry in sorted(path.iterdir()):
        if entry.suffix.lower() not in SUFFIXES:
            continue
        for split, names in _SPLIT_NAMES.items():
            if entry.stem.lower() in names and split not in files:
                files[split] = entry
    if "train" not in files:
        found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
        raise DataError(
            f"dataset folder {str(path)!r} has no train file; expected train.csv, train.jsonl, "
            f"train.json or train.parquet (found: {found})"
        )
    return {split: _read_file(f) for split, f in files.items()}


def _read_file(path: Path) -> pd.DataFrame:
    import pandas as pd

    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"dataset file {str(path)!r}: expected one of {', '.join(SUFFIXES)}, got {path.suffix or 'no suffix'!r}")
    try:
        if kind == "csv":
            frame = pd.read_csv(path)
        elif kind == "tsv":
            frame = pd.read_csv(path, sep="\t")
        elif kind == "jsonl":
            frame = pd.read_json(path, lines=True)
        elif kind == "json":
            try:
                frame = pd.read_json(path)
            except ValueError:
                frame = pd.read_json(path, lines=True)
        else:
            frame = pd.read_parquet(path)
    except Exception as e:  # pandas raises many types for unreadable files
        first = first_line(e)
        raise DataError(f"dataset file {str(path)!r} cannot be read as {kind}: {first}") from None
    if len(frame) == 0:
        raise DataError(f"dataset file {str(path)!r} has no rows")
    return frame


def _read_hub(name: str, config_name: str | None) -> dict[str, pd.DataFrame]:
    import datasets

    try:
        loaded = datasets.load_dataset(name, config_name)
    except Exception as e:  # offline, unknown name, missing config: all end here
        from hpsearch.search.hub import is_offline

        first = first_line(e)
        if is_offline():
            raise DataError(
                f"dataset {name!r} is not a local path, not in the Hugging Face cache, and the Hub is "
                "unreachable (offline); pass an existing folder or CSV/JSON/JSONL/Parquet file"
            ) from None
        raise DataError(
            f"dataset {name!r} is not a local path and could not be loaded from the Hub ({first}); "
            "pass an existing folder or file, or check the name and your connection"
        ) from None
    frames = {}
    for split, names in _SPLIT_NAMES.items():
        for candidate in names:
            if candidate in loaded:
                ds = loaded[candidate]
                frame = ds.to_pandas()
                label_feature = next((ds.features[c] for c in _LABEL_CANDIDATES if c in ds.features), None)
                if label_feature is not None and hasattr(label_feature, "names"):
                    frame.attrs["label_names"] = list(label_feature.names)
                frames[split] = frame
                break
    if "train" not in frames:
        raise DataError(f"dataset {name!r} has no train split (it has: {', '.join(loaded)})")
    return frames


# --------------------------------------------------------------------------- shaping


def _make_task(frames: dict[str, pd.DataFrame], config: SearchConfig, *, name: str, hub_id: str | None) -> Task:
    columns = list(frames["train"].columns)
    text, pair = _text_columns(columns, config)
    label = _label_column(columns, config)
    notes: list[str] = []
    for split, frame in frames.items():
        missing = [c for c in (text, pair, label) if c is not None and c not in frame.columns]
        if missing:
            raise DataError(f"{split} split has no column {missing[0]!r}; its columns are: {', '.join(map(str, frame.columns))}")
    # Hub test splits without labels (GLUE marks them -1) cannot be scored: drop them.
    if "test" in frames and _unlabelled(frames["test"][label]):
        del frames["test"]
        notes.append("the test split has no labels and was not used")
    for split, frame in frames.items():
        if len(frame) == 0:
            raise DataError(f"{split} split is empty; every split needs at least one row")
    names, ids = _label_ids(frames, label)
    splits = {
        split: {
            text: _texts(frame[text], split, text),
            **({pair: _texts(frame[pair], split, pair)} if pair else {}),
            "label": ids[split],
        }
        for split, frame in frames.items()
    }
    if len(set(splits["train"]["label"])) < 2:
        raise DataError(f"the training split has a single class ({names[splits['train']['label'][0]]!r}); classification needs at least two")
    if "validation" not in splits:
        splits["train"], splits["validation"] = _carve_validation(splits["train"], config.recipe.seed)
        notes.append(
            f"no validation split: {len(splits['validation']['label'])} rows "
            f"({VALIDATION_FRACTION:.0%} of train, stratified, seed {config.recipe.seed}) were held out for it"
        )
    for split, limit in (("train", config.max_train_samples), ("validation", config.max_eval_samples), ("test", config.max_eval_samples)):
        if limit is not None and split in splits and len(splits[split]["label"]) > limit:
            splits[split] = _subsample(splits[split], limit, config.recipe.seed)
            notes.append(f"{split} limited to {limit} rows (shuffled with seed {config.recipe.seed})")
    return Task(splits, text, pair, tuple(names), name, hub_id, notes)


def _text_columns(columns: list[str], config: SearchConfig) -> tuple[str, str | None]:
    if config.text_column is not None:
        if config.text_column not in columns:
            raise DataError(f"text column {config.text_column!r} is not in the data; its columns are: {', '.join(map(str, columns))}")
        if config.text_pair_column is not None and config.text_pair_column not in columns:
            raise DataError(f"text pair column {config.text_pair_column!r} is not in the data; its columns are: {', '.join(map(str, columns))}")
        return config.text_column, config.text_pair_column
    if "sentence1" in columns and "sentence2" in columns:
        return "sentence1", "sentence2"
    for candidate in _TEXT_CANDIDATES:
        if candidate in columns:
            return candidate, None
    raise DataError(
        f"no text column found (looked for text, sentence1+sentence2, {', '.join(_TEXT_CANDIDATES[1:])}); "
        f"its columns are: {', '.join(map(str, columns))}; name one with --text-column"
    )


def _label_column(columns: list[str], config: SearchConfig) -> str:
    if config.label_column is not None:
        if config.label_column not in columns:
            raise DataError(f"label column {config.label_column!r} is not in the data; its columns are: {', '.join(map(str, columns))}")
        return config.label_column
    for candidate in _LABEL_CANDIDATES:
        if candidate in columns:
            return candidate
    raise DataError(f"no label column found (looked for label, labels); its columns are: {', '.join(map(str, columns))}; name one with --label-column")


def _unlabelled(values: pd.Series) -> bool:
    import pandas as pd

    numeric = pd.to_numeric(values, errors="coerce")
    return bool(values.isna().all() or (numeric.notna().all() and (numeric < 0).all()))


def _label_ids(frames: dict[str, pd.DataFrame], column: str) -> tuple[list[str], dict[str, list[int]]]:
    """Map labels to ids 0..K-1: integer labels keep their order, strings are sorted."""
    values = {split: frame[column].tolist() for split, frame in frames.items()}
    for split, vals in values.items():
        bad = [v for v in vals if not _is_label(v)]
        if bad:
            raise DataError(
                f"{split} split: labels must be integers or strings, got {type(bad[0]).__name__} {bad[0]!r} "
                f"in column {column!r}"
            )
    kinds = {type(_as_label(v)) for vals in values.values() for v in vals}
    if len(kinds) > 1:
        raise DataError(f"column {column!r} mixes integer and string labels; use one kind")
    train = sorted({_as_label(v) for v in values["train"]})
    hub_names = frames["train"].attrs.get("label_names")
    if hub_names and all(isinstance(v, int) and 0 <= v < len(hub_names) for v in train):
        names = list(hub_names)
        index = {i: i for i in range(len(names))}
    elif kinds == {int} and train == list(range(len(train))):
        names = [str(v) for v in train]
        index = {v: v for v in train}
    else:
        names = [str(v) for v in train]
        index = {v: i for i, v in enumerate(train)}
    ids = {}
    for split, vals in values.items():
        unknown = sorted({_as_label(v) for v in vals} - set(index), key=str)
        if unknown:
            raise DataError(f"{split} split has label {unknown[0]!r}, which the training split does not have")
        ids[split] = [index[_as_label(v)] for v in vals]
    return names, ids


def _is_label(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return value != ""
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return value == value and float(value).is_integer()
    return hasattr(value, "item") and _is_label(value.item())


def _as_label(value: Any) -> int | str:
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    return int(value) if isinstance(value, float) else value


def _texts(values: pd.Series, split: str, column: str) -> list[str]:
    if values.isna().all():
        raise DataError(f"{split} split: column {column!r} has no text")
    return ["" if v is None or v != v else str(v) for v in values.tolist()]


def _carve_validation(train: dict[str, list[Any]], seed: int) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    from sklearn.model_selection import train_test_split

    labels = train["label"]
    indices = list(range(len(labels)))
    n_val = max(1, round(len(labels) * VALIDATION_FRACTION))
    counts = {label: labels.count(label) for label in set(labels)}
    stratify = labels if min(counts.values()) >= 2 and n_val >= len(counts) else None
    if len(labels) < 2:
        raise DataError("the training split has a single row; it cannot also give a validation split")
    keep, held = train_test_split(indices, test_size=n_val, random_state=seed, stratify=stratify)
    return _take(train, sorted(keep)), _take(train, sorted(held))


def _subsample(split: dict[str, list[Any]], limit: int, seed: int) -> dict[str, list[Any]]:
    indices = list(range(len(split["label"])))
    random.Random(seed).shuffle(indices)
    return _take(split, indices[:limit])


def _take(split: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
    return {column: [values[i] for i in indices] for column, values in split.items()}


# --------------------------------------------------------------------------- tokens


def tokenize_task(task: Task, tokenizer: Any, max_length: int) -> dict[str, Any]:
    """Tokenise every split once; evaluation splits are sorted by length for less padding.

    Returns:
        split -> ``datasets.Dataset`` with ``input_ids``, ``attention_mask`` (and
        ``token_type_ids`` where the tokenizer makes them) and ``labels``. Padding is left
        to the collator, per batch.
    """
    import datasets

    out = {}
    for split, columns in task.splits.items():
        texts = columns[task.text_column]
        pairs = columns[task.text_pair_column] if task.text_pair_column else None
        encoded = dict(tokenizer(texts, pairs, truncation=True, max_length=max_length))
        encoded["labels"] = list(columns["label"])
        if split != "train":
            # Metrics do not depend on order; batching similar lengths wastes less padding.
            order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
            encoded = {k: [v[i] for i in order] for k, v in encoded.items()}
        out[split] = datasets.Dataset.from_dict(encoded)
    return out
