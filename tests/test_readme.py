"""README.md and docs/*.md stay true: short enough to read, links that resolve, commands that run.

`test_commands_run_as_written` runs every command of every ```bash block, README.md first and
then docs/*.md in name order, in one fresh folder, each through a subprocess, and expects
exit code 0. Later commands build on earlier ones (`hpsearch card best` reads the study the
quick start made), as they do for a reader who follows the text. What the test changes or
provides, and why:

- Training commands (`hpsearch run ...`) would take minutes with the default model. They run
  with `--max-length 32` appended, and with `--model <tiny>` appended where they name no
  model: the 2-layer BERT of the `tiny_model` fixture (tests/conftest.py). Their other flags
  are kept.
- Files the reader brings are spelled `my-*` or `my_*` in the docs. The test makes them
  first: `my-model/` is a copy of the tiny model, `my-data/` holds the built-in data as
  `train.csv`, `validation.csv` and `test.csv`, and `my_card.md.j2` is a copy of the default
  card template.
- A ```toml or ```python block whose first line is a comment naming a `.toml` or `.py` file
  (`# hpsearch.toml`, `# weighted.py`) is written to that file when the commands reach it, as
  a reader would save it; `python weighted.py` then runs it as written.
- `hpsearch dashboard` serves until stopped: it is started with `--port <free port>`
  appended, must answer HTTP 200 on `/dashboard/`, and must exit 0 on SIGTERM.
- The commands run offline (`HF_HUB_OFFLINE=1`) with one torch thread (`OMP_NUM_THREADS=1`),
  which for the tiny model is as fast alone and far faster on shared cores.
- A command ending in `&` starts in the background; a `wait` line waits for every
  background command and expects each to exit 0.

Commands are not run, by an explicit rule (:data:`SKIP_RULES`), when they need what a test
must not use or does not have: the package index (`pip install`), the test suite itself
(`python -m pytest`), the Hugging Face Hub (they name `bert-base-cased` or `--dataset
glue`, or upload: `hpsearch push` without `--dry-run`, `hf upload`),
or a database server (they name `postgresql://` or `redis://`, or run `createdb`).
Any other command runs. The skipped ones are printed with their reasons.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 250
TINY_FLAGS = ("--max-length", "32")
COMMAND_TIMEOUT = 600  # seconds; a training command on a busy 2-core machine
DASHBOARD_TIMEOUT = 60

# (pattern, reason): a command that matches is not run, for that reason.
SKIP_RULES = (
    (r"^pip install\b", "installs packages from the package index"),
    (r"^python -m pytest\b", "is the test suite this test belongs to"),
    (r"\bbert-base-cased\b", "needs the Hugging Face Hub (a Hub model)"),
    (r"--dataset[ =]glue\b", "needs the Hugging Face Hub (a Hub dataset)"),
    (r"^hpsearch push\b(?!.*--dry-run)|^hf upload\b", "needs the Hugging Face Hub (an upload)"),
    (r"\bpostgresql://|^createdb\b", "needs a PostgreSQL server"),
    (r"\bredis://", "needs a Redis server"),
)


@dataclass(frozen=True)
class Step:
    """One thing a reader does, in document order: run a command or save a file."""

    source: str  # "README.md:57", for messages
    command: str | None = None
    file: str | None = None
    text: str = ""


def skip_reason(command: str) -> str | None:
    """Why ``command`` is not run (:data:`SKIP_RULES`), or None: it runs."""
    return next((reason for pattern, reason in SKIP_RULES if re.search(pattern, command)), None)


def steps(path: Path) -> list[Step]:
    """The ```bash commands and named ```toml and ```python files of a Markdown file, in order."""
    out: list[Step] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    name = path.relative_to(ROOT).as_posix()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        lang, start = fence.group(1), i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
        body = lines[start:end]
        if lang == "bash":
            out += _commands(body, name, start)
        elif lang in ("toml", "python") and body and (named := re.match(r"^#\s*(\S+\.(?:toml|py))\s*$", body[0])):
            out.append(Step(f"{name}:{start + 1}", file=named.group(1), text="\n".join(body) + "\n"))
        i = end + 1
    return out


def _commands(body: list[str], name: str, start: int) -> list[Step]:
    out, pending, first = [], "", 0
    for offset, line in enumerate(body):
        if not pending:
            first = start + offset + 1
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#"):
            out.append(Step(f"{name}:{first}", command=command))
    return out


# --------------------------------------------------------------------------- cheap checks


def test_readme_has_at_most_250_lines() -> None:
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= MAX_README_LINES, (
        f"README.md has {count} lines; keep it to {MAX_README_LINES} and move detail to docs/"
    )


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if "://" not in t and not (path.parent / t).exists()]
    assert not missing, f"{path.name} links to missing files: {missing}"


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("pip install torch==2.13.0 -e '.[test]'", "installs packages from the package index"),
        ("python -m pytest", "is the test suite this test belongs to"),
        (
            "hpsearch run --study sst2 --model bert-base-cased --dataset glue",
            "needs the Hugging Face Hub (a Hub model)",
        ),
        ("hpsearch run --dataset glue --dataset-config sst2", "needs the Hugging Face Hub (a Hub dataset)"),
        ("hpsearch run --storage postgresql://me:secret@db.example:5432/hpsearch", "needs a PostgreSQL server"),
        ("createdb hpsearch", "needs a PostgreSQL server"),
        ("hpsearch trials --storage redis://localhost:6379/0", "needs a Redis server"),
        ("hpsearch push best me/reviews-tuned --private", "needs the Hugging Face Hub (an upload)"),
        ("hf upload me/reviews-tuned studies/hpsearch/best-model .", "needs the Hugging Face Hub (an upload)"),
        ("hpsearch push best me/reviews-tuned --dry-run", None),
        ("hpsearch run --trials 20", None),
        ("hpsearch run --dataset ./my-data/glue.csv", None),
        ("hpsearch trials --json | python -c 'print(1)'", None),
    ],
)
def test_skip_rules_name_what_a_command_needs(command: str, reason: str | None) -> None:
    assert skip_reason(command) == reason


def _toml_blocks() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() == "```toml":
                end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
                out.append((f"{path.relative_to(ROOT).as_posix()}:{i + 2}", "\n".join(lines[i + 1 : end]) + "\n"))
    return out


