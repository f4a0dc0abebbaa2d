"""The winner's model folder, ``studies/<study>/best-model/``, replaced atomically.

Only the best trial's shipped checkpoint is kept, so the disk stays bounded. A new best is
written to a temporary folder beside it and swapped in by two renames under a file lock;
a crash between them leaves ``best-model.old``, which :meth:`BestModelStore.recover`
puts back. Several workers on one machine share the lock.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from hpsearch.files import fsync_tree, write_atomically
from hpsearch.layout import BEST_MODEL, best_model_in

MARKER_FILE = "hpsearch.json"  # inside the folder: the Marker


@dataclass(frozen=True)
class Marker:
    """``best-model/hpsearch.json``: which trial the kept model is, and its shipped score."""

    trial: int
    value: float
    epoch: int
    objective: str
    # After `hpsearch confirm`: the folder holds the confirmed winner's run with this seed.
    # Written only when set, so a search's marker reads as it always has.
    confirmed: bool = False
    seed: int | None = None

    def write(self, folder: Path) -> None:
        fields = {k: v for k, v in asdict(self).items() if k not in ("confirmed", "seed") or v not in (False, None)}
        write_atomically(Path(folder) / MARKER_FILE, json.dumps(fields, indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> Marker | None:
        """The marker in ``folder``, or None when there is no (readable) kept model."""
        try:
            return cls(**json.loads((Path(folder) / MARKER_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


class BestModelStore:
    """The ``best-model/`` folder under ``root``: a study's (:attr:`StudyLayout.root
    <hpsearch.layout.StudyLayout.root>`) or a confirmed configuration's."""

    def __init__(self, root: Path) -> None:
        self.study_dir = Path(root)
        self.folder = best_model_in(self.study_dir)
        self._old = self.study_dir / f"{BEST_MODEL}.old"

    def marker(self) -> Marker | None:
        """Which trial the folder holds, or None when there is no model yet."""
        return Marker.read(self.folder)

    def recover(self) -> None:
        """Undo what an interrupted swap or save left behind."""
        if not self.study_dir.is_dir():
            return
        with self._lock():
            if not self.folder.exists() and self._old.exists():
                self._old.rename(self.folder)
            elif self._old.exists():
                shutil.rmtree(self._old)
            for tmp in self.study_dir.glob(f".{BEST_MODEL}.tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)

    def offer(self, marker: Marker, save: Callable[[Path], None]) -> bool:
        """Save and swap in a model if its ``marker.value`` beats the one kept (higher is better).

        ``save(folder)`` writes the weights, config and tokenizer into an empty folder.
        Returns whether the model was kept.
        """
        self.study_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            current = self.marker()
            if current is not None and not _better(marker, current):
                return False
            self._swap_in(marker, save)
            return True

    def install(self, decide: Callable[[Marker | None], tuple[Marker, Path | None] | None]) -> Marker | None:
        """Make the folder hold the model ``decide`` names, whatever it held before.

        ``decide(current)`` runs under the lock with the marker the folder holds now, and
        returns the new marker and a folder to copy the model from (None: keep the model
        there and replace its marker only), or None to leave everything as it is. The copy
        is written beside the folder and swapped in by renames. This is how a confirmation
        ships its winner, which need not score higher than the model the search kept.
        Returns the marker the folder holds afterwards.
        """
        self.study_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            current = self.marker()
            decision = decide(current)
            if decision is None or decision[0] == current:
                return current
            marker, source = decision
            if source is None:
                marker.write(self.folder)
                return marker
            self._swap_in(marker, lambda tmp: shutil.copytree(source, tmp))
            return marker

    def _swap_in(self, marker: Marker, write: Callable[[Path], None]) -> None:
        """Under the lock: write the model beside the folder, then swap it in by two renames."""
        tmp = self.study_dir / f".{BEST_MODEL}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            write(tmp)
            marker.write(tmp)
            fsync_tree(tmp)
            if self.folder.exists():
                self.folder.rename(self._old)
            tmp.rename(self.folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(self._old, ignore_errors=True)

    def _lock(self) -> FileLock:
        return FileLock(self.study_dir / f".{BEST_MODEL}.lock")


def _better(new: Marker, current: Marker) -> bool:
    """Higher is better; on a tie the earlier trial wins, as it does in the study's ranking.

    With several workers a later trial can finish first, so ties are decided by number.
    """
    return new.value > current.value or (new.value == current.value and new.trial < current.trial)
