"""Data: the built-in task, local files, column detection, labels, validation carving, tokens."""

from __future__ import annotations

import pytest
from conftest import write_rows

from hpsearch import DataError, load_config
from hpsearch.data import builtin_reviews, load_task, tokenize_task


def test_the_builtin_task_is_deterministic_and_balanced():
    a, b = builtin_reviews(), builtin_reviews()
    assert all(a[s].equals(b[s]) for s in a)
    assert {s: len(f) for s, f in a.items()} == {"train": 300, "validation": 100, "test": 100}
    counts = a["train"]["label"].value_counts()
    assert set(counts.index) == {"negative", "positive"} and counts.min() > 120


def test_the_builtin_task_is_not_separable_by_a_bag_of_words():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    frames = builtin_reviews()
    vectorizer = CountVectorizer()
    model = LogisticRegression(max_iter=1000).fit(vectorizer.fit_transform(frames["train"]["text"]), frames["train"]["label"])
    accuracy = model.score(vectorizer.transform(frames["validation"]["text"]), frames["validation"]["label"])
    assert accuracy < 0.8


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
def test_a_folder_of_split_files_in_each_format(tmp_path, suffix):
    rows = [{"text": f"t{i}", "label": i % 3} for i in range(12)]
    write_rows(tmp_path / f"train{suffix}", rows)
    write_rows(tmp_path / f"dev{suffix}", rows[:6])
    write_rows(tmp_path / f"test{suffix}", rows[:3])
    task = load_task(load_config(None, {"dataset": str(tmp_path)}))
    assert {s: task.size(s) for s in task.splits} == {"train": 12, "validation": 6, "test": 3}
    assert task.label_names == ("0", "1", "2") and task.average == "macro"


def test_integer_labels_that_are_not_0_to_k_are_mapped_and_named(tmp_path):
    path = write_rows(tmp_path / "d.csv", [{"text": f"t{i}", "label": (3, 7)[i % 2]} for i in range(20)])
    task = load_task(load_config(None, {"dataset": str(path)}))
    assert task.label_names == ("3", "7")
    assert set(task.splits["train"]["label"]) == {0, 1}


def test_a_missing_validation_split_is_carved_from_train_with_the_seed(tmp_path):
    path = write_rows(tmp_path / "d.csv", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(50)])
    config = load_config(None, {"dataset": str(path)})
    first, second = load_task(config), load_task(config)
    assert (first.size("train"), first.size("validation")) == (45, 5)
    assert first.splits == second.splits
    assert any("no validation split" in n for n in first.notes)


def test_a_validation_label_unknown_to_train_is_an_error(tmp_path):
    write_rows(tmp_path / "train.csv", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}])
    write_rows(tmp_path / "validation.csv", [{"text": "z", "label": "c"}])
    with pytest.raises(DataError, match=r"validation split has label 'c', which the training split does not have"):
        load_task(load_config(None, {"dataset": str(tmp_path)}))


def test_max_samples_limit_each_split(tmp_path):
    task = load_task(load_config(None, {"max_train_samples": 40, "max_eval_samples": 10}))
    assert {s: task.size(s) for s in task.splits} == {"train": 40, "validation": 10, "test": 10}


def test_tokens_are_made_once_and_evaluation_is_sorted_by_length(tiny_model):
    from transformers import AutoTokenizer

    task = load_task(load_config())
    tokenized = tokenize_task(task, AutoTokenizer.from_pretrained(tiny_model), max_length=16)
    lengths = [len(ids) for ids in tokenized["validation"]["input_ids"]]
    assert lengths == sorted(lengths) and max(lengths) <= 16
    assert sorted(tokenized["validation"]["labels"]) == sorted(task.splits["validation"]["label"])
