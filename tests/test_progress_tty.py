"""Progress inside an epoch: a bar on a terminal, today's plain lines when stderr is not one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import tiny_run_args

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Seconds for one run; a test makes two, within the per-test limit (pyproject.toml).
RUN_TIMEOUT = 240


def _run(tiny_model: Path, cwd: Path, study: str, *, terminal: bool) -> str:
    """``hpsearch run`` in a subprocess, stderr a pseudo-terminal or a pipe; its stderr."""
    argv = [
        sys.executable,
        "-m",
        "hpsearch",
        *tiny_run_args(tiny_model, "--trials", "1", "--epochs", "2", "--study", study),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    if not terminal:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert done.returncode == 0, done.stderr
        return done.stderr
    primary, secondary = os.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the terminal's other end closed: the process has exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    assert proc.wait(timeout=RUN_TIMEOUT) == 0
    return b"".join(chunks).decode("utf-8", errors="replace")


def test_the_progress_bar_shows_on_a_terminal_only(tiny_model, workdir):
    shown = _run(tiny_model, workdir, "tty", terminal=True)
    plain = _run(tiny_model, workdir, "pipe", terminal=False)
    assert re.search(r"trial 0 epoch 1/2 .* \d+/38 [\d.]+ samples/s  ETA ", ANSI.sub("", shown))
    assert re.search(r"0/1 trials finished .* elapsed [\d.]+s", ANSI.sub("", shown))
    assert "\x1b[?25h" in shown  # the cursor is shown again at the end
    # Piped: the lines of the run alone, as plain text, one per start, epoch and end.
    assert "samples/s" not in plain and "/1 trials finished" not in plain and "\x1b" not in plain
    assert [line.split()[0] for line in plain.splitlines()] == ["study", "model", "trial", "epoch", "epoch", "trial"]
    # On the terminal the same lines are printed above the bars, which are taken off at the end.
    for line in plain.splitlines()[2:]:
        assert re.sub(r"[\d.]+s\b", "", line.split("  ")[0]) in ANSI.sub("", shown)
