"""`hpsearch push best REPO_ID`: the exact files, a card first, and one clean line offline."""

from __future__ import annotations

import pytest
from conftest import tiny_run_args

from hpsearch.card.push import push_files


@pytest.fixture
def best_model(workdir, tiny_model, cli):
    code, _, err = cli(*tiny_run_args(tiny_model, "--trials", "1", "--epochs", "1"))
    assert code == 0, err
    return workdir / "studies" / "hpsearch" / "best-model"


def test_push_refuses_a_folder_without_a_card(best_model, cli):
    code, out, err = cli("push", "best", "me/reviews", "--dry-run")
    assert (code, out) == (2, "")
    assert err == "hpsearch: error: studies/hpsearch/best-model has no model card; run `hpsearch card best` first\n"


def test_dry_run_lists_the_files_push_uploads(best_model, cli):
    assert cli("card", "best")[0] == 0
    code, out, err = cli("push", "best", "me/reviews", "--dry-run")
    assert code == 0, err
    listed = out.splitlines()
    assert listed == push_files(best_model)
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(listed)
    assert "hpsearch.json" not in listed and not any(name.startswith(".") for name in listed)


def test_push_offline_is_one_line_and_uploads_nothing(best_model, cli, monkeypatch):
    import huggingface_hub

    def never(*args, **kwargs):
        raise AssertionError("upload_folder called offline")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", never)
    assert cli("card", "best")[0] == 0
    code, out, err = cli("push", "best", "me/reviews")
    assert (code, out) == (2, "")
    assert err == (
        "hpsearch: error: the Hugging Face Hub cannot be reached (offline, or HF_HUB_OFFLINE is set); nothing was "
        "pushed\n"
    )


def test_push_takes_only_best(cli, workdir):
    code, _, err = cli("push", "3", "me/reviews")
    assert code == 2 and "invalid choice: '3'" in err


def test_push_uploads_exactly_the_listed_files_in_one_commit(best_model, cli, monkeypatch):
    import huggingface_hub

    import hpsearch.hub as hub

    calls = []
    monkeypatch.setattr(hub, "offline_if_unreachable", lambda: False)
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", lambda self: {"name": "me"})
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "create_repo",
        lambda self, repo_id, **kw: (
            calls.append(("create", repo_id, kw["private"])) or f"https://huggingface.co/{repo_id}"
        ),
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "upload_folder",
        lambda self, **kw: calls.append(("upload", kw["repo_id"], kw["allow_patterns"])),
    )
    assert cli("card", "best")[0] == 0
    code, out, err = cli("push", "best", "me/reviews", "--private")
    assert code == 0, err
    assert out == "https://huggingface.co/me/reviews\n"
    assert calls == [("create", "me/reviews", True), ("upload", "me/reviews", push_files(best_model))]
