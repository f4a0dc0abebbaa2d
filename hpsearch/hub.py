"""The Hugging Face Hub: reachable or not, decided once, before anything loads from it."""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlsplit

# Seconds to wait for the Hub to accept a connection before treating it as unreachable.
PROBE_TIMEOUT = 3.0


def offline_if_unreachable() -> bool:
    """Switch huggingface_hub and datasets to offline mode when the Hub does not answer.

    Offline, cached models and datasets still load, and a missing one fails at once with a
    clear error, instead of after a minute of retries with a screenful of warnings.
    Returns whether the process is now offline.
    """
    import huggingface_hub.constants as hub_constants

    if hub_constants.HF_HUB_OFFLINE:
        return True
    endpoint = urlsplit(hub_constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=PROBE_TIMEOUT).close()
        return False
    except OSError:
        pass
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub_constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = datasets_config.HF_DATASETS_OFFLINE = True
    return True


def is_offline() -> bool:
    import huggingface_hub.constants as hub_constants

    return bool(hub_constants.HF_HUB_OFFLINE)


def dataset_revision(repo_id: str, *, cache_dir: str | None = None) -> str | None:
    """The commit of Hub dataset ``repo_id`` that a load reads: the Hub's current one where it
    answers, else the one the local cache's ``main`` points at (``cache_dir``, or
    huggingface_hub's own); None where neither says."""
    import huggingface_hub

    if not is_offline():
        try:
            return huggingface_hub.HfApi().dataset_info(repo_id).sha
        except Exception:  # noqa: BLE001 - unknown to the Hub or unreachable: the cache may know
            pass
    try:
        cache = huggingface_hub.scan_cache_dir(cache_dir)
    except huggingface_hub.CacheNotFound:
        return None
    for repo in cache.repos:
        if repo.repo_type == "dataset" and repo.repo_id == repo_id:
            return next((r.commit_hash for r in repo.revisions if "main" in r.refs), None)
    return None
