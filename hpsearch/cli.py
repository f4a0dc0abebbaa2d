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

from hpsearch.errors import HpsearchError, first_line

# At exit, skip the collector's last pass over every object torch and transformers made
# (2 s on 2 CPUs after a search): the process is ending and the study is already stored.
atexit.register(gc.freeze)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_SEEDS = 5  # `hpsearch confirm --seeds`, and `run --seeds` with --confirm-top


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
    args.argv = argv  # a pool's workers run the same command (hpsearch.search.pool)
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


# --------------------------------------------------------------------------- parser


def _build_parser() -> argparse.ArgumentParser:
    from hpsearch import __version__

    parser = _Parser(
        prog="hpsearch",
        description="Search the hyperparameters of a transformers fine-tune around a base recipe, and write the winner's model card.",
    )
    parser.add_argument("--version", action="version", version=f"hpsearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run or resume a search",
        description="Run or resume a search: an Optuna study of Trainer fine-tunes around the base recipe.",
    )
    _common(run)
    run.add_argument(
        "--trials", type=int, help="total of finished (complete or pruned) trials the study should hold (default 20)"
    )
    run.add_argument("--model", help="Hub model id or local folder (default: the packaged all-MiniLM-L6-v2)")
    run.add_argument(
        "--dataset",
        help="Hub dataset id, a folder with train/validation[/test] files, or one CSV/JSON/JSONL/Parquet file (default: builtin)",
    )
    run.add_argument("--dataset-config", dest="dataset_config", help="the Hub dataset's configuration name (e.g. sst2)")
    run.add_argument("--text-column", dest="text_column", help="text column (default: text, or sentence1 + sentence2)")
    run.add_argument("--text-pair-column", dest="text_pair_column", help="second text column for sentence-pair tasks")
    run.add_argument("--label-column", dest="label_column", help="label column (default: label)")
    run.add_argument("--epochs", type=int, help="epochs per trial (the recipe's 5 by default)")
    run.add_argument("--max-train-samples", dest="max_train_samples", type=int, help="use at most N training rows")
    run.add_argument(
        "--max-eval-samples", dest="max_eval_samples", type=int, help="use at most N validation (and test) rows"
    )
    run.add_argument("--max-length", dest="max_length", type=int, help="truncate texts to N tokens (default 128)")
    run.add_argument("--pruner", help="best | median | halving | hyperband | none (default best)")
    run.add_argument("--sampler", help="tpe | random | qmc (default tpe, seed 42)")
    run.add_argument(
        "--objective",
        help="validation metric to maximise: f1 | accuracy | precision | recall, or what a --metric stores",
    )
    run.add_argument(
        "--checkpoint",
        help="which epoch a trial ships: best | last (default best, as the Trainer's load_best_model_at_end; a trial stopped early ships its best)",
    )
    run.add_argument(
        "--early-stopping-patience",
        dest="early_stopping_patience",
        type=int,
        help="stop a trial once its objective has not improved for N epochs after it began to learn (default 2; 0: off)",
    )
    run.add_argument("--timeout", type=float, help="stop starting new trials after SECONDS")
    run.add_argument(
        "--storage-timeout",
        dest="storage_timeout",
        type=float,
        help="retry a storage server that stopped answering for SECONDS before exiting (default 60)",
    )
    run.add_argument(
        "--trust-remote-code",
        dest="trust_remote_code",
        action="store_const",
        const=True,
        help="allow model code from the Hub (off by default)",
    )
    run.add_argument(
        "--metric",
        dest="metrics",
        action="append",
        metavar="NAME",
        help="add an evaluate metric to every epoch: a Hub name, or a local folder or .py file (repeatable)",
    )
    run.add_argument(
        "--report-to",
        dest="report_to",
        action="append",
        metavar="TRACKER",
        help="log every trial as a run of the Trainer's tracker: tensorboard, wandb, mlflow, ... (repeatable; default none)",
    )
    run.add_argument(
        "--precision",
        help="auto | fp32 | bf16 | fp16 (default auto: bf16 on a GPU that has it, fp16 on an older GPU, fp32 on a CPU)",
    )
    run.add_argument("--workers", type=int, help="run N worker processes on the CPU, each with its share of the cores")
    run.add_argument("--devices", help="run one worker per CUDA device: all, or indices such as 0 or 0,2,3")
    run.add_argument(
        "--workers-per-device",
        dest="workers_per_device",
        type=int,
        default=1,
        help="workers on each device of --devices (default 1)",
    )
    run.add_argument(
        "--confirm-top",
        dest="confirm_top",
        type=int,
        metavar="K",
        help="once the search holds its trials, run `hpsearch confirm --top K` (on the same workers)",
    )
    run.add_argument(
        "--seeds", type=int, help="with --confirm-top: seeds per configuration, original trial included (default 5)"
    )
    run.set_defaults(handler=_run)

    card = sub.add_parser("card", help="write the model card of the best trial or of trial N")
    card.add_argument("trial", help="'best' or a trial number")
    _common(card)
    card.add_argument(
        "--output",
        help="where to write README.md (default: studies/<study>/best-model/README.md, or studies/<study>/trial-<N>/README.md)",
    )
    card.add_argument(
        "--template",
        help="a Jinja2 template of your own (default: the packaged model_card.md.j2; a checkout links it as templates/model_card.md.j2)",
    )
    card.add_argument("--force", action="store_true", help="overwrite a README.md that hpsearch did not write")
    card.set_defaults(handler=_card)

    trials = sub.add_parser("trials", help="list a study's trials")
    _common(trials)
    trials.add_argument(
        "--json", action="store_true", help="print JSON for scripts (one object per trial, with its epochs)"
    )
    trials.set_defaults(handler=_trials)

    report = sub.add_parser("report", help="write a self-contained HTML report of a study")
    _common(report)
    report.add_argument("--output", help="the HTML file (default: studies/<study>/report.html)")
    report.set_defaults(handler=_report)

    confirm = sub.add_parser(
        "confirm",
        help="train the best configurations again with other seeds and pick by the mean",
        description="Train the --top best configurations of a study and the recipe again with --seeds seeds each (the original trial is one of them), pick the winner by mean validation score, and ship its best run.",
    )
    _common(confirm)
    confirm.add_argument(
        "--top",
        type=int,
        default=3,
        help="configurations to confirm: the N best complete trials (default 3); the recipe always comes along",
    )
    confirm.add_argument(
        "--seeds",
        type=int,
        default=DEFAULT_SEEDS,
        help="seeds per configuration, the recipe's seed and the next ones, original trial included (default 5: 42..46)",
    )
    confirm.set_defaults(handler=_confirm)

    push = sub.add_parser("push", help="upload the best model and its card to the Hugging Face Hub")
    push.add_argument("trial", choices=["best"], help="'best': the best-model folder")
    push.add_argument(
        "repo_id", metavar="REPO_ID", help="the Hub model repository, such as you/reviews-tuned (created if missing)"
    )
    _common(push)
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="list the files that would be uploaded, and upload nothing",
    )
    push.set_defaults(handler=_push)

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


