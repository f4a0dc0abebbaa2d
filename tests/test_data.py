"""Data: the built-in task, local files, column detection, labels, validation carving, tokens."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import write_rows

from hpsearch import DataError, load_config
from hpsearch.builtin import builtin_reviews
from hpsearch.data import load_task, tokenize_task

# sha256 of the built-in task's splits as JSON: runs on the built-in data are reproducible
# only while its rows, labels, split boundaries and order stay exactly these.
BUILTIN_SPLITS_SHA256 = "93a8ca23a0ce79be923392ed0e538dbd6486f158930dfefd7e709c650682f8c7"


def _load(dataset, **overrides):
    return load_task(load_config(None, {"dataset": str(dataset), **overrides}))


def test_the_builtin_task_is_deterministic_and_balanced():
    a, b = builtin_reviews(), builtin_reviews()
    assert all(a[s].equals(b[s]) for s in a)
    assert {s: len(f) for s, f in a.items()} == {"train": 300, "validation": 100, "test": 100}
    counts = a["train"]["label"].value_counts()
    assert set(counts.index) == {"negative", "positive"} and counts.min() > 120


def test_the_builtin_task_loads_to_the_same_rows_labels_and_order():
    task = load_task(load_config())
    assert hashlib.sha256(json.dumps(task.splits, sort_keys=True).encode()).hexdigest() == BUILTIN_SPLITS_SHA256
    frames = builtin_reviews()
    for split, frame in frames.items():
        assert task.splits[split]["text"] == frame["text"].tolist()
        assert [task.label_names[i] for i in task.splits[split]["label"]] == frame["label"].tolist()
    assert task.label_names == ("negative", "positive") and task.notes == []


def test_the_builtin_task_is_not_separable_by_a_bag_of_words():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    frames = builtin_reviews()
    vectorizer = CountVectorizer()
    model = LogisticRegression(max_iter=1000).fit(
        vectorizer.fit_transform(frames["train"]["text"]), frames["train"]["label"]
    )
    accuracy = model.score(vectorizer.transform(frames["validation"]["text"]), frames["validation"]["label"])
    assert accuracy < 0.8


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
def test_a_folder_of_split_files_in_each_format(tmp_path, suffix):
    rows = [{"text": f"t{i}", "label": i % 3} for i in range(12)]
    write_rows(tmp_path / f"train{suffix}", rows)
    write_rows(tmp_path / f"dev{suffix}", rows[:6])
    write_rows(tmp_path / f"test{suffix}", rows[:3])
    task = _load(tmp_path)
    assert {s: task.size(s) for s in task.splits} == {"train": 12, "validation": 6, "test": 3}
    assert task.label_names == ("0", "1", "2") and task.average == "macro"


def test_a_tsv_file_is_split_on_tabs_only(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text(
        "text\tlabel\n" + "".join(f"fine, but loud {i}\t{'xy'[i % 2]}\n" for i in range(20)), encoding="utf-8"
    )
    task = _load(path)
    assert task.label_names == ("x", "y")
    assert all(t.startswith("fine, but loud ") for t in task.splits["train"]["text"])


@pytest.mark.parametrize("layout", ["array", "lines"])
def test_a_json_file_may_be_one_array_or_json_lines(tmp_path, layout):
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(20)]
    text = json.dumps(rows) if layout == "array" else "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "d.json").write_text(text, encoding="utf-8")
    task = _load(tmp_path / "d.json")
    assert (task.size("train"), task.size("validation"), task.label_names) == (18, 2, ("a", "b"))


@pytest.mark.parametrize(
    ("train", "validation", "names", "train_ids", "validation_ids"),
    [
        (["pear", "apple", "zebra", "apple"], ["zebra", "pear"], ("apple", "pear", "zebra"), [1, 0, 2, 0], [2, 1]),
        ([2, 0, 1, 0], [1, 2], ("0", "1", "2"), [2, 0, 1, 0], [1, 2]),
        ([10, 3, 7, 3], [7, 10], ("3", "7", "10"), [2, 0, 1, 0], [1, 2]),
    ],
    ids=["strings-sorted", "ints-0-to-k-kept", "ints-sorted-by-value"],
)
def test_labels_map_to_ids_the_same_way_in_every_split(tmp_path, train, validation, names, train_ids, validation_ids):
    write_rows(tmp_path / "train.csv", [{"text": f"t{i}", "label": v} for i, v in enumerate(train)])
    write_rows(tmp_path / "validation.csv", [{"text": f"v{i}", "label": v} for i, v in enumerate(validation)])
    task = _load(tmp_path)
    assert task.label_names == names
    assert (task.splits["train"]["label"], task.splits["validation"]["label"]) == (train_ids, validation_ids)


def test_integer_labels_that_are_not_0_to_k_are_mapped_and_named(tmp_path):
    path = write_rows(tmp_path / "d.csv", [{"text": f"t{i}", "label": (3, 7)[i % 2]} for i in range(20)])
    task = _load(path)
    assert task.label_names == ("3", "7")
    assert set(task.splits["train"]["label"]) == {0, 1}


def test_a_missing_validation_split_is_carved_from_train_with_the_seed(tmp_path):
    path = write_rows(tmp_path / "d.csv", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(50)])
    config = load_config(None, {"dataset": str(path)})
    first, second = load_task(config), load_task(config)
    assert (first.size("train"), first.size("validation")) == (45, 5)
    assert first.splits == second.splits
    assert sorted(first.splits["train"]["text"] + first.splits["validation"]["text"]) == sorted(
        f"t{i}" for i in range(50)
    )
    assert any(n.startswith("no validation split: 5 rows (10% of train, stratified, seed 42)") for n in first.notes)


def test_the_carved_validation_split_keeps_the_class_proportions(tmp_path):
    path = write_rows(tmp_path / "d.csv", [{"text": f"t{i}", "label": "b" if i % 5 == 0 else "a"} for i in range(100)])
    task = _load(path)
    assert task.facts().class_counts == {"train": [72, 18], "validation": [8, 2]}


def test_a_class_with_one_row_falls_back_to_an_unstratified_carve(tmp_path):
    path = write_rows(tmp_path / "d.csv", [{"text": f"t{i}", "label": "b" if i == 0 else "a"} for i in range(30)])
    task = _load(path)
    assert (task.size("train"), task.size("validation")) == (27, 3)
    assert any("not stratified" in n for n in task.notes)


def test_a_validation_label_unknown_to_train_is_an_error(tmp_path):
    write_rows(tmp_path / "train.csv", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}])
    write_rows(tmp_path / "validation.csv", [{"text": "z", "label": "c"}])
    with pytest.raises(DataError, match=r"validation split has label 'c', which the training split does not have"):
        _load(tmp_path)


def test_hub_class_label_names_are_kept_and_an_unlabelled_test_split_is_dropped(monkeypatch):
    import datasets

    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["neg", "pos"]),
            "idx": datasets.Value("int32"),
        }
    )

    def split(labels):
        return datasets.Dataset.from_dict(
            {"sentence": [f"s{i}" for i in range(len(labels))], "label": labels, "idx": list(range(len(labels)))},
            features=features,
        )

    loaded = datasets.DatasetDict({"train": split([1, 0] * 10), "validation": split([0, 1]), "test": split([-1, -1])})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config_name, **kwargs: loaded)
    task = _load("acme/reviews")
    assert (task.label_names, task.hub_id, task.text_column) == (("neg", "pos"), "acme/reviews", "sentence")
    assert list(task.splits) == ["train", "validation"] and task.splits["validation"]["label"] == [0, 1]
    assert "the test split has no labels and was not used" in task.notes


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "missing.csv",
            None,
            r"dataset path .*missing\.csv' does not exist; pass an existing folder or CSV/TSV/JSON/JSONL/Parquet file",
        ),
        ("d.txt", "text,label\n", r"d\.txt': expected one of \.csv, \.tsv, \.json, \.jsonl, \.parquet, got '\.txt'"),
        ("header.csv", "text,label\n", r"header\.csv' has no rows$"),
        ("zero.jsonl", "", r"zero\.jsonl' has no rows$"),
        ("empty.json", "[]", r"empty\.json' has no rows$"),
        ("bad.parquet", "not parquet", r"bad\.parquet' cannot be read as parquet: .*Parquet magic bytes"),
        ("bad.jsonl", '{"text": "a", "label": 1}\n{oops\n', r"bad\.jsonl' cannot be read as jsonl: "),
        (
            "half.csv",
            "text,label\nx,\ny,1\n",
            r"train split: labels must be integers or strings, got an empty value in column 'label'",
        ),
    ],
)
def test_an_unusable_file_is_one_line_naming_it(tmp_path, capfd, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as caught:
        _load(tmp_path / name)
    assert "\n" not in str(caught.value)
    assert capfd.readouterr().err == ""


def test_a_folder_without_a_train_file_lists_what_it_found(tmp_path):
    write_rows(tmp_path / "validation.csv", [{"text": "x", "label": "a"}])
    with pytest.raises(
        DataError, match=r"has no train file; expected train\.csv, train\.tsv, .* \(found: validation\.csv\)"
    ):
        _load(tmp_path)


def test_a_folder_may_mix_formats(tmp_path):
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(10)]
    write_rows(tmp_path / "train.csv", rows)
    write_rows(tmp_path / "dev.jsonl", rows[:4])
    task = _load(tmp_path)
    assert (task.size("train"), task.size("validation"), task.label_names) == (10, 4, ("a", "b"))


def test_max_samples_limit_each_split(tmp_path):
    task = load_task(load_config(None, {"max_train_samples": 40, "max_eval_samples": 10}))
    assert {s: task.size(s) for s in task.splits} == {"train": 40, "validation": 10, "test": 10}


def test_max_samples_draw_the_same_distinct_rows_for_the_same_seed(tmp_path):
    path = write_rows(tmp_path / "d.csv", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(60)])
    first, second = _load(path, max_train_samples=20), _load(path, max_train_samples=20)
    assert first.splits == second.splits and first.size("train") == 20
    assert len(set(first.splits["train"]["text"])) == 20


def test_tokens_are_made_once_and_evaluation_is_sorted_by_length(tiny_model):
    from transformers import AutoTokenizer

    task = load_task(load_config())
    tokenized = tokenize_task(task, AutoTokenizer.from_pretrained(tiny_model), max_length=16)
    lengths = [len(ids) for ids in tokenized["validation"]["input_ids"]]
    assert lengths == sorted(lengths) and max(lengths) <= 16
    assert sorted(tokenized["validation"]["labels"]) == sorted(task.splits["validation"]["label"])


def test_a_hub_dataset_s_revision_is_read_from_the_cache_offline(tmp_path, monkeypatch):
    """Offline, the commit is the one the Hugging Face cache's ``main`` points at."""
    import huggingface_hub.constants as hub_constants

    from hpsearch.hub import dataset_revision

    sha = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "datasets--acme--reviews"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha, encoding="utf-8")
    (repo / "snapshots" / sha).mkdir(parents=True)
    (repo / "blobs").mkdir()
    blob = repo / "blobs" / "b0"
    blob.write_text("text,label\nfine,1\n", encoding="utf-8")
    (repo / "snapshots" / sha / "train.csv").symlink_to(blob)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    assert dataset_revision("acme/reviews", cache_dir=str(tmp_path)) == sha
    assert dataset_revision("acme/other", cache_dir=str(tmp_path)) is None
