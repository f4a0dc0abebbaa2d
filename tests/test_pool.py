"""Several workers from one command (``--workers``, ``--devices``), and the precision a trial records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import tiny_run_args
from optuna.trial import TrialState
from test_storage import deleted_afterwards, storage_url, unique_name
from transformers import TrainerCallback

from hpsearch import schema
from hpsearch.config import load_config
from hpsearch.errors import ConfigError
from hpsearch.search.pool import WorkerSettings, plan
from hpsearch.search.storage import open_storage

FAST = ("--epochs", "1", "--pruner", "none", "--max-train-samples", "32", "--max-eval-samples", "16")
URL = "sqlite:///studies/hpsearch.db"


def _study(folder: Path, name: str = "hpsearch", url: str | None = None) -> optuna.Study:
    url = url or f"sqlite:///{folder}/studies/hpsearch.db"
    return optuna.load_study(study_name=name, storage=open_storage(url, create=False))


def _spawn(folder: Path, model: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", *tiny_run_args(model, *args)],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _wait_for_running(
    folder: Path, proc: subprocess.Popen, count: int, timeout: float = 120, **study: str
) -> list[optuna.trial.FrozenTrial]:
    """Until ``count`` trials run at once, each past its first epoch (read from storage, not the log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            running = [
                t
                for t in _study(folder, **study).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if schema.rows(t)
            ]
        except Exception:  # the study is not made yet, or the file is busy
            running = []
        if len(running) >= count:
            return running
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{count} trials never ran at once")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


# --------------------------------------------------------------------------- planning


def test_cpu_workers_get_their_share_of_the_cores_and_no_gpu():
    workers = plan(workers=2, devices=None, per_device=1, cuda_devices=0, cpus=8)
    assert [(w.label, w.env) for w in workers] == [
        ("[worker 0]", {"OMP_NUM_THREADS": "4", "CUDA_VISIBLE_DEVICES": ""}),
        ("[worker 1]", {"OMP_NUM_THREADS": "4", "CUDA_VISIBLE_DEVICES": ""}),
    ]


@pytest.mark.parametrize(
    ("devices", "per_device", "labels"),
    [
        ("all", 1, ["[cuda:0]", "[cuda:1]", "[cuda:2]", "[cuda:3]"]),
        ("0,2,3", 1, ["[cuda:0]", "[cuda:2]", "[cuda:3]"]),
        ("1", 2, ["[cuda:1/0]", "[cuda:1/1]"]),
    ],
)
def test_devices_pin_one_worker_per_listed_gpu(devices, per_device, labels):
    workers = plan(workers=None, devices=devices, per_device=per_device, cuda_devices=4, cpus=16)
    assert [w.label for w in workers] == labels
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in workers] == [label[6] for label in labels]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"workers": None, "devices": "0", "cuda_devices": 0},
            r"^--devices 0: this machine has no CUDA device; use --workers N for CPU processes$",
        ),
        (
            {"workers": None, "devices": "4", "cuda_devices": 4},
            r"^--devices 4: this machine has CUDA devices 0 to 3, each listed once$",
        ),
        (
            {"workers": None, "devices": "0,x", "cuda_devices": 4},
            r"^--devices: expected all or CUDA indices such as 0,2,3, got '0,x'$",
        ),
        ({"workers": 2, "devices": "0", "cuda_devices": 4}, r"^--workers and --devices: pass one"),
        ({"workers": 0, "devices": None, "cuda_devices": 0}, r"^--workers: expected an integer >= 1, got 0$"),
    ],
)
def test_a_pool_that_cannot_be_is_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        plan(per_device=1, cpus=2, **kwargs)


def test_a_worker_receives_the_parents_resolved_settings_not_its_command_line(tmp_path):
    toml = tmp_path / "hpsearch.toml"
    toml.write_text('trials = 4\n[space]\nweight_decay = 0.01\n[pruner]\nname = "median"\n', encoding="utf-8")
    config = load_config(toml, {"epochs": 1, "study": "s", "seeds": 3})
    sent = WorkerSettings(config, confirm_top=2)
    sent.write(tmp_path / "settings.json")
    assert WorkerSettings.read(tmp_path / "settings.json") == sent  # file and flags already applied


