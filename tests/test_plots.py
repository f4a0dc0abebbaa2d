"""Plots of a study: plotly figures by name, and PNG export that degrades without Chrome.

The studies are in-memory, with hand-written trials and the settings `hpsearch run` stores:
no training is needed to test plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from test_trials import new_study

from hpsearch import schema
from hpsearch.views import plots

DISTRIBUTIONS = {
    "learning_rate": FloatDistribution(1e-5, 1e-4, log=True),
    "per_device_train_batch_size": CategoricalDistribution((8, 16, 32)),
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def _rows(values: list[float], metric: str = "f1") -> list[schema.EpochRow]:
    """Rows whose objective takes the values; the other metrics are NaN, as no plot reads them."""
    return [
        schema.make_row(
            epoch=i + 1,
            step=10 * (i + 1),
            train_loss=None,
            eval_loss=0.7,
            scores={metric: v},
            confusion=[[3, 1], [1, 3]],
        )
        for i, v in enumerate(values)
    ]


def _add(
    study: optuna.Study,
    values: list[float],
    *,
    state: TrialState = TrialState.COMPLETE,
    lr: float = 5e-5,
    batch: int = 8,
    metric: str = "f1",
) -> None:
    study.add_trial(
        create_trial(
            state=state,
            value=values[-1] if state == TrialState.COMPLETE else None,
            params={"learning_rate": lr, "per_device_train_batch_size": batch},
            distributions=DISTRIBUTIONS,
            user_attrs={schema.EPOCHS: _rows(values, metric)},
            intermediate_values={i + 1: v for i, v in enumerate(values)} if state != TrialState.FAIL else {},
        )
    )


def _study(objective: str = "f1") -> optuna.Study:
    """Trial 0 complete, 1 complete and best, 2 pruned after epoch 1, 3 failed after epoch 1."""
    study = new_study(None, objective=objective)
    _add(study, [0.50, 0.60], metric=objective)
    _add(study, [0.55, 0.70], lr=2e-5, batch=16, metric=objective)
    _add(study, [0.30], state=TrialState.PRUNED, lr=1e-5, batch=32, metric=objective)
    _add(study, [0.20], state=TrialState.FAIL, lr=9e-5, batch=32, metric=objective)
    return study


def _by_name(fig: Any) -> dict[str, Any]:
    return {trace.name: trace for trace in fig.data}


def test_figures_are_all_made_in_order_when_enough_trials_finished():
    assert list(plots.figures(_study())) == list(plots.FIGURE_NAMES)


def test_figures_can_be_limited_to_some_names():
    assert list(plots.figures(_study(), names=("epochs", "history"))) == ["history", "epochs"]
    with pytest.raises(ValueError, match=r"unknown figure names \['pareto'\]"):
        plots.figures(_study(), names=("pareto",))


def test_importances_need_two_complete_trials():
    study = new_study(None)
    _add(study, [0.5, 0.6])
    _add(study, [0.3], state=TrialState.PRUNED, lr=1e-5)
    assert "importances" not in plots.figures(study)
    assert set(plots.figures(study)) == set(plots.FIGURE_NAMES) - {"importances"}


def test_importances_need_a_parameter_that_varies():
    study = new_study(None)
    _add(study, [0.5, 0.6])
    _add(study, [0.5, 0.7])
    assert "importances" not in plots.figures(study)


def test_epoch_curves_draw_each_trial_by_epoch_and_highlight_the_best():
    traces = _by_name(plots.epoch_curves(_study()))
    best = traces["best: trial 1"]
    assert list(best.x) == [1, 2] and list(best.y) == [0.55, 0.70]
    assert best.line.width > traces["complete"].line.width
    assert list(traces["complete"].y) == [0.50, 0.60]


def test_pruned_and_failed_curves_are_dashed_and_marked_where_they_stopped():
    traces = _by_name(plots.epoch_curves(_study()))
    pruned = traces["pruned (✕ where it stopped)"]
    failed = traces["failed (◆ where it stopped)"]
    assert (pruned.line.dash, list(pruned.marker.symbol)) == ("dash", ["x"])
    assert (failed.line.dash, list(failed.marker.symbol)) == ("dot", ["diamond"])
    assert list(pruned.y) == [0.30] and list(failed.y) == [0.20]


def test_epoch_curves_follow_the_studys_objective():
    fig = plots.epoch_curves(_study("accuracy"))
    assert fig.layout.yaxis.title.text == "validation accuracy"
    assert list(_by_name(fig)["best: trial 1"].y) == [0.55, 0.70]


def test_epoch_curves_name_parameters_as_the_tables_do():
    hover = _by_name(plots.epoch_curves(_study()))["best: trial 1"].hovertemplate
    assert "lr=2e-05<br>batch=16" in hover


def test_optuna_plots_are_titled_by_the_studys_objective():
    figs = plots.figures(_study("accuracy"), names=("history",))
    assert figs["history"].layout.yaxis.title.text == "validation accuracy"


def test_trials_without_rows_are_left_out_of_the_epoch_curves():
    study = _study()
    study.add_trial(
        create_trial(state=TrialState.FAIL, params={}, distributions={}, user_attrs={schema.FAIL_REASON: "boom"})
    )
    assert len(plots.epoch_curves(study).data) == 4


def test_without_chrome_pngs_are_skipped_with_a_reason(tmp_path, monkeypatch):
    # What kaleido meets on a machine with no Chrome: its browser search finds nothing.
    from choreographer.browsers.chromium import Chromium

    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **kwargs: None))
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    figs = plots.figures(_study(), names=("history", "epochs"))
    with pytest.raises(plots.PngUnavailable, match=r"kaleido found no Chrome or Chromium to render PNG files"):
        plots.render_pngs(figs, tmp_path / "out")
    assert plots.write_pngs(figs, tmp_path / "out") is None
    assert not list((tmp_path / "out").glob("*.png"))


def test_errors_that_are_not_about_the_engine_are_raised(tmp_path, monkeypatch):
    import plotly.io as pio

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("Invalid property specified for object of type plotly.graph_objs.Scatter")

    monkeypatch.setattr(pio, "write_images", broken)
    with pytest.raises(ValueError, match="Invalid property"):
        plots.write_pngs(plots.figures(_study(), names=("epochs",)), tmp_path)


def test_pngs_are_written_with_chrome(tmp_path, chrome):
    paths = plots.write_pngs(plots.figures(_study(), names=("history", "epochs", "importances")), tmp_path / "out")
    assert paths == [tmp_path / "out" / f"{n}.png" for n in ("history", "epochs", "importances")]
    assert all(Path(p).read_bytes()[:8] == PNG_SIGNATURE for p in paths)
