"""GPU throughput: training samples per second inside hpsearch against a bare Trainer.

    python benchmarks/gpu_throughput.py                  # bert-base (BertConfig defaults), 3 trials x 1 epoch
    python benchmarks/gpu_throughput.py --trials 4 --rows 8192 --batch 64
    python benchmarks/gpu_throughput.py --tiny           # a smoke test of the script on a CPU
    python benchmarks/gpu_throughput.py --tokenizer DIR  # on a machine without the packaged MiniLM
    python benchmarks/gpu_throughput.py --profile 20     # also a torch.profiler summary of 20 steps per side

A bert-base-sized model (``BertConfig()`` defaults, random weights, the packaged MiniLM
tokenizer, whose vocabulary is bert-base's) trains a few trials of one fixed
configuration (batch, learning rate; nothing searched, no pruning) inside ``run_search``
and, in another process, in a bare ``Trainer`` with the same settings: bf16 where the GPU
supports it, TF32, evaluation batch 64 each epoch, no checkpoints. A callback times each
training epoch (from ``on_epoch_begin`` to ``on_epoch_end``, with the device synchronised,
evaluation excluded) and divides the training rows by it. The first trial of each side
pays CUDA start-up, so the figure is the median of the later trials. The sides alternate
(hpsearch, Trainer, Trainer, hpsearch, ...) when ``--rounds`` is above 1; ``--first trainer``
starts with the Trainer. Each side also records how long each whole ``train()`` took
(every epoch with its evaluation).

``--profile N`` runs ``torch.profiler`` over N training steps of each side's last trial
(after 3 steps skipped and 2 of warm-up) and stores, per side, the wall time of a profiled
step, the host (CPU) and device time per step of the operators that cost most, and how
many kernels each step launched: where a host-bound step spends its time. The profiled
trial is slower than the others and, with 3 trials or more, is left out of the samples/s
figure.

Data: ``--dataset`` if given, else synthetic reviews of 40-120 words (``--rows`` of them,
truncated at ``--max-length`` tokens), made here with a fixed seed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h

# Both sides evaluate in batches of this many rows, as in the figures of RESULTS.md section 5.
EVAL_BATCH = 64


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--role", choices=("parent", "hpsearch", "trainer"), default="parent", help=argparse.SUPPRESS)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rows", type=int, default=4096, help="synthetic training rows (validation: a quarter)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--dataset", default=None, help="a dataset folder instead of the synthetic data")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--first", choices=("hpsearch", "trainer"), default="hpsearch", help="the side that runs first in round 0"
    )
    p.add_argument(
        "--tiny", action="store_true", help="a 2-layer model and 256 rows: checks the script, measures nothing"
    )
    p.add_argument("--src", default=None, help="run the hpsearch side from this source tree (a proposed change)")
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="STEPS",
        help="profile this many training steps of each side's last trial (0: off)",
    )
    p.add_argument("--trace-dir", default=None, help="with --profile, also write each side's Chrome trace here")
    p.add_argument(
        "--tokenizer", default=None, help="a tokenizer folder (default: the packaged MiniLM's, bert-base's vocabulary)"
    )
    p.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    h.dispatch(args, _parent, hpsearch=_hpsearch_child, trainer=_trainer_child)


def _parent(args: argparse.Namespace) -> None:
    if args.tiny:
        args.rows, args.batch = min(args.rows, 256), min(args.batch, 16)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        model_dir = _make_model(Path(tmp) / "bert-base-random", tiny=args.tiny, tokenizer_dir=args.tokenizer)
        data_dir = args.dataset or str(_make_data(Path(tmp) / "data", args.rows))
        profile = ["--profile", str(args.profile)] + (
            ["--trace-dir", str(Path(args.trace_dir).resolve())] if args.trace_dir else []
        )
        common = [
            *profile,
            "--trials",
            str(args.trials),
            "--epochs",
            str(args.epochs),
            "--batch",
            str(args.batch),
            "--max-length",
            str(args.max_length),
            "--model-dir",
            str(model_dir),
            "--data-dir",
            data_dir,
        ]
        runs = []
        for r in range(args.rounds):
            order = ["hpsearch", "trainer"] if args.first == "hpsearch" else ["trainer", "hpsearch"]
            for side in order if r % 2 == 0 else order[::-1]:
                with tempfile.TemporaryDirectory(prefix=f"bench-gpu-{side}-", dir=tmp) as work:
                    out = h.run_child(
                        [__file__, "--role", side, "--workdir", work, *common],
                        src=args.src if side == "hpsearch" else None,
                        cwd=work,
                    )
                out["side"], out["round"] = side, r
                runs.append(out)
                print(
                    f"round {r} {side:>8}: {out['steady_samples_per_s']:.1f} samples/s "
                    f"(per trial {out['samples_per_s']}), {out['device']}",
                    file=sys.stderr,
                )
                if out.get("profile"):
                    _print_profile(side, out["profile"])
    by_side = {s: [x["steady_samples_per_s"] for x in runs if x["side"] == s] for s in ("hpsearch", "trainer")}
    summary = {
        "device": runs[0]["device"],
        "bf16": runs[0]["bf16"],
        "hpsearch_samples_per_s": by_side["hpsearch"],
        "trainer_samples_per_s": by_side["trainer"],
        "ratio_hpsearch_to_trainer": [
            round(a / b, 3) for a, b in zip(by_side["hpsearch"], by_side["trainer"], strict=False)
        ],
        "hpsearch_train_s": [x["steady_train_s"] for x in runs if x["side"] == "hpsearch"],
        "trainer_train_s": [x["steady_train_s"] for x in runs if x["side"] == "trainer"],
    }
    if args.profile:
        summary["profile_step_ms"] = {
            s: [x["profile"].get("step_ms") for x in runs if x["side"] == s] for s in ("hpsearch", "trainer")
        }
        summary["profile_kernels_per_step"] = {
            s: [x["profile"].get("kernels_per_step") for x in runs if x["side"] == s] for s in ("hpsearch", "trainer")
        }
    payload = {
        "benchmark": "gpu_throughput",
        "command": h.command_line(),
        "machine": h.machine(),
        "settings": vars(args),
        "runs": runs,
        "summary": summary,
    }
    path = h.save("gpu_throughput", payload)
    print(json.dumps(summary, indent=2))
    print(f"saved {path.relative_to(h.REPO)}", file=sys.stderr)


def _make_model(folder: Path, *, tiny: bool, tokenizer_dir: str | None) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from hpsearch import packaged_default_model

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or str(packaged_default_model()))
    torch.manual_seed(0)
    config = (
        BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128)
        if tiny
        else BertConfig()
    )
    config.vocab_size = tokenizer.vocab_size
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _make_data(folder: Path, rows: int) -> Path:
    import csv

    rng = random.Random(20240605)
    words = (
        "the kettle lamp charger battery price design handle works broke quickly slowly great awful "
        "really quite never not but and after before week month return refund replace recommend"
    ).split()
    folder.mkdir(parents=True)
    for split, n in (("train", rows), ("validation", max(64, rows // 4))):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for _ in range(n):
                w.writerow([" ".join(rng.choice(words) for _ in range(rng.randint(40, 120))), rng.randint(0, 1)])
    return folder


def _print_profile(side: str, prof: dict[str, Any]) -> None:
    print(
        f"  {side} profile: {prof['steps']} steps, {prof['step_ms']} ms a step, "
        f"{prof['kernels_per_step']} kernel launches a step",
        file=sys.stderr,
    )
    for row in prof["top"][:12]:
        print(
            f"    {row['self_cpu_ms_per_step']:8.2f} ms host {row['self_device_ms_per_step']:8.2f} ms device "
            f"{row['calls_per_step']:7.1f} calls  {row['name']}",
            file=sys.stderr,
        )


class StepProfiler:
    """``torch.profiler`` over a few training steps of the last trial.

    ``prof.step()`` at every step end moves the profiler's schedule on; the summary is read
    when the active window closes (``on_trace_ready``), before the trial ends.
    """

    WAIT, WARMUP = 3, 2

    def __init__(self, steps: int, last_trial: int, trace_dir: str | None, side: str) -> None:
        self.steps, self.last_trial, self.trace_dir, self.side = steps, last_trial, trace_dir, side
        self.summary: dict[str, Any] = {}
        self._trials = 0
        self._prof: Any = None

    def callback(self) -> Any:
        from transformers import TrainerCallback

        outer = self

        class _Cb(TrainerCallback):
            def on_train_begin(self, *a: Any, **k: Any) -> None:
                outer._trials += 1
                if outer.steps and outer._trials == outer.last_trial:
                    outer._start()

            def on_step_end(self, *a: Any, **k: Any) -> None:
                if outer._prof is not None:
                    outer._prof.step()

            def on_train_end(self, *a: Any, **k: Any) -> None:
                if outer._prof is not None:
                    outer._prof.__exit__(None, None, None)
                    outer._prof = None

        return _Cb()

    def _start(self) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile, schedule

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self._prof = profile(
            activities=activities,
            schedule=schedule(wait=self.WAIT, warmup=self.WARMUP, active=self.steps, repeat=1),
            on_trace_ready=self._ready,
        )
        self._prof.__enter__()

    def _ready(self, prof: Any) -> None:
        events = prof.key_averages()
        n = self.steps
        step_events = [e for e in events if e.key.startswith("ProfilerStep")]
        step_ms = sum(e.cpu_time_total for e in step_events) / 1000 / max(1, sum(e.count for e in step_events))
        launches = sum(
            e.count
            for e in events
            if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
        )
        ops = [e for e in events if not e.key.startswith("ProfilerStep")]
        ops.sort(key=lambda e: e.self_cpu_time_total + e.self_device_time_total, reverse=True)
        self.summary = {
            "steps": n,
            "step_ms": round(step_ms, 2),
            "kernels_per_step": round(launches / n, 1),
            "host_ms_per_step": round(sum(e.self_cpu_time_total for e in ops) / 1000 / n, 2),
            "device_ms_per_step": round(sum(e.self_device_time_total for e in ops) / 1000 / n, 2),
            "top": [
                {
                    "name": e.key,
                    "calls_per_step": round(e.count / n, 1),
                    "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1000 / n, 3),
                    "self_device_ms_per_step": round(e.self_device_time_total / 1000 / n, 3),
                }
                for e in ops[:40]
            ],
        }
        if self.trace_dir:
            Path(self.trace_dir).mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(Path(self.trace_dir) / f"trace-{self.side}.json"))


class Throughput:
    """Times each training epoch with the device synchronised; evaluation is outside it.

    It also times each whole ``train()`` (every epoch with its evaluation), which shows what
    the trial's per-epoch work around the training steps costs.
    """

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.per_epoch: list[float] = []
        self.per_trial_s: list[float] = []
        self._started = 0.0
        self._train_started = 0.0

    def callback(self) -> Any:
        from transformers import TrainerCallback

        outer = self

        class _Cb(TrainerCallback):
            def on_train_begin(self, *a: Any, **k: Any) -> None:
                _sync()
                outer._train_started = time.perf_counter()

            def on_train_end(self, *a: Any, **k: Any) -> None:
                _sync()
                outer.per_trial_s.append(round(time.perf_counter() - outer._train_started, 2))

            def on_epoch_begin(self, *a: Any, **k: Any) -> None:
                _sync()
                outer._started = time.perf_counter()

            def on_epoch_end(self, *a: Any, **k: Any) -> None:
                _sync()
                outer.per_epoch.append(outer.rows / (time.perf_counter() - outer._started))

        return _Cb()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device() -> tuple[str, bool]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", False
    return torch.cuda.get_device_name(0), torch.cuda.is_bf16_supported()


def _result(meter: Throughput, trials: int, profiler: StepProfiler) -> dict[str, Any]:
    per_trial = [round(x, 1) for x in meter.per_epoch]
    later = per_trial[len(per_trial) // trials :] if trials > 1 else per_trial  # skip the first trial's epochs
    trial_s = meter.per_trial_s
    if profiler.summary and trials > 2:  # the profiled last trial is slower: leave it out
        later = later[: len(later) - len(per_trial) // trials]
        trial_s = trial_s[:-1]
    device, bf16 = _device()
    return {
        "samples_per_s": per_trial,
        "steady_samples_per_s": round(statistics.median(later), 1),
        "train_s_per_trial": trial_s,
        "steady_train_s": round(statistics.median(trial_s[1:] if len(trial_s) > 1 else trial_s), 2),
        "device": device,
        "bf16": bf16,
        "profile": profiler.summary,
    }


def _hpsearch_child(args: argparse.Namespace) -> dict[str, Any]:
    from hpsearch import load_config, run_search

    toml = Path(args.workdir) / "fixed.toml"
    # A scalar in [space] fixes the parameter: one configuration, nothing searched.
    toml.write_text(
        f"[recipe]\nper_device_eval_batch_size = {EVAL_BATCH}\n"
        f"[space]\nper_device_train_batch_size = {args.batch}\nlearning_rate = 5e-05\n"
        "warmup_ratio = 0.0\nweight_decay = 0.0\n",
        encoding="utf-8",
    )
    config = load_config(
        toml,
        overrides={
            "model": args.model_dir,
            "dataset": args.data_dir,
            "trials": args.trials,
            "epochs": args.epochs,
            "pruner": "none",
            "early_stopping_patience": 0,
            "max_length": args.max_length,
            "storage": f"sqlite:///{args.workdir}/hpsearch.db",
            "workdir": f"{args.workdir}/studies",
        },
    )
    meter = Throughput(_train_rows(args.data_dir))
    profiler = StepProfiler(args.profile, args.trials, args.trace_dir, "hpsearch")
    run_search(config, callbacks=[meter.callback(), profiler.callback()])
    return _result(meter, args.trials, profiler)


def _trainer_child(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from hpsearch import load_config, load_task, tokenize_task

    hf_logging.set_verbosity_error()
    config = load_config(overrides={"model": args.model_dir, "dataset": args.data_dir, "max_length": args.max_length})
    task = load_task(config)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    data = tokenize_task(task, tokenizer, args.max_length)
    device, bf16 = _device()
    cuda = torch.cuda.is_available()
    meter = Throughput(len(data["train"]))
    profiler = StepProfiler(args.profile, args.trials, args.trace_dir, "trainer")
    for trial in range(args.trials):
        training_args = TrainingArguments(
            output_dir=f"{args.workdir}/trial-{trial}",
            per_device_train_batch_size=args.batch,
            per_device_eval_batch_size=EVAL_BATCH,
            learning_rate=5e-05,
            num_train_epochs=args.epochs,
            seed=42,
            eval_strategy="epoch",
            save_strategy="no",
            logging_strategy="epoch",
            report_to="none",
            disable_tqdm=True,
            bf16=bf16,
            fp16=cuda and not bf16,
            tf32=True if cuda and torch.cuda.get_device_capability()[0] >= 8 else None,
        )
        model = AutoModelForSequenceClassification.from_pretrained(args.model_dir, num_labels=task.num_labels)
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=data["train"],
            eval_dataset=data["validation"],
            processing_class=tokenizer,
            callbacks=[meter.callback(), profiler.callback()],
        )
        trainer.train()
        del trainer, model
    return _result(meter, args.trials, profiler)


def _train_rows(folder: str) -> int:
    import csv

    with open(Path(folder) / "train.csv", encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f)) - 1


if __name__ == "__main__":
    main()
