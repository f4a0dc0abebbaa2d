"""Ctrl-C and SIGTERM: how a run stops with its trial recorded and the study intact."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def on_stop_signals(handler: Any) -> Iterator[None]:
    """Run ``handler`` on SIGINT and SIGTERM inside the block, then put the previous ones back.

    Set explicitly rather than left to Python's default: a process that a non-interactive
    shell starts in the background inherits SIGINT ignored, and would not stop on Ctrl-C.
    """
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def interrupts() -> contextlib.AbstractContextManager[None]:
    """Ctrl-C and SIGTERM end the running trial as failed; a second one exits at once."""
    hits = {"n": 0}

    def handler(signum: int, frame: Any) -> None:
        hits["n"] += 1
        if hits["n"] > 1:
            sys.stderr.write("hpsearch: second interrupt, exiting now; the next run marks the open trial failed\n")
            sys.stderr.flush()
            os._exit(130)
        raise KeyboardInterrupt

    return on_stop_signals(handler)
