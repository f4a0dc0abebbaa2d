"""Micro-measurements behind the proposals: one question each, A and B alternated in one process.

    python benchmarks/micro.py gc           # gc.collect() with the libraries loaded, before and after gc.freeze()
    python benchmarks/micro.py exit         # interpreter exit after a search, with and without gc.freeze at exit
    python benchmarks/micro.py bf16         # CPU training steps: fp32 against bf16 autocast (AMX)
    python benchmarks/micro.py sampler      # one epoch: random batches against the Trainer's length-grouped ones
    python benchmarks/micro.py allocator    # one epoch of the default run: glibc's defaults against hpsearch's heap
    python benchmarks/micro.py profile      # torch.profiler over 10 training steps of the default run's recipe trial
    python benchmarks/micro.py gemm         # the rate (GFLOPS) of fp32 matrix products of MiniLM's shapes on this CPU

Each prints one JSON line and saves it under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import _harness as h


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "what",
        choices=(
            "gc",
            "exit",
            "bf16",
            "sampler",
            "allocator",
            "profile",
            "gemm",
            "exit-child",
            "allocator-child",
        ),
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--freeze", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--configured", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.what == "exit-child":
        _exit_child(args.freeze)
        return
    if args.what == "allocator-child":
        _allocator_child(args.configured)
        return
    load_before = h.loadavg()
    result = {
        "gc": _gc,
        "exit": _exit,
        "bf16": _bf16,
        "sampler": _sampler,
        "allocator": _allocator,
        "profile": _profile,
        "gemm": _gemm,
    }[args.what](args.repeats)
    payload = {
        "benchmark": f"micro-{args.what}",
        "command": h.command_line(),
        "machine": h.machine(),
        "load_before": load_before,
        "load_after": h.loadavg(),
        "result": result,
    }
    path = h.save(f"micro-{args.what}", payload)
    print(json.dumps(result))
    print(f"saved {path.relative_to(h.REPO)}", file=sys.stderr)


def _load(overrides: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """The model, tokenizer, tokenised splits and task of a configuration, made as hpsearch makes them."""
    from transformers.utils import logging as hf_logging

    from hpsearch import load_base_model, load_config, load_task, load_tokenizer, resolve_model, tokenize_task

    hf_logging.set_verbosity_error()
    config = load_config(overrides=overrides)
    source = resolve_model(config.model)
    task = load_task(config)
    tokenizer = load_tokenizer(source, config)
    data = tokenize_task(task, tokenizer, config.max_length)
    return load_base_model(source, config, task.label_names), tokenizer, data, task


def _sms(train: int, evaluate: int, max_length: int) -> tuple[Any, Any, Any, Any]:
    """MiniLM and sms_spam rows, made as hpsearch makes them."""
    return _load(
        {"dataset": str(h.SMS_SPAM), "max_train_samples": train, "max_eval_samples": evaluate, "max_length": max_length}
    )


def _default_run_rows() -> tuple[Any, list[dict[str, Any]], Any]:
    """The default run's model, tokenised training rows and collator, with a thread per CPU
    this process may use, as hpsearch trains on a CPU (docs/configuration.md, "The process")."""
    import torch
    from transformers import DataCollatorWithPadding

    model, tokenizer, data, _ = _load({})
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    rows = [data["train"][i] for i in range(len(data["train"]))]
    return model, rows, DataCollatorWithPadding(tokenizer)


def _recipe_batches(rows: list[dict[str, Any]], collate: Any, seed: int) -> list[dict[str, Any]]:
    """One epoch of the recipe trial's batches of 8, in the order the Trainer's sampler gives for ``seed``."""
    import torch
    from torch.utils.data import RandomSampler

    order = list(RandomSampler(rows, generator=torch.Generator().manual_seed(seed)))
    return [collate([rows[i] for i in order[j : j + 8]]) for j in range(0, len(order), 8)]


def _recipe_step(model: Any, optimizer: Any, inputs: dict[str, Any]) -> None:
    """One training step as the recipe's Trainer makes it: forward, backward, clipping at 1.0, update."""
    import torch

    model(**inputs).loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()


