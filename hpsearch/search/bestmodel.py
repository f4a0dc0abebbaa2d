"""The winner's model folder, ``studies/<study>/best-model/``, replaced atomically.

Only the best trial's shipped checkpoint is kept, so the disk stays bounded. A new best is
written to a temporary folder beside it and swapped in by two renames under a file lock;
a crash between them leaves ``best-model.old``, which :meth:`BestModelStore.recover`
puts back. Several workers on one machine share the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MARKER = "hpsearch.json"  # inside best-model/: which trial it holds and its value


class BestModelStore:
    def __init__(self, study_dir: Path) -> None:
        self.study_dir = Path(study_dir)
        self.folder = self.study_dir / "best-model"
        self._old = self.study_dir / "best-model.old"

    def marker(self) -> dict[str, Any] | None:
        """What the folder holds (``trial``, ``value``), or None when there is no model yet."""
        try:
            return json.loads((self.folder / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def recover(self) -> None:
        """Undo what an interrupted swap or save left behind."""
        if not self.study_dir.is_dir():
            return
        with self._lock():
            if not self.folder.exists() and self._old.exists():
                self._old.rename(self.folder)
            elif self._old.exists():
                shutil.rmtree(self._old)
            for tmp in self.study_dir.glob(".best-model.tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)

    def offer(self, trial: int, value: float, save: Callable[[Path], None], extra: dict[str, Any] | None = None) -> bool:
        """Save and swap in a model if ``value`` beats the one kept (higher is better).

        ``save(folder)`` writes the weights, config and tokenizer into an empty folder.
        Returns whether the model was kept.
        """
        self.study_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            current = self.marker()
            if current is not None and not _better(value, trial, current):
                return False
            tmp = self.study_dir / f".best-model.tmp-{uuid.uuid4().hex[:8]}"
            try:
                save(tmp)
                marker = {"trial": trial, "value": value, **(extra or {})}
                (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
                _fsync_tree(tmp)
                if self.folder.exists():
                    self.folder.rename(self._old)
                tmp.rename(self.folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            shutil.rmtree(self._old, ignore_errors=True)
            return True

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.study_dir / ".best-model.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _better(value: float, trial: int, current: dict[str, Any]) -> bool:
    """Higher is better; on a tie the earlier trial wins, as it does in the study's ranking.

    With several workers a later trial can finish first, so ties are decided by number.
    """
    return value > current["value"] or (value == current["value"] and trial < current["trial"])


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
