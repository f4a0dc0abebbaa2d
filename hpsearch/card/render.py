"""The model card: ``hpsearch card best|N`` writes a Hugging Face README.md from storage alone.

The card is data plus a template. :func:`~hpsearch.card.facts.gather` reads one trial and
its study into a :class:`~hpsearch.card.facts.CardFacts`; :func:`template_context` turns the
facts into the variables a Jinja2 template sees (docs/card.md lists them), section by section
(:mod:`~hpsearch.card.trial_section`, :mod:`~hpsearch.card.search_section`, :mod:`~hpsearch.card.trust`);
the default template is ``templates/model_card.md.j2``, with the filters of
:mod:`~hpsearch.card.markdown`. The YAML front matter is ``huggingface_hub.ModelCardData`` with
one ``EvalResult`` per metric, and the rendered text is parsed back with
``huggingface_hub.ModelCard`` before it is written, so every card on disk is known to load.

The card never overwrites a README.md it did not write (it marks its own with
:data:`MARKER`) unless ``force``; the file is written atomically, with the plots beside it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hpsearch import schema
from hpsearch.analysis.verdict import verdict
from hpsearch.bestmodel import Marker
from hpsearch.card.adapter_section import adapter_facts
from hpsearch.card.confirmation_section import confirmation_facts, with_seed_spread
from hpsearch.card.cost_section import co2_eq_emissions
from hpsearch.card.facts import CardFacts, gather, metric_label
from hpsearch.card.markdown import md_cell, md_code, md_inline, md_text, results_header, results_table
from hpsearch.card.search_section import search_facts
from hpsearch.card.trial_section import hyperparameters, metric_summary, trial_facts
from hpsearch.card.trust import single_class_epochs, trust_facts
from hpsearch.config import DEFAULT_MODEL, SearchConfig
from hpsearch.errors import CardError, first_line
from hpsearch.files import write_atomically
from hpsearch.formatting import fmt_metric, format_param, is_number
from hpsearch.layout import StudyLayout
from hpsearch.schema import METRICS
from hpsearch.search.study import load_study, open_confirmation
from hpsearch.views import plots
from hpsearch.views.artifacts import artifact_dir, upload_card_artifacts

MARKER = "<!-- hpsearch:card -->"  # in every card hpsearch writes: the README is ours to replace
TEMPLATE_NAME = "model_card.md.j2"
# PNG files the card shows, by figure name of hpsearch.views.plots.figures, with their captions.
CARD_PLOTS = dict(
    history="Optimisation history",
    epochs="Validation {metric} by epoch, every trial",
    importances="Parameter importances",
)
# The Hub tags of every card; the package's own name marks the cards it writes.
TAGS = ["text-classification", __name__.split(".")[0], "optuna"]


@dataclass(frozen=True)
class WrittenCard:
    """What :func:`write_card` wrote: the README.md, and why it has no plots (None if it has them)."""

    path: Path
    plots_skipped: str | None


# --------------------------------------------------------------------------- public entry


def write_card(
    config: SearchConfig,
    trial: str,
    *,
    output: str | Path | None = None,
    template: str | Path | None = None,
    force: bool = False,
) -> WrittenCard:
    """Render and write the card of trial ``trial`` ("best" or a number).

    Returns:
        The README.md written, and why its plots were skipped (no PNG engine), if they were.

    Raises:
        CardError: No complete trial, an unknown or unfinished trial number, a template
            that does not compile or render, an output path that cannot be written, or a
            README.md there that hpsearch did not write (without ``force``). Nothing is
            written then.
        StorageError: The storage or the study is missing, or the study was not made by
            ``hpsearch run`` or was written in another schema version.
    """
    with warnings.catch_warnings():  # opening an RDB storage notes its experimental heartbeat
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = load_study(config.study, config.storage)
    confirmation = open_confirmation(study, config.storage)
    facts = gather(
        study,
        trial,
        storage=config.storage,
        confirmation=confirmation,
        shipped=Marker.read(StudyLayout.of(config).best_model),
    )
    path = Path(output) if output is not None else default_output(config, facts)
    replacing_ours = _check_output(path, force)
    source, name = load_template(template)
    compiled = _compile(source, name)
    made = _missing_folders(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CardError(f"cannot create {str(path.parent)!r}: {e.strerror or e}; pass a writable --output") from None
    scratch = _scratch(path.parent)
    try:
        plots, skipped = _make_plots(study, facts, scratch)
        card_data = build_card_data(facts)
        text = with_marker(_render(compiled, name, template_context(facts, card_data, plots, skipped)))
        check_card(text, card_data)
        written = _install(path, text, scratch, plots, drop_stale=replacing_ours)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        for folder in made:  # nothing written: not even the folders
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    _upload(config, study, facts.trial, written)
    return WrittenCard(path, skipped)


def default_output(config: SearchConfig, facts: CardFacts) -> Path:
    """``studies/<study>/best-model/README.md`` for best, ``.../trial-<N>/README.md`` otherwise."""
    layout = StudyLayout.of(config)
    if not facts.is_best:
        return layout.trial_card(facts.trial.number) / "README.md"
    best = layout.best_model
    marker = Marker.read(best)
    if marker is not None and marker.trial != facts.trial.number:
        raise CardError(
            f"{best} holds the model of trial {marker.trial}, but the best trial in storage is "
            f"{facts.trial.number}; run `hpsearch card {facts.trial.number} --output PATH`, or rerun `hpsearch run`"
        )
    return best / "README.md"


# --------------------------------------------------------------------------- metadata


def build_card_data(facts: CardFacts) -> Any:
    """The YAML front matter: huggingface_hub.ModelCardData with one EvalResult per metric and split."""
    from huggingface_hub import ModelCardData

    hub_id = facts.data.hub_id
    return ModelCardData(
        pipeline_tag="text-classification",
        library_name="peft" if facts.config.get("peft") else "transformers",  # a LoRA adapter loads with peft
        base_model=_hub_base_model(facts),
        tags=[*TAGS, "lora"] if facts.config.get("peft") else list(TAGS),
        datasets=[str(hub_id)] if hub_id else None,
        metrics=[*METRICS, *schema.added_metrics(facts.rows)],
        model_name=model_name(facts),
        eval_results=_eval_results(facts) or None,
        co2_eq_emissions=co2_eq_emissions(facts),  # the whole search's, in grams; None: left out
    )


def _eval_results(facts: CardFacts) -> list[Any]:
    """The shipped epoch's validation scores, then the test split's where the run measured it."""
    from huggingface_hub import EvalResult

    hub_id = facts.data.hub_id
    results = []
    for split, metrics in (("validation", facts.shipped_row), ("test", facts.test_metrics)):
        if not metrics:
            continue
        for key in (*METRICS, *schema.added_metrics(facts.rows)):
            if is_number(metrics.get(key)):
                results.append(
                    EvalResult(
                        task_type="text-classification",
                        task_name="Text Classification",
                        dataset_type=str(hub_id) if hub_id else "local",
                        dataset_name=str(facts.data.name),
                        dataset_config=facts.config["dataset_config"] if hub_id else None,
                        dataset_revision=facts.data.revision if hub_id else None,
                        dataset_split=split,
                        metric_type=key,
                        metric_name=metric_label(key),
                        metric_value=float(metrics[key]),
                    )
                )
    return results


def model_name(facts: CardFacts) -> str:
    base = facts.settings.base_model.rstrip("/").split("/")[-1]
    name = f"{base}-{facts.study_name}"
    return name if facts.is_best else f"{name}-trial-{facts.trial.number}"


def _hub_base_model(facts: CardFacts) -> str | None:
    """The base model's Hub id, or None when it was a local folder (no Hub page to link)."""
    base = facts.settings.base_model
    given = facts.config["model"]
    if given == DEFAULT_MODEL or (given == base and not Path(str(given)).expanduser().is_dir()):
        return str(base)
    return None


