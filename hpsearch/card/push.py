"""``hpsearch push best REPO_ID``: the best-model folder to a Hub model repository, in one commit.

:func:`push_files` decides what goes (the model, tokenizer, card and plots; not hpsearch's
own bookkeeping), and :func:`push_folder` uploads exactly that list with
``huggingface_hub.upload_folder``, so ``--dry-run`` shows what a push sends. A folder
without a card is refused; so is a push while the Hub is unreachable or no token is set.
Every check runs before anything is sent, and ``upload_folder`` is a single commit, so a
push either lands whole or not at all.
"""

from __future__ import annotations

from pathlib import Path

from hpsearch.bestmodel import MARKER_FILE
from hpsearch.card.render import MARKER
from hpsearch.errors import CardError, first_line
from hpsearch.hub import offline_if_unreachable

# What stays behind: the kept-model marker is hpsearch's bookkeeping, not the model's.
_LEFT_OUT = (MARKER_FILE,)


class PushError(CardError):
    """The Hub could not be reached or refused the upload."""


def push_files(folder: Path) -> list[str]:
    """The files ``push`` uploads, as paths inside the repository, sorted.

    Raises:
        CardError: No best model yet, or no card written for it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CardError(f"{folder} does not exist: run `hpsearch run` first, then `hpsearch card best`")
    card = folder / "README.md"
    if not card.is_file() or MARKER not in card.read_text(encoding="utf-8", errors="replace"):
        raise CardError(f"{folder} has no model card; run `hpsearch card best` first")
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return sorted(f for f in files if f not in _LEFT_OUT and not any(part.startswith(".") for part in f.split("/")))


def push_folder(folder: Path, repo_id: str, *, private: bool = False) -> str:
    """Upload :func:`push_files` of ``folder`` to the model repository ``repo_id`` (created
    if missing) in one commit; returns the repository's URL.

    Raises:
        CardError: As :func:`push_files`.
        PushError: The Hub is unreachable (or offline mode is on), no token is set, or the
            Hub refused; nothing was uploaded.
    """
    from huggingface_hub import HfApi

    files = push_files(folder)
    if offline_if_unreachable():
        raise PushError(
            "the Hugging Face Hub cannot be reached (offline, or HF_HUB_OFFLINE is set); nothing was pushed"
        )
    api = HfApi()
    try:
        api.whoami()
    except Exception as e:
        raise PushError(
            f"the Hub did not accept a token ({first_line(e)}); run `hf auth login` or set HF_TOKEN; nothing was pushed"
        ) from None
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            allow_patterns=files,
            commit_message="Upload model and card with hpsearch",
        )
    except Exception as e:
        raise PushError(f"pushing to {repo_id} failed: {first_line(e)}") from None
    return str(url)
