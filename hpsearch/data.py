"""Data: the built-in task, local files or a Hub dataset, made ready for classification.

:func:`load_task` reads the splits once with the `datasets` library, finds the text and
label columns, encodes labels as a ``ClassLabel``, carves a stratified validation split
when there is none and subsamples. :func:`tokenize_task` turns the texts into token ids
once per run, so that no trial pays for it again.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.builtin import builtin_reviews
from hpsearch.config import BUILTIN_DATASET, SearchConfig
from hpsearch.errors import DataError, first_line
from hpsearch.hub import dataset_revision, is_offline
from hpsearch.schema import DataFacts

if TYPE_CHECKING:
    from collections.abc import Iterator

    import datasets

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
# The `datasets` builder and its options for each kind; the "json" builder reads both a
# file that is one JSON array and JSON lines.
_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "csv": ("csv", {}),
    "tsv": ("csv", {"delimiter": "\t"}),
    "json": ("json", {}),
    "jsonl": ("json", {}),
    "parquet": ("parquet", {}),
}
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
    revision: str | None = None  # the Hub dataset's commit (hpsearch.hub.dataset_revision)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def average(self) -> str:
        """How F1, precision and recall are averaged: binary for two classes, else macro."""
        return "binary" if self.num_labels == 2 else "macro"

    def size(self, split: str) -> int:
        return len(self.splits[split]["label"]) if split in self.splits else 0

    def facts(self) -> DataFacts:
        """What the study stores about the data (split sizes and class counts as integers)."""
        return DataFacts(
            name=self.name,
            hub_id=self.hub_id,
            text_column=self.text_column,
            text_pair_column=self.text_pair_column,
            label_names=[str(n) for n in self.label_names],
            sizes={s: self.size(s) for s in self.splits},
            class_counts={
                s: [cols["label"].count(i) for i in range(self.num_labels)] for s, cols in self.splits.items()
            },
            notes=list(self.notes),
            revision=self.revision,
        )


def load_task(config: SearchConfig) -> Task:
    """Read the configured dataset and make it a :class:`Task`.

    Raises:
        DataError: The dataset cannot be found or read, a column is missing, a split is
            empty, the labels are unusable, or training has a single class.
    """
    import datasets

    if config.dataset == BUILTIN_DATASET:
        data = {
            split: datasets.Dataset.from_pandas(frame, preserve_index=False)
            for split, frame in builtin_reviews().items()
        }
        name, hub_id = "hpsearch built-in reviews (synthetic)", None
    elif Path(config.dataset).exists():
        data = _read_local(Path(config.dataset))
        name, hub_id = Path(config.dataset).name or config.dataset, None
    elif looks_like_path(config.dataset):
        raise DataError(
            f"dataset path {config.dataset!r} does not exist; "
            "pass an existing folder or CSV/TSV/JSON/JSONL/Parquet file"
        )
    else:
        data = _read_hub(config.dataset, config.dataset_config)
        name, hub_id = config.dataset + (f" ({config.dataset_config})" if config.dataset_config else ""), config.dataset
    with _quiet():
        task = _make_task(data, config, name=name, hub_id=hub_id)
    if hub_id is not None:
        task.revision = dataset_revision(hub_id)
    return task


def looks_like_path(name: str) -> bool:
    """A name that can only be meant as a local path, never a Hub id (``user/name``)."""
    return (
        name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or Path(name).suffix.lower() in SUFFIXES
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide `datasets`' progress bars and logged read errors: a bad file is one DataError line."""
    import datasets

    verbosity, bars_were_off = datasets.logging.get_verbosity(), datasets.are_progress_bars_disabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not bars_were_off:
            datasets.enable_progress_bars()


# --------------------------------------------------------------------------- sources


def _read_local(path: Path) -> dict[str, datasets.Dataset]:
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
            f"dataset folder {str(path)!r} has no train file; expected train.csv, train.tsv, train.jsonl, "
            f"train.json or train.parquet (found: {found})"
        )
    # One file at a time, so that a folder may mix formats and an error names its file.
    return {split: _read_file(f) for split, f in files.items()}


