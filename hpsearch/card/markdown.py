"""Markdown for model cards: numbers as the Trainer's cards print them, user text escaped, tables.

The card template uses these as Jinja2 filters (``metric``, ``md_cell``, ``md_inline``,
``md_code``, ``md_text``); the card's sections use them to build their tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from hpsearch.formatting import fmt_metric
from hpsearch.schema import METRIC_LABELS, METRICS

RESULTS_HEADER = "| Epoch | Step | Validation Loss | " + " | ".join(METRIC_LABELS[k] for k in METRICS) + " |"
_RESULT_KEYS = ("epoch", "step", "eval_loss", *METRICS)
# Characters that can start Markdown markup in running text; "_" is handled on its own.
_MARKUP = ("\\", "`", "*", "[", "]")


def md_cell(value: Any) -> str:
    """Text that cannot break a Markdown table row: pipes escaped, line breaks made spaces."""
    return md_inline(value).replace("|", "\\|")


def md_inline(value: Any) -> str:
    """User text (dataset, label, column names) safe in running Markdown: one line, no HTML.

    An underscore between two letters or digits is left alone: CommonMark never reads it as
    emphasis, so ``learning_rate`` and ``OptimizerNames.ADAMW_TORCH`` stay as written.
    """
    return _escape(" ".join(str(value).split()))


def md_code(value: Any) -> str:
    """User text as a one-line Markdown code span, whatever backticks it holds."""
    text = " ".join(str(value).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_text(value: Any) -> str:
    """hpsearch's own messages in running Markdown: their `code` spans stay code spans, and
    the text around them is escaped as :func:`md_inline` escapes it."""
    parts = re.split(r"(`[^`]+`)", " ".join(str(value).split()))
    return "".join(md_code(part[1:-1]) if i % 2 else _escape(part) for i, part in enumerate(parts))


def _escape(text: str) -> str:
    for ch in _MARKUP:
        text = text.replace(ch, "\\" + ch)
    text = re.sub(r"(?<![^\W_])_|_(?![^\W_])", r"\\_", text)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table whose every cell is escaped with :func:`md_cell`."""
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_header(added: Sequence[str] = ()) -> str:
    """The header of :func:`results_table`: :data:`RESULTS_HEADER`, then a column per added metric."""
    return RESULTS_HEADER + "".join(f" {md_cell(key)} |" for key in added)


def results_table(rows: list[Any], added: Sequence[str] = ()) -> str:
    """The Trainer's "Training results" table: one row per epoch, its numbers as fmt_metric
    prints them; the ``added`` metrics (``evaluate`` modules) follow the built-in scores."""
    header = results_header(added)
    widths = [len(h.strip()) for h in header.strip("|").split("|")]
    lines = [header, "|" + "|".join(":" + "-" * w + ":" for w in widths) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt_metric(row.get(k)) for k in (*_RESULT_KEYS, *added)) + " |")
    return "\n".join(lines)
