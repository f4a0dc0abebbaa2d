"""The ``hpsearch`` command: thin commands that hand off to the library.

User errors leave through :func:`abort` as one line on stderr with exit code 2; anything
unexpected is caught here only, and its traceback is shown with ``--verbose``. Results go
to stdout, progress and diagnostics to stderr. torch and transformers are imported only
by the commands that train, so ``hpsearch --help`` and ``hpsearch trials`` are quick.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from hpsearch.config import DEFAULT_CONFIRM_TOP, DEFAULT_SEEDS, load_config
from hpsearch.errors import HpsearchError, first_line
from hpsearch.layout import BEST_MODEL, StudyLayout

# At exit, skip the collector's last pass over every object torch and transformers made
# (2 s on 2 CPUs after a search): the process is ending and the study is already stored.
atexit.register(gc.freeze)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        abort(f"{message} (see `{self.prog} --help`)", EXIT_USAGE)


def abort(message: str, code: int = EXIT_USAGE) -> NoReturn:
    sys.stderr.write(f"hpsearch: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        where = f"hpsearch {args.command}" if getattr(args, "command", None) else "hpsearch"
        abort(f"unrecognized arguments: {' '.join(extra)} (see `{where} --help`)")
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except HpsearchError as e:
        if args.verbose:
            traceback.print_exc()
        abort(str(e), e.exit_code)
    except KeyboardInterrupt:
        if args.command in ("run", "confirm"):  # only these have a trial to record and something to resume
            sys.stderr.write(
                "hpsearch: interrupted; the running trial is recorded as failed and the study is intact. "
                "Run the same command to resume.\n"
            )
        else:
            sys.stderr.write("hpsearch: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug: one line unless asked for more
        if args.verbose:
            traceback.print_exc()
            return 1
        abort(f"unexpected {type(e).__name__}: {first_line(e)} (run again with --verbose for the traceback)", 1)


# `run`'s options that set a configuration key (the flag's name with "_" for "-", "--metric"
# and "--report-to" giving the lists "metrics" and "report_to"): argparse keywords, help.
_RUN_OPTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "--trials": ({"type": int}, "total of finished (complete or pruned) trials the study should hold (default 20)"),
    "--model": ({}, "Hub model id or local folder (default: the packaged all-MiniLM-L6-v2)"),
    "--dataset": (
        {},
        "Hub dataset id, a folder with train/validation[/test] files, or one CSV/JSON/JSONL/Parquet file "
        "(default: builtin)",
    ),
    "--dataset-config": ({}, "the Hub dataset's configuration name (e.g. sst2)"),
    "--text-column": ({}, "text column (default: text, or sentence1 + sentence2)"),
    "--text-pair-column": ({}, "second text column for sentence-pair tasks"),
    "--label-column": ({}, "label column (default: label)"),
    "--epochs": ({"type": int}, "epochs per trial (the recipe's 5 by default)"),
    "--max-train-samples": ({"type": int}, "use at most N training rows"),
    "--max-eval-samples": ({"type": int}, "use at most N validation (and test) rows"),
    "--max-length": ({"type": int}, "truncate texts to N tokens (default 128)"),
    "--pruner": ({}, "best | median | halving | hyperband | none (default best)"),
    "--sampler": ({}, "tpe | random | qmc (default tpe, seed 42)"),
    "--objective": ({}, "validation metric to maximise: f1 | accuracy | precision | recall, or what a --metric stores"),
    "--checkpoint": (
        {},
        "which epoch a trial ships: best | last (default best, as the Trainer's load_best_model_at_end; "
        "a trial stopped early ships its best)",
    ),
    "--early-stopping-patience": (
        {"type": int},
        "stop a trial once its objective has not improved for N epochs after it began to learn (default 2; 0: off)",
    ),
    "--timeout": ({"type": float}, "stop starting new trials after SECONDS"),
    "--seeds": (
        {"type": int, "metavar": "S"},
        "seeds each contender is judged on (default 1); above 1, challengers race the incumbent on the same seeds "
        "during the search, or with --confirm-top the K best are confirmed on them after it",
    ),
    "--storage-timeout": (
        {"type": float},
        "retry a storage server that stopped answering for SECONDS before exiting (default 60)",
    ),
    "--trust-remote-code": ({"action": "store_const", "const": True}, "allow model code from the Hub (off by default)"),
    "--metric": (
        {"action": "append", "metavar": "NAME"},
        "add an evaluate metric to every epoch: a Hub name, or a local folder or .py file (repeatable)",
    ),
    "--report-to": (
        {"action": "append", "metavar": "TRACKER"},
        "log every trial as a run of the Trainer's tracker: tensorboard, wandb, mlflow, ... (repeatable; default none)",
    ),
    "--precision": (
        {},
        "auto | fp32 | bf16 | fp16 (default auto: bf16 on a GPU that has it, fp16 on an older GPU, fp32 on a CPU)",
    ),
    "--peft": ({"choices": ["lora"]}, "train a LoRA adapter and the head, not every weight (the [peft] defaults)"),
}


# `run`'s options that are not configuration keys: the workers it starts, the confirmation it chains.
_POOL_AND_CHAIN_OPTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "--workers": ({"type": int}, "run N worker processes on the CPU, each with its share of the cores"),
    "--devices": ({}, "run one worker per CUDA device: all, or indices such as 0 or 0,2,3"),
    "--workers-per-device": ({"type": int, "default": 1}, "workers on each device of --devices (default 1)"),
    "--confirm-top": (
        {"type": int, "metavar": "K"},
        "judge after the search instead of racing: confirm its K best and the recipe on --seeds seeds (at least 2)",
    ),
}


def _dest(flag: str) -> str:
    return {"--metric": "metrics"}.get(flag, flag.removeprefix("--").replace("-", "_"))


_RUN_KEYS = ("study", "storage", "workdir", *map(_dest, _RUN_OPTIONS))


# --------------------------------------------------------------------------- parser


def _build_parser() -> argparse.ArgumentParser:
    from hpsearch import __version__

    about = "Search the hyperparameters of a transformers fine-tune around a base recipe, and write the winner's card."
    parser = _Parser(prog="hpsearch", description=about)
    parser.add_argument("--version", action="version", version=f"hpsearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run or resume a search",
        description="Run or resume a search: an Optuna study of Trainer fine-tunes around the base recipe.",
    )
    _common(run)
    for flag, (kwargs, text) in _RUN_OPTIONS.items():
        run.add_argument(flag, dest=_dest(flag), help=text, **kwargs)
    for flag, (kwargs, text) in _POOL_AND_CHAIN_OPTIONS.items():
        run.add_argument(flag, dest=_dest(flag), help=text, **kwargs)
    # A pool's worker: the parent's resolved settings (hpsearch.search.pool.WorkerSettings).
    run.add_argument("--worker-settings", dest="worker_settings", help=argparse.SUPPRESS)
    run.set_defaults(handler=_run)

    card = sub.add_parser("card", help="write the model card of the best trial or of trial N")
    card.add_argument("trial", help="'best' or a trial number")
    _common(card)
    default_card = f"studies/<study>/{BEST_MODEL}/README.md, or studies/<study>/trial-<N>/README.md"
    card.add_argument("--output", help=f"where to write README.md (default: {default_card})")
    own = "a Jinja2 template of your own (default: the packaged model_card.md.j2; "
    card.add_argument("--template", help=own + "a checkout links it as templates/model_card.md.j2)")
    card.add_argument("--force", action="store_true", help="overwrite a README.md that hpsearch did not write")
    card.set_defaults(handler=_card)

    trials = sub.add_parser("trials", help="list a study's trials")
    _common(trials)
    trials.add_argument("--json", action="store_true", help="JSON for scripts: one object per trial, with its epochs")
    trials.set_defaults(handler=_trials)

    report = sub.add_parser("report", help="write a self-contained HTML report of a study")
    _common(report)
    report.add_argument("--output", help="the HTML file (default: studies/<study>/report.html)")
    report.set_defaults(handler=_report)

    confirm = sub.add_parser(
        "confirm",
        help="train the best configurations again with other seeds and pick by the mean",
        description=(
            "Train the --top best configurations of a study and the recipe again with --seeds seeds each "
            "(the original trial is one of them), pick the winner by mean validation score, and ship its best run."
        ),
    )
    _common(confirm)
    confirm.add_argument(
        "--top",
        type=int,
        default=DEFAULT_CONFIRM_TOP,
        help="configurations to confirm: the N best complete trials (default %(default)s); the recipe comes along",
    )
    seeds = "seeds per configuration, the recipe's seed and the next ones, original trial included (default 5: 42..46)"
    confirm.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help=seeds)
    confirm.set_defaults(handler=_confirm)

    push = sub.add_parser("push", help="upload the best model and its card to the Hugging Face Hub")
    push.add_argument("trial", choices=["best"], help=f"'best': the {BEST_MODEL} folder")
    push.add_argument(
        "repo_id", metavar="REPO_ID", help="the Hub model repository, such as you/reviews-tuned (created if missing)"
    )
    _common(push)
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--dry-run", action="store_true", help="list the files to be uploaded, and upload nothing")
    push.set_defaults(handler=_push)

    export = sub.add_parser("export", help="write the best adapter merged into its base model: a full model")
    export.add_argument("trial", choices=["best"], help=f"'best': the {BEST_MODEL} folder of a study run with [peft]")
    _common(export)
    export.add_argument("--merge", metavar="PATH", required=True, help="the folder to write (new, or empty)")
    export.set_defaults(handler=_export)

    dash = sub.add_parser("dashboard", help="open a study in optuna-dashboard")
    _common(dash)
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    dash.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    dash.set_defaults(handler=_dashboard)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a TOML file with any of the settings (flags override it)")
    p.add_argument("--study", help="study name (default hpsearch)")
    p.add_argument(
        "--storage", help="Optuna storage URL (default sqlite:///studies/hpsearch.db); journal:PATH and redis:// too"
    )
    p.add_argument("--workdir", help="folder for studies/<study>/ files (default studies)")
    p.add_argument("--verbose", action="store_true", help="show full tracebacks")


def _config(args: argparse.Namespace, keys: Sequence[str] = ("study", "storage", "workdir")) -> Any:
    return load_config(args.config, {k: getattr(args, k, None) for k in keys})


# --------------------------------------------------------------------------- commands


def _run(args: argparse.Namespace) -> int:
    from hpsearch import schema
    from hpsearch.search.pool import WorkerSettings, run_pool
    from hpsearch.search.study import load_study
    from hpsearch.views.summary import print_confirmation, print_summary, print_verdict

    err = _stderr_console()
    if args.worker_settings is not None:  # a pool's worker: the parent prints the summary
        settings = WorkerSettings.read(args.worker_settings)
        _run_here(settings, err)
        return 0
    settings = WorkerSettings(_config(args, _RUN_KEYS), args.confirm_top)
    _check_chain(settings)
    config, chained = settings.config, settings.confirm_top is not None
    if args.workers is not None or args.devices is not None:
        workers = _pool_plan(args, err, settings)
        run_pool(workers, settings, write=lambda line: err.print(line, markup=False), verbose=args.verbose)
        study = load_study(config.study, config.storage)
    else:
        study = _run_here(settings, err).study
    out = _stdout_console()
    print_summary(out, config, study, with_verdict=not chained and config.seeds == 1)
    if not chained:
        return 0 if config.seeds == 1 else print_confirmation(out, err, config)  # the race, the verdict last
    missing = config.trials - schema.count_finished(study.get_trials(deepcopy=False))
    if missing > 0:  # stopped early (--timeout, failures): the leaders are not known yet
        line = f"the search is {missing} trials short of {config.trials}; run the same command to go on"
        err.print(f"confirmation not started: {line}", markup=False)
        print_verdict(out, config, study)
        return 0
    print_confirmation(out, err, config)
    return 0


def _run_here(settings: Any, err: Any) -> Any:
    """The search, and the confirmation it chains, in this process, with progress on stderr."""
    from hpsearch.search.run import run_search
    from hpsearch.views.dashboard import DashboardNotes
    from hpsearch.views.progress import ConsoleReporter
    from hpsearch.views.summary import print_ends

    config = settings.config
    reporter = ConsoleReporter(err)
    listeners = [reporter, DashboardNotes(config)]
    try:
        result = run_search(config, listeners=listeners, confirm_top=settings.confirm_top)
    finally:
        reporter.close()  # ends the progress bar, and shows the terminal's cursor again
    print_ends(err, result, result.confirmation)
    return result


def _check_chain(settings: Any) -> None:
    """``--confirm-top`` with fewer than 2 ``--seeds``: refused in one line before any training."""
    from hpsearch.search.run import check_chain

    if settings.confirm_top is not None:
        check_chain(settings.confirm_top, settings.config.seeds)


def _pool_plan(args: argparse.Namespace, err: Any, settings: Any) -> Any:
    import torch

    from hpsearch.search.pool import plan
    from hpsearch.training.modeling import cpu_threads

    workers = plan(
        workers=args.workers,
        devices=args.devices,
        per_device=args.workers_per_device,
        cuda_devices=torch.cuda.device_count(),
        cpus=cpu_threads(),
    )
    err.print(f"starting {len(workers)} workers: {' '.join(w.label for w in workers)}", markup=False)
    if settings.confirm_top is not None:
        top, seeds = settings.confirm_top, settings.config.seeds
        err.print(f"once the search is done they confirm the top {top} and the recipe with {seeds} seeds", markup=False)
    return workers


def _confirm(args: argparse.Namespace) -> int:
    from hpsearch.search.run import run_confirm
    from hpsearch.views.progress import ConsoleReporter
    from hpsearch.views.summary import print_confirmation, print_ends

    config, err = _config(args), _stderr_console()
    reporter = ConsoleReporter(err)
    try:
        listeners = [reporter]
        where = {"study": config.study, "storage": config.storage, "workdir": config.workdir}
        result = run_confirm(**where, top=args.top, seeds=args.seeds, listeners=listeners)
    finally:
        reporter.close()
    print_ends(err, result)
    print_confirmation(_stdout_console(), err, config)
    return 0


def _trials(args: argparse.Namespace) -> int:
    from hpsearch.views.summary import print_trials

    _quiet_optuna()
    print_trials(_stdout_console(), _config(args), as_json=args.json)
    return 0


def _quiet_optuna() -> None:
    """Inspection commands print results only: no notices about Optuna's experimental features."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _stderr_console() -> Any:
    return _stdout_console(stderr=True)


