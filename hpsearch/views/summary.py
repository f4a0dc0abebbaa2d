"""What ``run``, ``confirm`` and ``trials`` print: the trials, where things are, the verdict last.

Everything is read from storage, so the same lines come out whether one process or a pool
of workers did the work.
"""

from __future__ import annotations

import sys
from typing import Any

import optuna

from hpsearch import schema
from hpsearch.analysis.verdict import verdict
from hpsearch.bestmodel import Marker
from hpsearch.config import DEFAULT_STORAGE, SearchConfig
from hpsearch.layout import StudyLayout
from hpsearch.search.storage import redact
from hpsearch.search.study import load_study, open_confirmation
from hpsearch.views.confirmation import attach, confirmation_table, outcome_lines
from hpsearch.views.trials import records_json, trial_records, trials_table


def print_trials(out: Any, config: SearchConfig, *, as_json: bool = False) -> None:
    """``hpsearch trials``: the table of trials, and the confirmation's below it; or all of it as JSON."""
    study = load_study(config.study, config.storage)
    objective = schema.objective_name(study)  # also refuses a study hpsearch cannot read
    records = trial_records(study)
    confirmation = open_confirmation(study, config.storage)
    if as_json:
        sys.stdout.write(records_json(attach(records, confirmation)) + "\n")
        return
    out.print(trials_table(records, objective))
    if confirmation is not None:
        out.print(confirmation_table(confirmation))
    if not records:
        sys.stderr.write(f"study {config.study!r} has no trials yet\n")


def print_summary(out: Any, config: SearchConfig, study: optuna.Study, *, with_verdict: bool = True) -> None:
    """The table of trials, where the study is, and the command that writes the card."""
    out.print(trials_table(trial_records(study), config.objective))
    storage = redact(config.storage)
    out.print(f"study: {config.study} in {storage}")
    folder = StudyLayout.of(config).best_model
    if folder.is_dir():
        named = (config.study, config.storage) != (SearchConfig.study, DEFAULT_STORAGE)
        out.print(f"card: hpsearch card best{f' --study {config.study} --storage {storage}' if named else ''}")
        out.print(f"best model: {folder}")
    if with_verdict:
        print_verdict(out, config, study)
    return 0


def print_verdict(out: Any, config: SearchConfig, study: optuna.Study) -> None:
    """The study's verdict (:mod:`hpsearch.analysis.verdict`), last, where one applies."""
    settings = schema.read_settings(study)
    line = verdict(settings, study.get_trials(deepcopy=False), open_confirmation(study, config.storage))
    if line:
        out.print(line, markup=False)


def print_confirmation(out: Any, err: Any, config: SearchConfig) -> int:
    """The confirmation (or the race) as storage holds it, the shipped run, and the verdict last; returns 0."""
    study = load_study(config.study, config.storage)
    confirmation = open_confirmation(study, config.storage)
    if confirmation is not None:
        out.print(confirmation_table(confirmation))
        for line in outcome_lines(confirmation):
            out.print(line, markup=False)
        if not confirmation.done:
            what = "race" if confirmation.race is not None else "confirmation"
            pending = f"{what} unfinished: {confirmation.pending} runs to go; run the same command to go on"
            err.print(pending, markup=False)
    folder = StudyLayout.of(config).best_model
    marker = Marker.read(folder)
    if marker is not None and marker.confirmed:
        out.print(f"best model: {folder} (the winner's run with seed {marker.seed})", markup=False)
    print_verdict(out, config, study)
    return 0


def print_ends(err: Any, *results: Any) -> None:
    """Why a run (a RunResult or ConfirmResult) stopped short, or left ``best-model/`` as it was."""
    for result in results:
        if result is not None and result.stopped:
            err.print(f"stopped early: {result.stopped}; run the same command to go on", markup=False)
        if result is not None and result.not_shipped:
            err.print(f"best model left as it was: {result.not_shipped}", markup=False)