def _gc(repeats: int) -> dict[str, Any]:
    import gc

    model, *_ = _sms(16, 16, 32)  # torch, transformers, the model: what a run holds
    import sklearn.metrics  # noqa: F401
    import transformers.trainer  # noqa: F401

    def timed() -> float:
        t = time.perf_counter()
        gc.collect()
        return round(time.perf_counter() - t, 4)

    objects = len(gc.get_objects())
    plain = [timed() for _ in range(repeats)]
    gc.freeze()
    frozen = [timed() for _ in range(repeats)]
    gc.unfreeze()
    return {"objects_tracked": objects, "gc_collect_s": plain, "gc_collect_after_freeze_s": frozen}


def _exit(repeats: int) -> dict[str, Any]:
    """A tiny search in a child; the time from its last line to the process's end."""
    out: dict[str, list[float]] = {"plain": [], "gc.freeze at exit": []}
    for i in range(repeats):
        for freeze in (False, True) if i % 2 == 0 else (True, False):
            proc = subprocess.run(
                [sys.executable, __file__, "exit-child", *(["--freeze"] if freeze else [])],
                capture_output=True,
                text=True,
            )
            ended = time.time()
            last = [line for line in proc.stdout.splitlines() if line.startswith("END ")]
            if proc.returncode != 0 or not last:
                raise SystemExit(proc.stderr[-3000:])
            out["gc.freeze at exit" if freeze else "plain"].append(round(ended - float(last[-1].split()[1]), 3))
    return {"exit_s": out}


def _exit_child(freeze: bool) -> None:
    import atexit
    import gc

    from memory import tiny_model

    from hpsearch import load_config, run_search

    with tempfile.TemporaryDirectory(prefix="bench-exit-") as tmp:
        model = tiny_model(os.path.join(tmp, "tiny"))
        config = load_config(
            overrides={
                "model": str(model),
                "max_length": 32,
                "trials": 1,
                "epochs": 1,
                "pruner": "none",
                "storage": f"sqlite:///{tmp}/hp.db",
                "workdir": f"{tmp}/studies",
            }
        )
        run_search(config)
    if freeze:
        atexit.register(gc.freeze)
    print("END", time.time(), flush=True)