_RUN_KEYS = (
    "trials",
    "study",
    "storage",
    "workdir",
    "model",
    "dataset",
    "dataset_config",
    "text_column",
    "text_pair_column",
    "label_column",
    "epochs",
    "max_train_samples",
    "max_eval_samples",
    "max_length",
    "pruner",
    "sampler",
    "objective",
    "checkpoint",
    "early_stopping_patience",
    "timeout",
    "storage_timeout",
    "trust_remote_code",
    "precision",
    "metrics",
    "report_to",
)


def _config(args: argparse.Namespace, keys: Sequence[str] = ("study", "storage", "workdir")) -> Any:
    from hpsearch.config import load_config

    return load_config(args.config, {k: getattr(args, k, None) for k in keys})


# --------------------------------------------------------------------------- commands


def _run(args: argparse.Namespace) -> int:
    import os

    from rich.console import Console

    from hpsearch import schema
    from hpsearch.search.pool import WORKER_LABEL_ENV

    config = _config(args, _RUN_KEYS)
    _check_chain(args)
    err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)
    workers = None
    if args.workers is not None or args.devices is not None:
        workers = _pool_plan(args, err)
        study, stopped = _run_pool(workers, _search_argv(args), config, err), None
    else:
        from hpsearch.search.loop import run_search
        from hpsearch.views.dashboard import DashboardNotes
        from hpsearch.views.progress import ConsoleReporter

        reporter = ConsoleReporter(err)
        try:
            result = run_search(config, listeners=[reporter, DashboardNotes(config)])
        finally:
            reporter.close()  # ends the progress bar, and shows the terminal's cursor again
        study, stopped = result.study, result.stopped
    if stopped:
        err.print(f"stopped early: {stopped}; run the same command to go on")
    if os.environ.get(WORKER_LABEL_ENV) is not None:  # a pool's workers leave the summary to the parent
        return 0
    chained = args.confirm_top is not None
    _summary(config, study, verdict=not chained)
    if not chained:
        return 0
    out, seeds = _stdout_console(), args.seeds or DEFAULT_SEEDS
    missing = config.trials - schema.count_finished(study.get_trials(deepcopy=False))
    if missing > 0:  # stopped early (--timeout, failures): the leaders are not known yet
        err.print(
            f"confirmation not started: the search is {missing} trials short of {config.trials}; run the same command to go on",
            markup=False,
        )
        _print_verdict(out, config, study)
    elif workers is not None:
        err.print(
            f"confirming the top {args.confirm_top} and the recipe with {seeds} seeds on the same workers", markup=False
        )
        _run_pool(workers, _confirm_argv(args, seeds), config, err)
        _print_confirmation(out, err, config)
    else:
        _confirm_here(config, args.confirm_top, seeds, err)
    return 0


