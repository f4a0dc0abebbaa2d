"""The errors hpsearch raises for things a user can fix.

The CLI turns every :class:`HpsearchError` into one line on stderr and exit code 2;
anything else is a bug and is shown in full only with ``--verbose``.
"""

from __future__ import annotations


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type's name when empty), for one-line errors."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]


class HpsearchError(Exception):
    """A problem the user can fix: bad input, a missing study, an unwritable path."""

    exit_code = 2


class ConfigError(HpsearchError):
    """A configuration file, key or value that is not what hpsearch expects."""


class DataError(HpsearchError):
    """A dataset that cannot be read or cannot be used for classification."""


class ModelError(HpsearchError):
    """A model that cannot be loaded."""


class StorageError(HpsearchError):
    """A storage URL that is malformed or unreachable, or a study that is not there."""


class CardError(HpsearchError):
    """A card that cannot be rendered or written."""


class SearchStopped(HpsearchError):
    """The search stopped before reaching its total (repeated failures)."""

    exit_code = 1