def _bf16(repeats: int) -> dict[str, Any]:
    import copy

    import torch
    from transformers import DataCollatorWithPadding

    model, tokenizer, data, _ = _sms(64, 16, 64)
    collate = DataCollatorWithPadding(tokenizer)
    batches = [collate([data["train"][i] for i in range(j, j + 16)]) for j in range(0, 64, 16)]

    def timed(bf16: bool) -> float:
        m = copy.deepcopy(model)
        m.train()
        optimizer = torch.optim.AdamW(m.parameters(), lr=5e-05, fused=True)
        t = time.perf_counter()
        for inputs in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = m(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return round(time.perf_counter() - t, 3)

    timed(False)
    timed(True)
    out: dict[str, list[float]] = {"fp32": [], "bf16 autocast": []}
    for i in range(repeats):
        for bf16 in (False, True) if i % 2 == 0 else (True, False):
            out["bf16 autocast" if bf16 else "fp32"].append(timed(bf16))
    flags = set(h.cpuinfo().get("flags", "").split())
    return {
        "steps": len(batches),
        "batch": 16,
        "max_length": 64,
        "train_s": out,
        "cpu_amx_bf16": "amx_bf16" in flags,
        "cpu_avx512_bf16": "avx512_bf16" in flags,
    }


def _gemm(repeats: int) -> dict[str, Any]:
    """How close the model's arithmetic runs to the CPU's peak: fp32 products of the shapes
    of a MiniLM layer for a batch of 8 texts of 64 tokens (512 rows), timed over 20
    products each after 3 untimed, best of ``repeats``."""
    import torch

    shapes = {
        "attention projections": (512, 384, 384),
        "feed-forward in": (512, 384, 1536),
        "feed-forward out": (512, 1536, 384),
    }
    torch.manual_seed(0)
    out: dict[str, Any] = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(20):
                a @ b
            best = min(best, (time.perf_counter() - t) / 20)
        out[name] = {"m_k_n": [m, k, n], "gflops": round(2 * m * k * n / best / 1e9, 1)}
    return {"threads": torch.get_num_threads(), "products": out, "cpu_mhz": h.machine()["cpu_mhz"]}


def _sampler(repeats: int) -> dict[str, Any]:
    """One epoch of 256 sms_spam rows (64 tokens at most) in the order each sampler gives.

    ``random`` is the Trainer's default (``RandomSampler``); ``group_by_length`` is its
    ``LengthGroupedSampler`` (``train_sampling_strategy = "group_by_length"``): batches of
    similar lengths, so the collator pads less. Same model copy, fused AdamW, fp32.
    """
    import copy

    import torch
    from torch.utils.data import RandomSampler
    from transformers import DataCollatorWithPadding
    from transformers.trainer_pt_utils import LengthGroupedSampler

    model, tokenizer, data, _ = _sms(256, 16, 64)
    rows = [data["train"][i] for i in range(len(data["train"]))]
    collate = DataCollatorWithPadding(tokenizer)

    def batches(strategy: str, batch: int) -> list[dict[str, Any]]:
        g = torch.Generator().manual_seed(42)
        if strategy == "random":
            order = list(RandomSampler(rows, generator=g))
        else:
            order = list(LengthGroupedSampler(batch, lengths=[len(r["input_ids"]) for r in rows], generator=g))
        return [collate([rows[i] for i in order[j : j + batch]]) for j in range(0, len(order), batch)]

    def timed(prepared: list[dict[str, Any]]) -> float:
        m = copy.deepcopy(model)
        m.train()
        optimizer = torch.optim.AdamW(m.parameters(), lr=5e-05, fused=True)
        t = time.perf_counter()
        for inputs in prepared:
            m(**inputs).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return round(time.perf_counter() - t, 3)

    out: dict[str, Any] = {}
    for batch in (8, 32):
        prepared = {s: batches(s, batch) for s in ("random", "group_by_length")}
        tokens = {s: sum(int(b["input_ids"].numel()) for b in bs) for s, bs in prepared.items()}
        timed(prepared["random"])  # warm-up
        times: dict[str, list[float]] = {"random": [], "group_by_length": []}
        for i in range(repeats):
            for s in ("random", "group_by_length") if i % 2 == 0 else ("group_by_length", "random"):
                times[s].append(timed(prepared[s]))
        real = sum(len(r["input_ids"]) for r in rows)
        out[f"batch {batch}"] = {"epoch_s": times, "padded_tokens": tokens, "real_tokens": real}
    return {"rows": len(rows), "max_length": 64, **out}


def _allocator(repeats: int) -> dict[str, Any]:
    """Epochs of the default run's recipe trial, in children with glibc's defaults and with
    hpsearch's heap settings for a CPU search (``_harness.HEAP_SETTINGS_ENV``).

    glibc's allocator settings are per process and cannot be fully put back (setting one
    freezes its dynamic mmap threshold), so each side runs in its own child, started with the
    settings in its environment or without, the two alternating. Each child trains the
    packaged MiniLM on the built-in data as hpsearch's recipe trial does (batch 8, fused
    AdamW, clipping at 1.0, the Trainer's shuffling seed): one warm-up epoch, then two timed,
    counting the process's minor page faults, and it prints its peak resident size and a
    digest of the final weights, so that the two sides can be checked bit for bit.
    """
    out: dict[str, dict[str, list[Any]]] = {
        side: {"epoch_s": [], "page_faults": [], "peak_rss_mib": [], "weights_sha256": []}
        for side in ("glibc defaults", "hpsearch heap settings")
    }
    for i in range(repeats):
        for configured in (False, True) if i % 2 == 0 else (True, False):
            glibc_defaults = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            proc = subprocess.run(
                [sys.executable, __file__, "allocator-child", *(["--configured"] if configured else [])],
                capture_output=True,
                text=True,
                env={**glibc_defaults, **(h.HEAP_SETTINGS_ENV if configured else {})},
            )
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                raise SystemExit(proc.stderr[-3000:])
            child = json.loads(lines[-1])
            side = out["hpsearch heap settings" if configured else "glibc defaults"]
            side["epoch_s"] += child["epoch_s"]
            side["page_faults"] += child["page_faults"]
            side["weights_sha256"].append(child["weights_sha256"])
            side["peak_rss_mib"].append(child["peak_rss_mib"])
    digests = {d for side in out.values() for d in side["weights_sha256"]}
    return {"task": "built-in, 300 rows, batch 8, max_length 128", "identical_weights": len(digests) == 1, **out}


def _allocator_child(configured: bool) -> None:
    import copy
    import hashlib
    import resource

    import torch

    if configured != all(os.environ.get(k) == v for k, v in h.HEAP_SETTINGS_ENV.items()):
        raise SystemExit(f"allocator-child --configured={configured}, but the environment holds other heap settings")
    model, rows, collate = _default_run_rows()

    def faults() -> int:
        return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])

    m = copy.deepcopy(model)
    m.train()
    torch.manual_seed(42)
    optimizer = torch.optim.AdamW(m.parameters(), lr=5e-05, fused=True)
    times, counts = [], []
    for epoch in range(3):
        batches = _recipe_batches(rows, collate, 42 + epoch)
        f, t = faults(), time.perf_counter()
        for inputs in batches:
            _recipe_step(m, optimizer, inputs)
        if epoch:  # the first is the warm-up
            times.append(round(time.perf_counter() - t, 3))
            counts.append(faults() - f)
    digest = hashlib.sha256()
    for p in m.parameters():
        digest.update(p.detach().numpy().tobytes())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "epoch_s": times,
                "page_faults": counts,
                "weights_sha256": digest.hexdigest(),
                "peak_rss_mib": round(peak, 1),
            }
        )
    )