def _check_chain(args: argparse.Namespace) -> None:
    """``--confirm-top`` / ``--seeds``: refused in one line before any training."""
    if args.seeds is not None and args.confirm_top is None:
        abort("--seeds needs --confirm-top K: the number of configurations to confirm")
    for flag, value in (("--confirm-top", args.confirm_top), ("--seeds", args.seeds)):
        if value is not None and value < 1:
            abort(f"{flag}: expected at least 1, got {value}")


def _search_argv(args: argparse.Namespace) -> list[str]:
    """The workers' search: the parent's ``run`` arguments without the pool's or the chain's flags."""
    from hpsearch.search.pool import POOL_FLAGS, worker_argv

    return worker_argv(args.argv, drop={**POOL_FLAGS, "--confirm-top": 1, "--seeds": 1})


def _confirm_argv(args: argparse.Namespace, seeds: int) -> list[str]:
    """The workers' confirmation: ``hpsearch confirm`` on the study the search used, as the user named it."""
    argv = ["confirm", "--top", str(args.confirm_top), "--seeds", str(seeds)]
    for flag, value in (
        ("--config", args.config),
        ("--study", args.study),
        ("--storage", args.storage),
        ("--workdir", args.workdir),
    ):
        if value is not None:
            argv += [flag, value]
    return argv + (["--verbose"] if args.verbose else [])


def _pool_plan(args: argparse.Namespace, err: Any) -> Any:
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
    return workers


def _run_pool(workers: Any, argv: list[str], config: Any, err: Any) -> Any:
    """``--workers`` / ``--devices``: ``argv`` in several processes; the study when all end."""
    from hpsearch.search.pool import run_pool
    from hpsearch.search.study import load_study

    run_pool(workers, argv, write=lambda line: err.print(line, markup=False))
    return load_study(config.study, config.storage)


def _summary(config: Any, study: Any, *, verdict: bool = True) -> None:
    """The table of trials, where the study is, and the command that writes the card."""
    from pathlib import Path

    from hpsearch.config import DEFAULT_STORAGE
    from hpsearch.search.storage import redact
    from hpsearch.search.study import study_dir
    from hpsearch.views.trials import trial_records, trials_table

    out = _stdout_console()
    out.print(trials_table(trial_records(study), config.objective))
    storage = redact(config.storage)
    out.print(f"study: {config.study} in {storage}")
    folder = Path(study_dir(config)) / "best-model"
    if folder.is_dir():
        flags = (
            ""
            if (config.study, config.storage) == ("hpsearch", DEFAULT_STORAGE)
            else f" --study {config.study} --storage {storage}"
        )
        out.print(f"card: hpsearch card best{flags}")
        out.print(f"best model: {folder}")
    if verdict:
        _print_verdict(out, config, study)


