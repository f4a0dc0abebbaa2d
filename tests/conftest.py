"""Shared fixtures: a tiny BERT built from a small BertConfig, small datasets, the real CLI.

The tiny model (2 layers, hidden size 32) trains an epoch of the built-in data in well under
a second on a CPU, so tests drive real Trainer fine-tunes without a GPU or network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


# Services a test may need: on a developer's machine a missing one skips the test; CI lists
# them here (.ci/run), so that a missing server or browser fails instead of passing quietly.
REQUIRED_SERVICES = {s.strip() for s in os.environ.get("HPSEARCH_REQUIRE_SERVICES", "").split(",") if s.strip()}


def missing_service(service: str, reason: str) -> NoReturn:
    """Skip the test for want of ``service`` (postgres, redis, chromium), or fail where it is required."""
    if service in REQUIRED_SERVICES:
        pytest.fail(f"{reason} (HPSEARCH_REQUIRE_SERVICES names {service})", pytrace=False)
    pytest.skip(reason)


def chrome_binary() -> str | None:
    """The Chrome or Chromium that kaleido renders PNG plots with, found as kaleido finds it
    (``BROWSER_PATH``, a browser fetched by ``plotly_get_chrome``, then PATH); None if none."""
    from choreographer.browsers.chromium import Chromium

    return Chromium.find_browser(skip_local=False)


@pytest.fixture
def chrome() -> str:
    """The path of a Chrome or Chromium binary: the test skips without one, or fails where CI requires it."""
    path = chrome_binary()
    if path is None:
        missing_service("chromium", "no Chrome or Chromium installed (apt-get install chromium; .ci/run installs it)")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT with random weights and the packaged MiniLM tokenizer, saved to a folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hpsearch.training.modeling import packaged_default_model

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(packaged_default_model()))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory, as a user's new project folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write rows as CSV, JSONL or JSON by the file's suffix."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``hpsearch ARGS`` in this process; returns (exit code, stdout, stderr)."""
    from hpsearch.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def hpsearch_argv(*args: str, hook: str = "") -> list[str]:
    """The command line of ``hpsearch ARGS`` in a new process; ``hook``, Python source, runs
    there first (to hold a library call at a point the test waits for, say)."""
    if not hook:
        return [sys.executable, "-m", "hpsearch", *args]
    code = f"{hook}\nimport sys\nfrom hpsearch.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return [sys.executable, "-c", code, *args]


def start_hpsearch(cwd: Path, log: str, *args: str, hook: str = "") -> subprocess.Popen:
    """``hpsearch ARGS`` in a new process in ``cwd``, one thread, its output in ``<log>.out``/``.err``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(cwd / f"{log}.out", "wb") as out, open(cwd / f"{log}.err", "wb") as err:
        return subprocess.Popen(
            hpsearch_argv(*args, hook=hook), cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )


def finish(proc: subprocess.Popen, cwd: Path, log: str, timeout: float = 300) -> int:
    """The exit code of a :func:`start_hpsearch` process; fails the test, its stderr shown, past ``timeout``."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{log} did not finish in {timeout:g} s: {(cwd / f'{log}.err').read_text()[-2000:]}")


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    """Until ``path`` exists; fails at once if ``proc`` exits first, and after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the process exited with {proc.returncode} before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path.name} did not appear in {timeout:g} s"
        time.sleep(0.05)


def tiny_run_args(model: Path, *extra: str) -> list[str]:
    """Flags for a fast real search: tiny model, built-in data, short texts."""
    return ["run", "--model", str(model), "--max-length", "32", *extra]


def validation_f1_of(folder: Path) -> float:
    """Score a saved model on the built-in validation split, outside hpsearch's Trainer."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hpsearch.analysis.scores import classification_metrics
    from hpsearch.builtin import builtin_reviews

    frame = builtin_reviews()["validation"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        batch = tokenizer(frame["text"].tolist(), truncation=True, max_length=32, padding=True, return_tensors="pt")
        predictions = model(**batch).logits.argmax(-1).numpy()
    labels = np.array([model.config.label2id[v] for v in frame["label"]])
    return classification_metrics(labels, predictions, "binary")["f1"]