def _stdout_console(*, stderr: bool = False) -> Any:
    from rich.console import Console

    # Piped output keeps whole rows (rich would fold them at 80 columns).
    return Console(
        stderr=stderr, highlight=False, width=None if (sys.stderr if stderr else sys.stdout).isatty() else 200
    )


def _card(args: argparse.Namespace) -> int:
    from hpsearch.card.render import write_card

    config = _config(args)
    written = write_card(config, args.trial, output=args.output, template=args.template, force=args.force)
    if written.plots_skipped:
        print(f"hpsearch: note: plots skipped: {written.plots_skipped}", file=sys.stderr)
    print(written.path)
    return 0


def _report(args: argparse.Namespace) -> int:
    from hpsearch.views.report import write_report

    _quiet_optuna()
    config = _config(args)
    print(write_report(config, output=args.output))
    return 0


def _push(args: argparse.Namespace) -> int:
    from hpsearch.card.push import local_base_note, push_files, push_folder

    folder = StudyLayout.of(_config(args)).best_model
    if (note := local_base_note(folder)) is not None:
        print(f"hpsearch: note: {note}", file=sys.stderr)
    if args.dry_run:
        for path in push_files(folder):
            print(path)
        return 0
    print(push_folder(folder, args.repo_id, private=args.private))
    return 0


def _export(args: argparse.Namespace) -> int:
    from hpsearch.training.adapters import export_merged

    print(export_merged(StudyLayout.of(_config(args)).best_model, args.merge))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from hpsearch.views.dashboard import serve

    _quiet_optuna()
    config = _config(args)
    serve(config, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