def _print_verdict(out: Any, config: Any, study: Any) -> None:
    """The study's verdict (hpsearch.card.verdict), last, where one applies."""
    from hpsearch import schema
    from hpsearch.analysis.verdict import verdict
    from hpsearch.search.study import open_confirmation

    line = verdict(
        schema.read_settings(study), study.get_trials(deepcopy=False), open_confirmation(study, config.storage)
    )
    if line:
        out.print(line, markup=False)


def _confirm(args: argparse.Namespace) -> int:
    from rich.console import Console

    err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)
    _confirm_here(_config(args), args.top, args.seeds, err)
    return 0


def _confirm_here(config: Any, top: int, seeds: int, err: Any) -> None:
    """Run (or join) the confirmation in this process, then print what it decided."""
    from hpsearch.search.confirm import run_confirm
    from hpsearch.views.confirmation import SeedLines
    from hpsearch.views.progress import ConsoleReporter

    reporter = ConsoleReporter(err)
    try:
        result = run_confirm(
            study=config.study,
            storage=config.storage,
            workdir=config.workdir,
            top=top,
            seeds=seeds,
            listeners=[SeedLines(err), reporter],
        )
    finally:
        reporter.close()
    if result.stopped:
        err.print(f"stopped early: {result.stopped}; run the same command to go on", markup=False)
    elif result.not_shipped:
        err.print(f"best model left as it was: {result.not_shipped}", markup=False)
    _print_confirmation(_stdout_console(), err, config)


def _print_confirmation(out: Any, err: Any, config: Any) -> None:
    """The confirmation as storage holds it, the shipped run, and the verdict last."""
    from hpsearch import schema
    from hpsearch.search.study import load_study, open_confirmation, study_dir
    from hpsearch.views.confirmation import confirmation_table, outcome_lines

    study = load_study(config.study, config.storage)
    confirmation = open_confirmation(study, config.storage)
    if confirmation is not None:
        out.print(confirmation_table(confirmation))
        for line in outcome_lines(confirmation):
            out.print(line, markup=False)
        if not confirmation.done:
            err.print(
                f"confirmation unfinished: {confirmation.pending} runs to go; run the same command to go on",
                markup=False,
            )
    folder = study_dir(config) / "best-model"
    marker = schema.Marker.read(folder)
    if marker is not None and marker.confirmed:
        out.print(f"best model: {folder} (the winner's run with seed {marker.seed})", markup=False)
    _print_verdict(out, config, study)


def _trials(args: argparse.Namespace) -> int:
    from hpsearch import schema
    from hpsearch.search.study import load_study, open_confirmation
    from hpsearch.views.confirmation import attach, confirmation_table
    from hpsearch.views.trials import records_json, trial_records, trials_table

    _quiet_optuna()
    config = _config(args)
    study = load_study(config.study, config.storage)
    objective = schema.objective_name(study)  # also refuses a study hpsearch cannot read
    records = trial_records(study)
    confirmation = open_confirmation(study, config.storage)
    if args.json:
        sys.stdout.write(records_json(attach(records, confirmation)) + "\n")
        return 0
    _stdout_console().print(trials_table(records, objective))
    if confirmation is not None:
        _stdout_console().print(confirmation_table(confirmation))
    if not records:
        sys.stderr.write(f"study {config.study!r} has no trials yet\n")
    return 0


def _quiet_optuna() -> None:
    """Inspection commands print results only: no notices about Optuna's experimental features."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _stdout_console() -> Any:
    from rich.console import Console

    # Piped output keeps whole rows (rich would fold them at 80 columns).
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


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
    from hpsearch.card.push import push_files, push_folder
    from hpsearch.search.study import study_dir

    folder = study_dir(_config(args)) / "best-model"
    if args.dry_run:
        for path in push_files(folder):
            print(path)
        return 0
    print(push_folder(folder, args.repo_id, private=args.private))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from hpsearch.views.dashboard import serve

    _quiet_optuna()
    config = _config(args)
    serve(config, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
