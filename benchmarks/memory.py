"""Memory: the process's resident set size after each trial, to show it does not grow.

    python benchmarks/memory.py                 # 10 trials of a tiny BERT, 2 epochs each
    python benchmarks/memory.py --trials 20 --epochs 1
    python benchmarks/memory.py --model PATH     # any local model folder instead
    python benchmarks/memory.py --model default  # hpsearch's default model (the packaged MiniLM)
    MALLOC_MMAP_MAX_=65536 python benchmarks/memory.py --model default   # glibc's own heap settings

One in-process ``run_search`` (the built-in dataset, pruner none, so every trial trains
the same number of epochs); a run listener reads VmRSS from /proc/self/status when each
trial has ended and its memory was released. Growth is judged from the second trial on: the
first pays one-time costs (lazy imports, the first optimiser, allocator pools).

hpsearch hands freed memory back to the system after each trial (glibc's ``malloc_trim``)
and, on a CPU, sets glibc's heap settings for the search (docs/configuration.md, "The
process"); ``MALLOC_MMAP_MAX_=65536`` in the environment, glibc's own default, leaves those
settings off. (What the trim is for, measured by switching it off, is in HISTORY.md.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import _harness as h

from hpsearch import RunListener, schema


class RssListener(RunListener):
    """Records this process's resident set size as the run starts and after each trial."""

    def __init__(self) -> None:
        self.after_trial: list[float] = []
        self.kept: list[int] = []
        self.at_start: float | None = None

    def run_start(self, run: Any) -> None:
        self.at_start = h.rss_mib()

    def trial_end(self, trial: Any, frozen: Any) -> None:
        self.after_trial.append(round(h.rss_mib(), 1))
        if schema.kept_model(frozen):
            self.kept.append(frozen.number)
        print(f"trial {frozen.number} {frozen.state.name.lower()}: RSS {self.after_trial[-1]:.1f} MiB", file=sys.stderr)


def tiny_model(folder: Path) -> Path:
    """The test suite's tiny BERT (2 layers, hidden 32) with the packaged MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hpsearch import packaged_default_model

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument(
        "--model", default=None, help="model folder, or 'default' for hpsearch's own (default: a tiny BERT made here)"
    )
    p.add_argument("--max-length", type=int, default=32)
    args = p.parse_args()

    from hpsearch import load_config, run_search

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        model = args.model or str(tiny_model(Path(tmp) / "tiny-bert"))
        model_override = {} if model == "default" else {"model": model}
        config = load_config(
            overrides={
                **model_override,
                "trials": args.trials,
                "epochs": args.epochs,
                "pruner": "none",
                "early_stopping_patience": 0,
                "max_length": args.max_length,
                "storage": f"sqlite:///{tmp}/hpsearch.db",
                "workdir": f"{tmp}/studies",
            }
        )
        load_before = h.loadavg()
        before = h.rss_mib()
        listener = RssListener()
        run_search(config, listeners=[listener])
    rss = listener.after_trial
    steady = rss[1:] or rss
    summary = {
        "trials_that_kept_a_model": listener.kept,
        "rss_before_run_mib": round(before, 1),
        "rss_after_setup_mib": round(listener.at_start or float("nan"), 1),
        "rss_after_each_trial_mib": rss,
        "growth_trial2_to_last_mib": round(steady[-1] - steady[0], 1),
        "growth_per_trial_mib": round((steady[-1] - steady[0]) / max(1, len(steady) - 1), 2),
        "max_minus_min_from_trial2_mib": round(max(steady) - min(steady), 1),
    }
    payload = {
        "benchmark": "memory",
        "command": h.command_line(),
        "machine": h.machine(),
        "load_before": load_before,
        "load_after": h.loadavg(),
        "settings": vars(args),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "summary": summary,
    }
    path = h.save("memory", payload)
    print(json.dumps(summary, indent=2))
    print(f"saved {path.relative_to(h.REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
