"""The GPU check: one script that measures what hpsearch does with one large GPU.

    bash benchmarks/gpu_check.sh              # on a CUDA machine: bert-base-sized, about 6 minutes
    bash benchmarks/gpu_check.sh --dry-run    # anywhere: the tiny model, 1 trial per step, CPU

No network: the model is ``BertConfig()`` defaults with random weights and the packaged
MiniLM tokenizer (bert-base's vocabulary); the data is ``../shared/data/sms_spam`` where it
exists, else hpsearch's built-in task. Steps, each a real ``hpsearch run`` in a fresh folder:

1. ``search``: a 4-trial search on ``--devices 0``, then on ``--devices 0 --workers-per-device
   2`` (``--workers 1`` and ``2`` in a dry run): wall time, trials per hour, and the
   aggregate training samples per second the GPU served (every trial's optimiser updates x
   its batch, over the search's wall time).
2. ``levers``: one trial of the recipe with each lever of the ``[recipe]`` table alone
   (``torch_compile``, data-loader workers with pinned memory, length-grouped batches)
   against none: samples per second of training, evaluation included.
3. The stored precision, device and peak GPU memory of every trial, and the best trial's card.

Training samples per second inside hpsearch against a bare Trainer is
``benchmarks/gpu_throughput.py`` (run it beside this). Everything is printed and saved as
``benchmarks/results/gpu_check-<time>.json``, or where ``--out`` says; a dry run measures
nothing, so it saves into its temporary folder unless ``--out`` says otherwise, and leaves
``benchmarks/results/`` as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness

LEVERS = {
    "none": {},
    "torch_compile": {"torch_compile": True},
    "dataloader": {"dataloader_num_workers": 2, "dataloader_pin_memory": True},
    "group_by_length": {"train_sampling_strategy": "group_by_length"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny model, 1 trial per step, on the CPU")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=2048, help="training rows")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to save the JSON (default benchmarks/results/; a dry run: its temporary folder)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    model = _model(work / "model", tiny=args.dry_run)
    base = [
        "--model",
        str(model),
        "--epochs",
        str(1 if args.dry_run else args.epochs),
        "--max-train-samples",
        str(32 if args.dry_run else args.train),
        "--max-length",
        "32" if args.dry_run else "128",
        "--pruner",
        "none",
    ]
    if _harness.SMS_SPAM.is_dir() and not args.dry_run:
        base += ["--dataset", str(_harness.SMS_SPAM)]
    trials = 1 if args.dry_run else 4
    pools = (
        [("1 worker", ["--workers", "1"]), ("2 workers", ["--workers", "2"])]
        if args.dry_run
        else [
            ("1 worker per device", ["--devices", "0"]),
            ("2 workers per device", ["--devices", "0", "--workers-per-device", "2"]),
        ]
    )
    result: dict[str, Any] = {
        "machine": _harness.machine(),
        "command": _harness.command_line(),
        "dry_run": args.dry_run,
        "search": {},
        "levers": {},
    }
    for name, flags in pools:
        result["search"][name] = _search(work / name.replace(" ", "-"), [*base, "--trials", str(trials), *flags])
        _print(f"search, {name}", result["search"][name])
    for name, recipe in LEVERS.items():
        if args.dry_run and name != "none":
            continue  # the CPU dry run checks the plumbing, not the levers
        result["levers"][name] = _search(work / f"lever-{name}", [*base, "--trials", "1"], recipe=recipe)
        _print(f"lever {name}", result["levers"][name])
    if args.out is None and args.dry_run:
        args.out = work / "gpu_check-dry-run.json"
    path = _harness.save("gpu_check", result) if args.out is None else _write(args.out, result)
    print(f"saved {path}")


def _model(folder: Path, *, tiny: bool) -> Path:
    """bert-base-sized (or a 2-layer tiny) BERT with random weights and the packaged tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hpsearch import packaged_default_model

    tokenizer = AutoTokenizer.from_pretrained(str(packaged_default_model()))
    torch.manual_seed(0)
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if tiny else {}
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **sizes)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _search(folder: Path, argv: list[str], *, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``hpsearch run`` in ``folder``: its wall time, throughput, and what every trial stored."""
    folder.mkdir(parents=True)
    if recipe:
        lines = ["[recipe]", *(f"{k} = {json.dumps(v)}" for k, v in recipe.items())]
        (folder / "levers.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        argv = [*argv, "--config", "levers.toml"]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "hpsearch", "run", *argv],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:], "wall_s": round(wall, 1)}
    trials = _trials(folder)
    samples = sum(t["samples"] for t in trials)
    card = subprocess.run(
        [sys.executable, "-m", "hpsearch", "card", "best"], cwd=folder, capture_output=True, text=True
    )
    return {
        "wall_s": round(wall, 1),
        "trials_per_hour": round(3600 * len(trials) / wall, 1),
        "samples_per_s": round(samples / wall, 1),
        "trials": trials,
        "card": card.stdout.strip() if card.returncode == 0 else card.stderr.strip(),
    }


def _trials(folder: Path) -> list[dict[str, Any]]:
    import optuna

    from hpsearch import schema

    study = optuna.load_study(study_name="hpsearch", storage=f"sqlite:///{folder}/studies/hpsearch.db")
    out = []
    for trial in study.get_trials(deepcopy=False, states=schema.FINISHED):
        args, rows = schema.training_args(trial), schema.rows(trial)
        out.append(
            {
                "number": trial.number,
                "precision": args.get("precision"),
                "tf32": args.get("tf32"),
                "device": schema.device(trial),
                "samples": (rows[-1]["step"] if rows else 0) * int(args.get("per_device_train_batch_size", 0)),
                "seconds": (trial.datetime_complete - trial.datetime_start).total_seconds(),
            }
        )
    return out


def _print(title: str, figures: dict[str, Any]) -> None:
    if "error" in figures:
        print(f"{title}: failed: {figures['error']}")
        return
    devices = {json.dumps(t["device"], sort_keys=True) for t in figures["trials"]}
    print(
        f"{title}: {figures['wall_s']} s, {figures['trials_per_hour']} trials/h, {figures['samples_per_s']} samples/s; "
        f"precision {sorted({t['precision'] for t in figures['trials']})}; devices {sorted(devices)}"
    )


def _write(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    main()