@pytest.mark.parametrize(("source", "text"), _toml_blocks(), ids=[s for s, _ in _toml_blocks()])
def test_toml_examples_are_valid_configurations(source: str, text: str, tmp_path: Path) -> None:
    from hpsearch.config import load_config
    from hpsearch.training.space import check_training_argument_names, recipe_params

    path = tmp_path / "example.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    check_training_argument_names(config.recipe, config.space)
    recipe_params(config.recipe, config.space, config.peft)  # trial 0, the recipe, must fit the space


def test_docs_hold_commands_that_run() -> None:
    commands = [s.command for p in DOCS for s in steps(p) if s.command]
    assert any(c.startswith("hpsearch run") and skip_reason(c) is None for c in commands)
    assert any(c.startswith("hpsearch dashboard") for c in commands)


# --------------------------------------------------------------------------- the commands


# Over twenty commands, each a fresh process: 498 s beside a busy benchmark (load 6.5 on two
# cores), so past the suite's per-test limit (pyproject.toml); one command may take COMMAND_TIMEOUT.
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_commands_run_as_written(tiny_model: Path, workdir: Path) -> None:
    """See the module docstring for what runs, what is provided and what is skipped."""
    _readers_files(workdir, tiny_model)
    env = _environment()
    background: list[tuple[Step, subprocess.Popen]] = []
    skipped: list[str] = []
    timings: list[str] = []
    try:
        ran = _run_steps(workdir, tiny_model, env, background, skipped, timings)
    finally:
        for _, proc in background:  # a failure left them running
            proc.kill()
            proc.communicate()
    print("\n".join(["ran:", *timings, "not run:", *skipped]))
    assert ran > 0


