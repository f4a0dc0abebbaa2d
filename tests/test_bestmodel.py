"""The best-model folder: only a better model replaces it, atomically, and crashes are undone."""

from __future__ import annotations

import pytest

from hpsearch.bestmodel import BestModelStore, Marker


def _marker(trial: int, value: float) -> Marker:
    return Marker(trial=trial, value=value, epoch=1, objective="f1")


def _save(text: str):
    def save(folder):
        folder.mkdir()
        (folder / "weights.txt").write_text(text, encoding="utf-8")

    return save


def test_only_a_higher_value_replaces_the_model(tmp_path):
    store = BestModelStore(tmp_path)
    assert store.offer(_marker(3, 0.7), _save("three"))
    assert not store.offer(_marker(4, 0.6), _save("four"))
    assert store.offer(_marker(5, 0.8), _save("five"))
    assert (store.folder / "weights.txt").read_text() == "five"
    assert store.marker().trial == 5


def test_on_a_tie_the_earlier_trial_wins_whatever_finishes_first(tmp_path):
    store = BestModelStore(tmp_path)
    store.offer(_marker(2, 0.8), _save("two"))
    assert store.offer(_marker(1, 0.8), _save("one"))
    assert not store.offer(_marker(3, 0.8), _save("three"))
    assert store.marker().trial == 1


def test_a_failing_save_leaves_the_kept_model_and_no_temporary_folder(tmp_path):
    store = BestModelStore(tmp_path)
    store.offer(_marker(0, 0.5), _save("zero"))

    def broken(folder):
        folder.mkdir()
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.offer(_marker(1, 0.9), broken)
    assert store.marker().trial == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".best-model.tmp")] == []


def test_recover_puts_back_a_model_left_between_the_two_renames(tmp_path):
    store = BestModelStore(tmp_path)
    store.offer(_marker(0, 0.5), _save("zero"))
    store.folder.rename(tmp_path / "best-model.old")  # a crash after the first rename
    (tmp_path / ".best-model.tmp-dead").mkdir()  # and a half-written new model
    store.recover()
    assert (store.folder / "weights.txt").read_text() == "zero"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".best-model.lock")) == ["best-model"]


def test_the_marker_round_trips_and_a_missing_or_broken_one_reads_as_no_model(tmp_path):
    store = BestModelStore(tmp_path)
    assert store.marker() is None
    store.offer(_marker(2, 0.75), _save("two"))
    assert Marker.read(store.folder) == _marker(2, 0.75)
    (store.folder / "hpsearch.json").write_text("{not json", encoding="utf-8")
    assert store.marker() is None