def with_marker(text: str) -> str:
    """The card with :data:`MARKER` in it (after the front matter), for templates that leave it out."""
    if MARKER in text:
        return text
    match = re.match(r"---\r?\n.*?\r?\n---\r?\n", text, flags=re.DOTALL)
    at = match.end() if match else 0
    return f"{text[:at]}{MARKER}\n{text[at:]}"


def check_card(text: str, card_data: Any) -> None:
    """Parse the rendered card back; its model-index must give back the eval results we put in."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard(text)
    except Exception as e:
        raise CardError(
            f"the rendered card does not parse as a model card: {first_line(e)}; check the template's YAML front matter"
        ) from None
    want = [(r.metric_type, r.dataset_split, r.metric_value) for r in card_data.eval_results or []]
    got = [(r.metric_type, r.dataset_split, r.metric_value) for r in card.data.eval_results or []]
    if want != got:
        raise CardError(
            "the rendered card's model-index does not read back the evaluation results; "
            "the template must start with the YAML front matter: ---, {{ card_data_yaml }}, ---"
        )


# --------------------------------------------------------------------------- context


def template_context(
    facts: CardFacts, card_data: Any, plots: list[dict[str, str]], plots_skipped: str | None
) -> dict[str, Any]:
    """The variables every card template sees (the README documents them)."""
    data = facts.data
    hub_base = _hub_base_model(facts)
    rows = facts.rows
    row = facts.shipped_row
    return dict(
        marker=MARKER,
        card_data_yaml=card_data.to_yaml(),
        model_name=model_name(facts),
        base_model=facts.settings.base_model,
        base_model_url=f"https://huggingface.co/{hub_base}" if hub_base else None,
        dataset_name=data.name,
        dataset_hub_id=data.hub_id,
        data=data,
        label_names=facts.label_names,
        sizes=dict(data.sizes),
        objective=facts.objective,
        objective_label=metric_label(facts.objective),
        trial=trial_facts(facts),
        epochs=rows,
        shipped=row,
        summary=with_seed_spread(metric_summary(row), facts, "validation"),
        test_summary=with_seed_spread(metric_summary(facts.test_metrics, loss="loss"), facts, "test"),
        confirmation=confirmation_facts(facts),
        # The study's verdict opens the card of its best model only.
        verdict=verdict(facts.settings, facts.trials, facts.confirmation, shipped=row) if facts.is_best else None,
        hyperparameters=hyperparameters(facts),
        adapter=adapter_facts(facts),
        results_header=results_header(schema.added_metrics(rows)),
        results_table=results_table(rows, schema.added_metrics(rows)),
        added_metrics=schema.added_metrics(rows),
        single_class=single_class_epochs(facts),
        search=search_facts(facts),
        trust=trust_facts(facts),
        plots=plots,
        plots_skipped=plots_skipped,
        versions={str(k): str(v) for k, v in facts.settings.versions.items()},
    )


# --------------------------------------------------------------------------- template


def load_template(template: str | Path | None) -> tuple[str, str]:
    """The template's text and the name errors give it: the user's file, or the default."""
    if template is not None:
        path = Path(template)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as e:
            reason = "does not exist" if isinstance(e, FileNotFoundError) else f"cannot be read ({first_line(e)})"
            raise CardError(f"template {str(path)!r} {reason}; pass a readable Jinja2 file to --template") from None
    path = default_template_path()
    return path.read_text(encoding="utf-8"), str(path)


def default_template_path() -> Path:
    """The default template, ``hpsearch/card/templates/model_card.md.j2`` (also ``templates/`` in a checkout)."""
    return Path(__file__).resolve().parent / "templates" / TEMPLATE_NAME


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        metric=fmt_metric, md_cell=md_cell, md_inline=md_inline, md_code=md_code, md_text=md_text, sig=format_param
    )
    return env


def _compile(source: str, name: str) -> Any:
    """Compile once, so a syntax error is reported (with its line) before anything is written."""
    import jinja2

    env = _environment()
    try:
        code = env.compile(source, name=name, filename=name)
    except jinja2.TemplateSyntaxError as e:
        raise CardError(f"template {name}, line {e.lineno}: {e.message}") from None
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def _render(compiled: Any, name: str, context: dict[str, Any]) -> str:
    try:
        return compiled.render(context)
    except Exception as e:
        line = next((f.lineno for f in reversed(traceback.extract_tb(e.__traceback__)) if f.filename == name), None)
        where = f"template {name}, line {line}" if line is not None else f"template {name}"
        hint = (
            " (the variables a template may use are listed in docs/card.md)"
            if type(e).__name__ == "UndefinedError"
            else ""
        )
        raise CardError(f"{where}: {first_line(e)}{hint}") from None


# --------------------------------------------------------------------------- writing


def _check_output(path: Path, force: bool) -> bool:
    """Refuse a README.md that hpsearch did not write; return whether one of ours is there."""
    if path.is_dir():
        raise CardError(f"--output {str(path)!r} is a folder; pass the README.md file to write")
    if not path.exists():
        return False
    try:
        ours = MARKER in path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise CardError(f"cannot read the existing {str(path)!r}: {e.strerror or e}") from None
    if not ours and not force:
        raise CardError(
            f"{str(path)!r} exists and was not written by hpsearch; pass --force to replace it, or --output elsewhere"
        )
    return ours


def _missing_folders(folder: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would make, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _scratch(folder: Path) -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=".hpsearch-card-", dir=folder))
    except OSError as e:
        raise CardError(f"cannot write in {str(folder)!r}: {e.strerror or e}; pass a writable --output") from None


def _make_plots(study: optuna.Study, facts: CardFacts, scratch: Path) -> tuple[list[dict[str, str]], str | None]:
    """PNG files of the card's plots in ``scratch``; or none, and why."""
    figs = plots.figures(study, names=CARD_PLOTS)
    try:
        paths = plots.render_pngs(figs, scratch)
    except plots.PngUnavailable as e:
        return [], str(e)
    label = metric_label(facts.objective)
    return [{"name": p.stem, "file": p.name, "title": CARD_PLOTS[p.stem].format(metric=label)} for p in paths], None


def _install(path: Path, text: str, scratch: Path, plots: list[dict[str, str]], *, drop_stale: bool) -> list[Path]:
    """Move the plots beside the card, then replace README.md atomically.

    Where the card replaces one of ours, plots that card had and this one lacks are removed.
    """
    written = []
    try:
        for plot in plots:
            target = path.parent / plot["file"]
            os.replace(scratch / plot["file"], target)
            written.append(target)
        for name in CARD_PLOTS if drop_stale else ():
            stale = path.parent / f"{name}.png"
            if stale not in written:
                stale.unlink(missing_ok=True)
        write_atomically(path, text)  # last: a README that is there names plots that are there
    except OSError as e:
        raise CardError(f"cannot write {str(path)!r}: {e.strerror or e}; pass a writable --output") from None
    return [path, *written]


def _upload(config: SearchConfig, study: optuna.Study, trial: FrozenTrial, paths: list[Path]) -> None:
    """Attach the card and its plots to the study as Optuna artifacts, named after the trial."""
    try:
        upload_card_artifacts(study, trial.number, paths, artifact_dir=artifact_dir(config))
    except Exception as e:
        raise CardError(
            f"wrote {paths[0]}, but storing it among the study's artifacts failed: {first_line(e)}"
        ) from None