def _run_steps(
    workdir: Path,
    tiny_model: Path,
    env: dict[str, str],
    background: list[tuple[Step, subprocess.Popen]],
    skipped: list[str],
    timings: list[str],
) -> int:
    """Run every step in order; return how many commands ran."""
    ran = 0
    for step in (s for path in DOCS for s in steps(path)):
        if step.file is not None:
            (workdir / step.file).write_text(step.text, encoding="utf-8")
            continue
        command = step.command
        reason = skip_reason(command)
        if reason is not None:
            skipped.append(f"{step.source}: {command}  ({reason})")
            continue
        ran += 1
        started_at = time.monotonic()
        _run_one(step, workdir, tiny_model, env, background)
        timings.append(f"{step.source}: {command}  ({time.monotonic() - started_at:.1f} s)")
    assert not background, "a command ran in the background (&) with no `wait` after it"
    return ran


def _run_one(
    step: Step, workdir: Path, tiny_model: Path, env: dict[str, str], background: list[tuple[Step, subprocess.Popen]]
) -> None:
    command = step.command
    if command == "wait":
        for started, proc in background:
            _check(started, proc.wait(timeout=COMMAND_TIMEOUT), *proc.communicate())
        background.clear()
        return
    argv = _argv(command, tiny_model)
    if argv is not None and argv[-1] == "&":
        background.append(
            (
                step,
                subprocess.Popen(
                    argv[:-1], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                ),
            )
        )
    elif argv is not None and argv[:2] == ["hpsearch", "dashboard"]:
        _dashboard(step, argv, workdir, env)
    else:
        done = subprocess.run(
            argv or ["bash", "-c", command],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        _check(step, done.returncode, done.stdout, done.stderr)


def _argv(command: str, tiny_model: Path) -> list[str] | None:
    """The argument list of an `hpsearch` command, with the tiny model's flags for `run`;
    None for any other command (it runs in bash as written)."""
    tokens = shlex.split(command, comments=True)
    if tokens[:1] != ["hpsearch"] or any(t in ("|", ">", ">>", "&&", ";") for t in tokens):
        return None
    tail = ["&"] if tokens[-1] == "&" else []
    tokens = tokens[: len(tokens) - len(tail)]
    if tokens[1:2] == ["run"]:
        if "--model" not in tokens:
            tokens += ["--model", str(tiny_model)]
        tokens += TINY_FLAGS
    return tokens + tail


def _dashboard(step: Step, argv: list[str], workdir: Path, env: dict[str, str]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*argv, "--port", str(port)], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    status = None
    try:
        deadline = time.monotonic() + DASHBOARD_TIMEOUT
        while status is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard/", timeout=5) as response:
                    status = response.status
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        out, err = proc.communicate()
    assert status == 200, (
        f"{step.source}: `{step.command}` gave HTTP {status} on /dashboard/ (exit {proc.returncode})\n{err[-2000:]}"
    )
    _check(step, code, out, err)


def _check(step: Step, code: int, out: str, err: str) -> None:
    assert code == 0, (
        f"{step.source}: `{step.command}` exited {code}\n--- stdout\n{out[-2000:]}\n--- stderr\n{err[-3000:]}"
    )


def _readers_files(folder: Path, tiny_model: Path) -> None:
    """The files the docs expect a reader to bring (``my-*``, ``my_*``)."""
    from hpsearch.builtin import builtin_reviews
    from hpsearch.card.render import default_template_path

    shutil.copytree(tiny_model, folder / "my-model")
    (folder / "my-data").mkdir()
    for split, frame in builtin_reviews().items():
        frame.to_csv(folder / "my-data" / f"{split}.csv", index=False)
    shutil.copy(default_template_path(), folder / "my_card.md.j2")


def _environment() -> dict[str, str]:
    """This interpreter's `hpsearch` and `python` first on PATH; no network; one torch thread.

    The tiny model's matrices are too small to gain from a second thread, and on cores that
    other processes keep busy, torch's threads wait on each other, which made these
    commands several times slower.
    """
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return env
