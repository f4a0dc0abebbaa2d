"""`hpsearch report`: one self-contained HTML file, rendered in headless Chromium.

Chromium (Debian's `chromium`, which .ci/run installs) loads the written file with no
network and dumps the DOM after the page's scripts ran; plotly has rendered a figure when
its div carries `js-plotly-plot` and holds `svg.main-svg` with the figure's traces.
"""

from __future__ import annotations

import re
import subprocess
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from conftest import tiny_run_args
from test_trials import PRUNED_REASON, URL, handmade_study, new_study

from hpsearch import schema
from hpsearch.views.plots import FIGURE_NAMES


class PlotDivs(HTMLParser):
    """For each `<div id="plot-NAME">`: its classes, its main-svg count, its trace groups and text."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: dict[str, dict] = {}
        self._current: str | None = None
        self._depth = 0  # open divs inside the current plot div

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "div" and self._current is None and (attrs.get("id") or "").startswith("plot-"):
            self._current = attrs["id"][len("plot-") :]
            self.plots[self._current] = {"classes": classes, "main_svg": 0, "traces": [], "text": []}
            self._depth = 1
            return
        if self._current is None:
            return
        plot = self.plots[self._current]
        if tag == "div":
            self._depth += 1
        if tag == "svg" and "main-svg" in classes:
            plot["main_svg"] += 1
        if tag == "g" and "trace" in classes:
            plot["traces"].append(" ".join(c for c in classes[:2]))

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "div" and self._current is not None:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._current is not None:
            self._depth -= 1
            if self._depth == 0:
                self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None and data.strip():
            self.plots[self._current]["text"].append(data.strip())


def rendered(chrome: str, report: Path, tmp_path: Path) -> dict[str, dict]:
    """Open the report in headless ``chrome`` and parse the plot divs of the DOM it dumps."""
    result = subprocess.run(
        [
            chrome,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            report.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    parser = PlotDivs()
    parser.feed(result.stdout)
    return parser.plots


def report(cli, *args: str) -> Path:
    code, out, err = cli("report", *args)
    assert code == 0, err
    return Path(out.splitlines()[-1])


# --------------------------------------------------------------------------- rendering


def test_every_plot_renders_in_headless_chromium(workdir, tmp_path, cli, chrome):
    handmade_study()
    plots = rendered(chrome, report(cli), tmp_path)
    assert list(plots) == list(FIGURE_NAMES)
    for name, plot in plots.items():
        assert "js-plotly-plot" in plot["classes"], name
        assert plot["main_svg"] >= 1, name
        assert plot["traces"], name


def test_epoch_curves_draw_every_trial_with_rows_including_pruned_and_failed(workdir, tmp_path, cli, chrome):
    handmade_study()
    epochs = rendered(chrome, report(cli), tmp_path)["epochs"]
    # trials 0 (recipe), 1 (best), 2 (pruned) and 3 (failed); the running trial 4 is not drawn
    assert epochs["traces"].count("trace scatter") == 4
    legend = " ".join(epochs["text"])
    for entry in ("complete", "pruned (✕ where it stopped)", "failed (◆ where it stopped)", "best: trial 1"):
        assert entry in legend


@pytest.mark.slow
def test_a_real_runs_report_renders_in_headless_chromium(workdir, tiny_model, tmp_path, cli, chrome):
    code, _, err = cli(*tiny_run_args(tiny_model, "--trials", "2", "--epochs", "2", "--pruner", "none"))
    assert code == 0, err
    plots = rendered(chrome, report(cli), tmp_path)
    assert set(plots) >= {"history", "epochs", "parallel", "slice", "timeline"}
    assert all("js-plotly-plot" in p["classes"] and p["main_svg"] and p["traces"] for p in plots.values())
    assert plots["epochs"]["traces"].count("trace scatter") == 2


# --------------------------------------------------------------------------- the file


def test_report_is_self_contained_with_plotly_js_embedded_once(workdir, cli):
    handmade_study()
    html = report(cli).read_text(encoding="utf-8")
    assert not re.search(r"""<(script|link|img)\b[^>]*\b(src|href)=["']?(https?:)?//""", html)
    assert html.count("plotly.js v") == 1  # the library's banner comment: embedded, once
    assert html.count("Plotly.newPlot(") == len(FIGURE_NAMES)


def test_report_summary_names_best_recipe_and_counts(workdir, cli):
    handmade_study()
    html = report(cli).read_text(encoding="utf-8")
    summary = re.sub(r"<[^>]+>|\s+", " ", html[html.index('id="summary"') : html.index("Best parameters")])
    assert "best trial #1: 0.8200 validation f1" in summary
    assert "recipe trial #0: 0.7000 +0.1200 (+17.1%) over the recipe" in summary
    assert "trials 5 2 complete · 1 pruned · 1 failed · 1 running" in summary
    assert escape(PRUNED_REASON) in html  # the page has room for the whole reason


def test_report_table_names_parameters_and_epochs_as_the_terminal_table(workdir, cli):
    handmade_study()
    html = report(cli).read_text(encoding="utf-8")
    head = html[html.index('id="trials"') : html.index("</thead>")]
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", head)
    assert headers == [
        "#",
        "state",
        "validation f1",
        "epochs",
        "shipped",
        "lr",
        "batch",
        "warmup",
        "decay",
        "time",
        "note",
    ]
    assert '<th title="learning_rate">lr</th>' in head
    assert html.count("★") == 1


def test_importances_wait_for_two_complete_trials(workdir, tmp_path, cli):
    study = new_study(URL.replace("studies/", ""))
    study.add_trial(
        optuna.trial.create_trial(
            value=0.7,
            params={"x": 1.0},
            distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
            user_attrs=schema.recipe_attrs(),
        )
    )
    html = report(cli, "--storage", URL.replace("studies/", "")).read_text(encoding="utf-8")
    assert 'id="plot-importances"' not in html
    assert "Not yet: importances need two complete trials whose parameters differ." in html


def test_default_path_printed_last_and_no_temporary_file_left(workdir, cli):
    handmade_study()
    old = workdir / "studies" / "hpsearch" / "report.html"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text("an older report", encoding="utf-8")
    code, out, err = cli("report")
    assert code == 0, err
    assert out.splitlines()[-1] == "studies/hpsearch/report.html"
    assert old.read_text(encoding="utf-8").rstrip().endswith("</html>")
    assert [p.name for p in old.parent.iterdir() if p.is_file()] == ["report.html"]


def test_output_may_be_a_new_path_or_an_existing_folder(workdir, cli):
    handmade_study()
    assert report(cli, "--output", "out/deep/study.html") == Path("out/deep/study.html")
    (workdir / "shared").mkdir()
    assert report(cli, "--output", "shared") == Path("shared/report.html")
    assert (workdir / "shared" / "report.html").is_file()


def test_unwritable_output_is_a_one_line_error(workdir, cli):
    handmade_study()
    (workdir / "blocker").write_text("a file, not a folder", encoding="utf-8")
    code, out, err = cli("report", "--output", "blocker/report.html")
    assert code == 2
    assert err.splitlines() == [
        "hpsearch: error: cannot write the report to 'blocker/report.html': 'blocker' is a file, not a folder; pass "
        "--output with a writable file path"
    ]
    assert out == ""