def _read_file(path: Path) -> datasets.Dataset:
    import datasets

    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"dataset file {str(path)!r}: expected one of {', '.join(SUFFIXES)}, got {path.suffix or 'no suffix'!r}"
        )
    # The readers fail on a zero-byte file in a different way for each format.
    if path.stat().st_size == 0:
        raise DataError(f"dataset file {str(path)!r} has no rows")
    builder, options = _BUILDERS[kind]
    try:
        # A throwaway cache: the file is read afresh on every run, as a user who edits it
        # expects, and no Arrow copy of it is left behind in the Hugging Face cache.
        with _quiet(), tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as cache:
            return datasets.load_dataset(
                builder, data_files={"train": str(path)}, split="train", cache_dir=cache, keep_in_memory=True, **options
            )
    except Exception as e:  # the readers raise many types for unreadable files
        # `datasets` reports a file with a header but no rows only through this message.
        if isinstance(e, ValueError) and "corresponds to no data" in str(e):
            raise DataError(f"dataset file {str(path)!r} has no rows") from None
        raise DataError(
            f"dataset file {str(path)!r} cannot be read as {kind}: {first_line(e.__cause__ or e)}"
        ) from None


def _read_hub(name: str, config_name: str | None) -> dict[str, datasets.Dataset]:
    import datasets

    try:
        # In memory, so that encoding, carving and sampling write nothing into the cache.
        loaded = datasets.load_dataset(name, config_name, keep_in_memory=True)
    except Exception as e:  # offline, unknown name, missing config: all end here
        first = first_line(e)
        if is_offline():
            raise DataError(
                f"dataset {name!r} is not a local path, not in the Hugging Face cache, and the Hub is "
                "unreachable (offline); pass an existing folder or CSV/TSV/JSON/JSONL/Parquet file"
            ) from None
        raise DataError(
            f"dataset {name!r} is not a local path and could not be loaded from the Hub ({first}); "
            "pass an existing folder or file, or check the name and your connection"
        ) from None
    found = {split: next((n for n in names if n in loaded), None) for split, names in _SPLIT_NAMES.items()}
    data = {split: loaded[n] for split, n in found.items() if n is not None}
    if "train" not in data:
        raise DataError(f"dataset {name!r} has no train split (it has: {', '.join(loaded)})")
    return data


# --------------------------------------------------------------------------- shaping


def _make_task(data: dict[str, datasets.Dataset], config: SearchConfig, *, name: str, hub_id: str | None) -> Task:
    text, pair = _text_columns(data["train"].column_names, config)
    label = _label_column(data["train"].column_names, config)
    data = _select_columns(data, [c for c in (text, pair, label) if c is not None])
    notes: list[str] = []
    # Hub test splits without labels (GLUE marks them -1) cannot be scored: drop them.
    if "test" in data and _unlabelled(data["test"][label][:]):
        del data["test"]
        notes.append("the test split has no labels and was not used")
    for split, ds in data.items():
        if len(ds) == 0:
            raise DataError(f"{split} split is empty; every split needs at least one row")
    data, names = _encode_labels(data, label)
    _check_texts(data, [c for c in (text, pair) if c is not None])
    train_ids = data["train"][label][:]
    if len(set(train_ids)) < 2:
        raise DataError(
            f"the training split has a single class ({names[train_ids[0]]!r}); classification needs at least two"
        )
    seed = config.recipe.seed
    if "validation" not in data:
        data["train"], data["validation"], stratified = _carve_validation(data["train"], label, seed)
        notes.append(
            f"no validation split: {len(data['validation'])} rows ({VALIDATION_FRACTION:.0%} of train, "
            f"{'stratified' if stratified else 'not stratified'}, seed {seed}) were held out for it"
        )
    for split, limit in (
        ("train", config.max_train_samples),
        ("validation", config.max_eval_samples),
        ("test", config.max_eval_samples),
    ):
        if limit is not None and split in data and len(data[split]) > limit:
            data[split] = data[split].shuffle(seed=seed).select(range(limit))
            notes.append(f"{split} limited to {limit} rows (shuffled with seed {seed})")
    splits = {split: _columns(ds, text, pair, label) for split, ds in data.items()}
    return Task(splits, text, pair, tuple(names), name, hub_id, notes)


def _select_columns(data: dict[str, datasets.Dataset], columns: list[str]) -> dict[str, datasets.Dataset]:
    for split, ds in data.items():
        missing = [c for c in columns if c not in ds.column_names]
        if missing:
            raise DataError(
                f"{split} split has no column {missing[0]!r}; its columns are: {', '.join(map(str, ds.column_names))}"
            )
    return {split: ds.select_columns(columns) for split, ds in data.items()}


