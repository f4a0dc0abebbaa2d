"""The study's artifact store: a trial's card and plots, attached so optuna-dashboard lists them.

The files live under ``studies/<study>/artifacts/`` (Optuna's ``FileSystemArtifactStore``).
They belong to a trial, but Optuna takes no attribute on a finished trial, so the study
holds them, each named after its trial (``trial-3-README.md``). ``hpsearch card`` uploads
what it writes, a run uploads the kept model's card once it exists, and ``hpsearch
dashboard`` serves them.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound

from hpsearch.bestmodel import Marker
from hpsearch.config import SearchConfig
from hpsearch.layout import StudyLayout

_CARD_FILES = ("README.md",)
_PLOT_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg")


def artifact_dir(config: SearchConfig) -> Path:
    """``studies/<study>/artifacts/``: where the artifact store keeps the files."""
    return StudyLayout.of(config).artifacts


def artifact_store(config: SearchConfig) -> optuna.artifacts.FileSystemArtifactStore:
    """The study's artifact store (its folder is made by the first upload)."""
    return optuna.artifacts.FileSystemArtifactStore(artifact_dir(config))


def card_files(folder: Path) -> list[Path]:
    """A card folder's README.md and the plots beside it (not the weights or the tokenizer)."""
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        return []
    plots = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _PLOT_SUFFIXES)
    return [folder / name for name in _CARD_FILES if (folder / name).is_file()] + plots


def artifact_name(trial_number: int, path: str | Path) -> str:
    """What the dashboard lists a trial's card file as: ``trial-3-README.md``."""
    return f"trial-{trial_number}-{Path(path).name}"


def upload_kept_card(study: optuna.Study, config: SearchConfig) -> list[str]:
    """Upload the kept model's card and plots, if written; returns their artifact names."""
    folder = StudyLayout.of(config).best_model
    marker = Marker.read(folder)
    files = card_files(folder)
    # A folder left from an older study of the same name may name a trial this one lacks.
    if marker is None or not files or marker.trial >= len(study.get_trials(deepcopy=False)):
        return []
    return list(upload_card_artifacts(study, marker.trial, files, artifact_dir=artifact_dir(config)))


def upload_card_artifacts(
    study: optuna.Study, trial_number: int, paths: Iterable[str | Path], *, artifact_dir: Path
) -> dict[str, str]:
    """Attach a trial's card files to the study as artifacts the dashboard lists and serves.

    Each file is listed as :func:`artifact_name` (``trial-3-README.md``). A file whose
    content the study already holds under that name is not uploaded again, so refreshing
    an unchanged card adds nothing; a rewritten card adds its new version.

    Args:
        study: The study, opened on its storage.
        trial_number: The trial the files belong to.
        paths: The files.
        artifact_dir: The artifact store's folder, ``studies/<study>/artifacts``
            (:func:`artifact_dir`); :func:`serve` reads from the same folder.

    Returns:
        Artifact name → artifact id.
    """
    Path(artifact_dir).mkdir(parents=True, exist_ok=True)
    store = optuna.artifacts.FileSystemArtifactStore(artifact_dir)
    files = {artifact_name(trial_number, path): Path(path) for path in paths}
    held = _held_digests(study, store, set(files))
    uploaded = {}
    with tempfile.TemporaryDirectory(prefix="hpsearch-upload-") as scratch:
        for name, path in files.items():
            digest = _digest(path.read_bytes())
            if (name, digest) in held:
                uploaded[name] = held[name, digest]
                continue
            # upload_artifact lists a file by its base name: give the copy the listed one.
            copy = Path(scratch) / name
            shutil.copyfile(path, copy)
            mimetype = "text/markdown" if path.suffix.lower() == ".md" else None
            uploaded[name] = optuna.artifacts.upload_artifact(
                artifact_store=store, file_path=str(copy), study_or_trial=study, mimetype=mimetype
            )
    return uploaded


def card_artifacts(study: optuna.Study) -> list[optuna.artifacts.ArtifactMeta]:
    """The study's artifacts (those :func:`upload_card_artifacts` added among them)."""
    return optuna.artifacts.get_all_artifact_meta(study)


def _held_digests(
    study: optuna.Study, store: optuna.artifacts.FileSystemArtifactStore, names: set[str]
) -> dict[tuple[str, str], str]:
    """(name, sha256) → artifact id, for the study's artifacts of these names whose file the store still has."""
    held = {}
    for meta in card_artifacts(study):
        if meta.filename not in names:
            continue
        try:
            with store.open_reader(meta.artifact_id) as f:
                held[meta.filename, _digest(f.read())] = meta.artifact_id
        except (OSError, ArtifactNotFound):
            continue  # its file is gone: upload again
    return held


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
