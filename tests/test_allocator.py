"""glibc's heap settings for CPU training: large blocks reused instead of mapped afresh, same results.

Each check runs in a child process, since the settings are per process and cannot be put back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")

# A 64 MiB block: above the 32 MiB beyond which glibc always maps a block on its own.
_FAULTS_OF_A_LARGE_BLOCK = textwrap.dedent(
    """
    import json, sys, torch
    from hpsearch.training.modeling import configure_allocator

    def faults():
        return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])

    applied = configure_allocator() if sys.argv[1] == "configure" else None
    for i in range(12):  # allocated, filled and freed, as a gradient is at every step
        if i == 8:  # the heap has settled; count the last four
            before = faults()
        torch.ones(16 * 1024 * 1024)
    print(json.dumps({"applied": applied, "faults": faults() - before}))
    """
)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any allocator setting of its own, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    return {**base, **(extra or {})}


def _child(code: str, *args: str, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=_env(env), timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_freed_large_block_is_reused_without_page_faults():
    plain = _child(_FAULTS_OF_A_LARGE_BLOCK, "plain")
    configured = _child(_FAULTS_OF_A_LARGE_BLOCK, "configure")
    if plain["faults"] < 4096:
        pytest.skip(f"this kernel maps the block in huge pages ({plain['faults']} faults): nothing to compare")
    assert configured["applied"] is True
    # 64 MiB in 4 KiB pages is 16,384 faults each time it is mapped afresh; reused, next to none.
    assert configured["faults"] < plain["faults"] / 20, (plain, configured)


@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_MMAP_MAX_": "65536"},
        {"MALLOC_ARENA_MAX": "2"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
    ],
)
def test_a_user_tuned_allocator_is_left_alone(env):
    result = _child(_FAULTS_OF_A_LARGE_BLOCK, "configure", env=env)
    assert result["applied"] is False


def _big_vocab_model(folder: Path, tiny_model: Path) -> Path:
    """The tiny BERT with a 280,000-row embedding (34 MiB), so its gradient is a large block."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=280_000,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(tiny_model)).save_pretrained(folder)
    return folder


def _epoch_rows(model: Path, folder: Path, env: dict[str, str]) -> list[dict]:
    folder.mkdir()
    args = [
        sys.executable,
        "-m",
        "hpsearch",
        "run",
        "--model",
        str(model),
        "--max-length",
        "32",
        "--trials",
        "1",
        "--epochs",
        "2",
        "--max-train-samples",
        "96",
        "--pruner",
        "none",
        "--storage",
        f"sqlite:///{folder / 'hp.db'}",
        "--workdir",
        str(folder / "studies"),
    ]
    # Two of these a test, each well under the per-test limit (pyproject.toml).
    proc = subprocess.run(args, capture_output=True, text=True, env=_env(env), cwd=folder, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = optuna.load_study(study_name="hpsearch", storage=f"sqlite:///{folder / 'hp.db'}")
    (trial,) = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return trial.user_attrs["epochs"]


def test_training_gives_the_same_numbers_with_and_without_the_heap_settings(tiny_model, tmp_path):
    model = _big_vocab_model(tmp_path / "big-vocab", tiny_model)
    configured = _epoch_rows(model, tmp_path / "configured", {})
    glibc_defaults = _epoch_rows(model, tmp_path / "defaults", {"MALLOC_MMAP_MAX_": "65536"})
    assert [r["epoch"] for r in configured] == [1, 2]
    assert configured[0]["train_loss"] != configured[1]["train_loss"]  # it trained
    assert configured == glibc_defaults  # losses, metrics and learning-rate sums, to the last bit