def _text_columns(columns: list[str], config: SearchConfig) -> tuple[str, str | None]:
    if config.text_column is not None:
        if config.text_column not in columns:
            raise DataError(
                f"text column {config.text_column!r} is not in the data; "
                f"its columns are: {', '.join(map(str, columns))}"
            )
        if config.text_pair_column is not None and config.text_pair_column not in columns:
            raise DataError(
                f"text pair column {config.text_pair_column!r} is not in the data; "
                f"its columns are: {', '.join(map(str, columns))}"
            )
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
            raise DataError(
                f"label column {config.label_column!r} is not in the data; "
                f"its columns are: {', '.join(map(str, columns))}"
            )
        return config.label_column
    for candidate in _LABEL_CANDIDATES:
        if candidate in columns:
            return candidate
    raise DataError(
        f"no label column found (looked for label, labels); its columns are: {', '.join(map(str, columns))}; "
        "name one with --label-column"
    )


def _unlabelled(values: list[Any]) -> bool:
    if all(v is None or v != v for v in values):
        return True
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0 for v in values)


def _encode_labels(data: dict[str, datasets.Dataset], column: str) -> tuple[dict[str, datasets.Dataset], list[str]]:
    """Make ``column`` a ``ClassLabel`` with the same names in every split.

    A Hub ``ClassLabel`` keeps its names; strings are sorted; integers keep their order,
    so labels that are already 0..K-1 keep their values as ids.
    """
    import datasets

    values = {split: _label_values(ds[column][:], split, column) for split, ds in data.items()}
    kinds = {type(v) for vals in values.values() for v in vals}
    if len(kinds) > 1:
        raise DataError(f"column {column!r} mixes integer and string labels; use one kind")
    train = sorted(set(values["train"]))
    feature = data["train"].features[column]
    if isinstance(feature, datasets.ClassLabel) and all(0 <= v < feature.num_classes for v in train):
        _check_known(values, set(range(feature.num_classes)))
        return data, list(feature.names)
    _check_known(values, set(train))
    names = [str(v) for v in train]
    if kinds == {str}:
        # Encoded on train alone: every other split's labels are among train's (checked).
        encoded = data["train"].class_encode_column(column)
        target = encoded.features[column]
        return {
            split: encoded if split == "train" else ds.cast_column(column, target) for split, ds in data.items()
        }, names
    target = datasets.ClassLabel(names=names)
    index = {v: i for i, v in enumerate(train)}
    return {split: _to_ids(ds, column, target, index) for split, ds in data.items()}, names


def _label_values(values: list[Any], split: str, column: str) -> list[int | str]:
    for v in values:
        if v is None or v != v:
            raise DataError(
                f"{split} split: labels must be integers or strings, got an empty value in column {column!r}"
            )
        if not _is_label(v):
            raise DataError(
                f"{split} split: labels must be integers or strings, got {type(v).__name__} {v!r} in column {column!r}"
            )
    # Integral floats (a JSON "1.0") are integer labels.
    return [int(v) if isinstance(v, float) else v for v in values]


def _is_label(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return value != ""
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _check_known(values: dict[str, list[int | str]], known: set[int | str]) -> None:
    for split, vals in values.items():
        unknown = sorted(set(vals) - known, key=str)
        if unknown:
            raise DataError(f"{split} split has label {unknown[0]!r}, which the training split does not have")


def _to_ids(ds: datasets.Dataset, column: str, target: datasets.ClassLabel, index: dict[Any, int]) -> datasets.Dataset:
    features = ds.features.copy()
    features[column] = target
    return ds.map(lambda batch: {column: [index[int(v)] for v in batch[column]]}, batched=True, features=features)


def _check_texts(data: dict[str, datasets.Dataset], columns: list[str]) -> None:
    for split, ds in data.items():
        for column in columns:
            if all(v is None or v != v for v in ds[column][:]):
                raise DataError(f"{split} split: column {column!r} has no text")


def _carve_validation(
    train: datasets.Dataset, column: str, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset, bool]:
    """Hold out a validation split, stratified by label when every class can spare rows."""
    if len(train) < 2:
        raise DataError("the training split has a single row; it cannot also give a validation split")
    n_val = max(1, round(len(train) * VALIDATION_FRACTION))
    counts = Counter(train[column][:])
    # Stratifying needs two rows of each class and a validation row for each class.
    stratify = column if min(counts.values()) >= 2 and n_val >= len(counts) else None
    parts = train.train_test_split(test_size=n_val, seed=seed, stratify_by_column=stratify)
    return parts["train"], parts["test"], stratify is not None


def _columns(ds: datasets.Dataset, text: str, pair: str | None, label: str) -> dict[str, list[Any]]:
    """Plain lists for the task; a missing text becomes an empty string."""
    columns = {c: ["" if v is None or v != v else str(v) for v in ds[c][:]] for c in (text, pair) if c}
    return {**columns, "label": ds[label][:]}


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