def _profile(repeats: int) -> dict[str, Any]:
    """Where a training step of the default run goes: torch.profiler over 10 steps, glibc's defaults.

    The recipe trial's steps (built-in data, MiniLM, batch 8, fused AdamW, clipping at 1.0)
    after one warm-up epoch, in this process, with the heap settings of its environment
    (glibc's defaults unless a ``MALLOC_*`` variable is set); operators are grouped by input
    shape, so a fixed per-step cost shows by its tensor.
    """
    import copy

    import torch
    from torch.profiler import ProfilerActivity, profile

    model, rows, collate = _default_run_rows()
    batches = _recipe_batches(rows, collate, 42)
    m = copy.deepcopy(model)
    m.train()
    optimizer = torch.optim.AdamW(m.parameters(), lr=5e-05, fused=True)
    for inputs in batches:  # warm-up epoch
        _recipe_step(m, optimizer, inputs)
    steps = 10
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for inputs in batches[:steps]:
            _recipe_step(m, optimizer, inputs)
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_ms = sum(e.self_cpu_time_total for e in events) / 1000
    top = [
        {
            "op": e.key,
            "shapes": str(e.input_shapes)[:120],
            "calls_per_step": e.count / steps,
            "self_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 2),
        }
        for e in events[:15]
    ]
    return {
        "steps": steps,
        "batch": 8,
        "threads": torch.get_num_threads(),
        "self_ms_per_step": round(total_ms / steps, 1),
        "top": top,
    }


if __name__ == "__main__":
    main()
