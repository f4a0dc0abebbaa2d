"""``hpsearch push best REPO_ID``: the best-model folder to a Hub model repository, in one commit.

:func:`push_files` decides what goes (the model, tokenizer, card and plots; not hpsearch's
own bookkeeping), and :func:`push_folder` uploads exactly that list with
``huggingface_hub.upload_folder``, so ``--dry-run`` shows what a push sends. A folder
without a card is refused; so is a push while the Hub is unreachable or no token is set.
Every check runs before anything is sent, and ``upload_folder`` is a single commit, so a
push either lands whole or not at all.

An adapter (``[peft]``) names its base model by the study's local ``base-model/`` folder; the
repository gets an ``adapter_config.json`` that names the base model's Hub id instead (the
card's ``base_model``), in the same single commit, and the local file is left as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from hpsearch import hub
from hpsearch.bestmodel import MARKER_FILE
from hpsearch.card.render import MARKER
from hpsearch.errors import CardError, first_line
from hpsearch.training.adapters import ADAPTER_CONFIG, is_adapter

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
    if hub.offline_if_unreachable():
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
    adapter_config = hub_adapter_config(folder)
    message = "Upload model and card with hpsearch"
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if adapter_config is None:
            api.upload_folder(
                folder_path=str(folder),
                repo_id=repo_id,
                repo_type="model",
                allow_patterns=files,
                commit_message=message,
            )
        else:
            operations = _operations(folder, files, adapter_config)
            api.create_commit(repo_id=repo_id, repo_type="model", operations=operations, commit_message=message)
    except Exception as e:
        raise PushError(f"pushing to {repo_id} failed: {first_line(e)}") from None
    return str(url)


def hub_adapter_config(folder: Path) -> bytes | None:
    """The ``adapter_config.json`` to upload for an adapter whose base model has a Hub id (the
    card's ``base_model``): the local one with ``base_model_name_or_path`` set to that id.
    None for a full model, and for an adapter of a local model folder, which keeps its path."""
    base = hub_base_model(folder)
    if not is_adapter(folder) or base is None:
        return None
    config = json.loads((Path(folder) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")


def hub_base_model(folder: Path) -> str | None:
    """The base model's Hub id that the card in ``folder`` names, or None (a local model folder)."""
    from huggingface_hub import ModelCard

    card = Path(folder) / "README.md"
    if not card.is_file():
        return None
    base = ModelCard.load(card).data.base_model
    return (base[0] if base else None) if isinstance(base, list) else base


def local_base_note(folder: Path) -> str | None:
    """One line for the user when ``folder`` is an adapter of a base model with no Hub id."""
    if not is_adapter(folder) or hub_base_model(folder) is not None:
        return None
    base = json.loads((Path(folder) / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    return (
        f"the adapter's base model is the local folder {base}, which has no Hub id, so the pushed adapter names "
        "that path; push the base model too, or push `hpsearch export best --merge PATH`'s full model instead"
    )


def _operations(folder: Path, files: list[str], adapter_config: bytes) -> list[object]:
    """``files`` as one commit's additions, with ``adapter_config.json`` replaced by ``adapter_config``."""
    from huggingface_hub import CommitOperationAdd

    def content(name: str) -> str | bytes:
        return adapter_config if name == ADAPTER_CONFIG else str(Path(folder) / name)

    return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content(name)) for name in files]