def test_a_chained_confirmation_runs_on_the_same_workers_after_the_search(workdir, tiny_model):
    proc = _spawn(workdir, tiny_model, *FAST, "--trials", "3", "--workers", "2", "--confirm-top", "1", "--seeds", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    search, confirm = _study(workdir), _study(workdir, "hpsearch" + schema.CONFIRM_SUFFIX)
    assert len(search.trials) == 3  # the workers searched without the chain's flags
    runs = [(schema.confirms(t), schema.run_seed(t)) for t in confirm.trials if t.state == TrialState.COMPLETE]
    leader = max((t for t in search.trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, -t.number))
    assert sorted(runs) == sorted({(leader.number, 43), (schema.recipe_trial(search.trials).number, 43)})
    assert str(proc.pid) not in {schema.worker(t).rsplit(":", 1)[-1] for t in confirm.trials}  # run by the workers
    assert "\nonce the search is done they confirm the top 1 and the recipe with 2 seeds\n" in err
    assert out.count("study: hpsearch in") == 1 and "confirmed winner: trial" in out
    assert out.strip().splitlines()[-1].startswith("Verdict: ")


def test_devices_without_cuda_is_one_line_exit_2_and_nothing_made(workdir, tiny_model, cli):
    code, out, err = cli(*tiny_run_args(tiny_model, "--devices", "0", "--trials", "2"))
    assert code == 2
    assert err.strip().splitlines() == [
        "hpsearch: error: --devices 0: this machine has no CUDA device; use --workers N for CPU processes"
    ]
    assert list(workdir.iterdir()) == []


# --------------------------------------------------------------------------- real workers


def test_two_workers_reach_the_total_exactly_with_the_recipe_once(workdir, tiny_model):
    proc = _spawn(workdir, tiny_model, *FAST, "--trials", "4", "--workers", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    trials = _study(workdir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert [t.number for t in trials if schema.is_recipe(t)] == [0]
    assert len({schema.worker(t) for t in trials}) == 2  # both workers ran trials
    lines = err.splitlines()
    assert lines[0] == "starting 2 workers: [worker 0] [worker 1]"
    assert all(line.startswith(("[worker 0] ", "[worker 1] ")) for line in lines[1:]), err
    assert out.count("study: hpsearch in") == 1  # one summary, from the parent


def test_ctrl_c_on_the_parent_stops_every_worker_and_the_same_command_resumes(workdir, tiny_model):
    args = (
        "--epochs",
        "30",
        "--pruner",
        "none",
        "--early-stopping-patience",
        "0",
        "--max-train-samples",
        "32",
        "--max-eval-samples",
        "16",
        "--trials",
        "3",
        "--workers",
        "2",
    )
    proc = _spawn(workdir, tiny_model, *args)
    running = _wait_for_running(workdir, proc, 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    pids = {int(schema.worker(t).rpartition(":")[2]) for t in running}
    assert not any(_alive(pid) for pid in pids)
    interrupted = [_study(workdir).trials[t.number] for t in running]
    assert [(t.state, schema.fail_reason(t)) for t in interrupted] == [(TrialState.FAIL, "interrupted")] * 2

    proc = _spawn(workdir, tiny_model, *args)  # the same command
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    assert schema.count_finished(_study(workdir).trials) == 3


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
def test_a_worker_killed_mid_trial_leaves_the_study_to_the_other(workdir, tiny_model, kind):
    # On a server the dead worker is found by its heartbeat (stale or its process gone), not by a file.
    url = URL if kind == "sqlite" else storage_url(kind, workdir)
    name = "hpsearch" if kind == "sqlite" else unique_name()
    args = (
        "--epochs",
        "6",
        "--pruner",
        "none",
        "--early-stopping-patience",
        "0",
        "--max-train-samples",
        "128",
        "--max-eval-samples",
        "16",
        "--trials",
        "4",
        "--workers",
        "2",
        "--storage",
        url,
        "--study",
        name,
    )
    with deleted_afterwards(name, url):
        proc = _spawn(workdir, tiny_model, *args)
        running = _wait_for_running(workdir, proc, 2, name=name, url=url)
        victim = running[0]
        pid = schema.worker(victim).rpartition(":")[2]
        os.kill(int(pid), signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        trials = _study(workdir, name, url).trials
        assert trials[victim.number].state == TrialState.FAIL
        # the reason is stored on the trial, for every reader of the storage
        reason = trials[victim.number].user_attrs[schema.FAIL_REASON]
        assert reason == f"worker {schema.worker(victim)} is gone (process {pid} has exited)"
        assert schema.count_finished(trials) == 4
        # the recipe is in the study once as complete, whichever trial the kill hit
        assert len([t for t in trials if schema.is_recipe(t) and t.state == TrialState.COMPLETE]) == 1


# --------------------------------------------------------------------------- precision


def test_fp16_without_a_gpu_is_refused_in_one_line(workdir, tiny_model, cli):
    code, _, err = cli(*tiny_run_args(tiny_model, *FAST, "--trials", "1", "--precision", "fp16"))
    assert code == 2
    assert err.strip().splitlines() == [
        "hpsearch: error: precision: fp16 needs a CUDA GPU and none is visible; use --precision fp32 or bf16 on a CPU"
    ]
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize(("requested", "stored", "amp"), [("auto", "fp32", False), ("bf16", "bf16", True)])
def test_the_resolved_precision_is_stored_matched_on_resume_and_in_the_card(
    workdir, tiny_model, cli, requested, stored, amp
):
    assert cli(*tiny_run_args(tiny_model, *FAST, "--trials", "1", "--precision", requested))[0] == 0
    study = _study(workdir)
    trial = study.trials[0]
    assert schema.training_args(trial)["precision"] == stored
    assert schema.read_settings(study).config["precision"] == stored
    assert schema.device(trial)["peak_memory_mib"] is None  # no GPU here
    other = "bf16" if stored == "fp32" else "fp32"
    code, _, err = cli(*tiny_run_args(tiny_model, *FAST, "--trials", "2", "--precision", other))
    assert code == 2 and f"was made with precision='{stored}', this run has precision='{other}'" in err
    assert cli("card", "0")[0] == 0
    card = (workdir / "studies" / "hpsearch" / "trial-0" / "README.md").read_text(encoding="utf-8")
    assert f"- precision: {stored}" in card
    assert ("- mixed_precision_training: Native AMP" in card) is amp
    assert f"Compute: trained on {schema.device(trial)['name']}." in card  # no GPU memory on a CPU
    code, out, _ = cli("trials", "--json")
    import json

    record = json.loads(out)[0]
    assert record["device"] == schema.device(trial) and record["training_args"]["precision"] == stored


class PrecisionProbe(TrainerCallback):
    """What a trial trained in: the TrainingArguments its Trainer holds, and at each training
    forward pass the CPU autocast state and the dtype the classifier's linear layer computed in."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self.seen: list[tuple[bool, Any]] = []
        self._hook: Any = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.args.append(args)
        self._hook = model.get_submodule("classifier").register_forward_hook(self._record)

    def on_train_end(self, args, state, control, **kwargs):
        self._hook.remove()

    def _record(self, module: Any, inputs: Any, output: Any) -> None:
        import torch

        if module.training:  # a training step, not an evaluation
            self.seen.append((torch.is_autocast_enabled("cpu"), output.dtype))


def test_bf16_on_a_cpu_trains_under_bf16_autocast(workdir, tiny_model):
    import torch

    from hpsearch import load_config, run_search

    probe = PrecisionProbe()
    overrides = {"model": str(tiny_model), "max_length": 32, "trials": 1, "epochs": 1, "pruner": "none"}
    samples = {"max_train_samples": 32, "max_eval_samples": 16}
    run_search(load_config(None, {**overrides, **samples, "precision": "bf16"}), callbacks=[probe])
    (args,) = probe.args
    assert (args.bf16, args.fp16, args.use_cpu) == (True, False, True)
    # 32 examples in batches of 8: four forward passes, each in bfloat16, not float32
    assert probe.seen == [(True, torch.bfloat16)] * 4
    assert schema.training_args(_study(workdir).trials[0])["precision"] == "bf16"


def test_the_gpu_check_runs_its_cpu_dry_run(tmp_path):
    import json

    script = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        ["bash", str(script), "--dry-run", "--out", str(out)], capture_output=True, text=True, env=env, timeout=480
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result["search"]) == {"1 worker", "2 workers"}
    for figures in [*result["search"].values(), result["levers"]["none"]]:
        assert "error" not in figures, figures
        assert [t["precision"] for t in figures["trials"]] == ["fp32"]
        assert figures["samples_per_s"] > 0 and figures["card"].endswith("README.md")
