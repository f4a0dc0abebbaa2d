"""The package's layout: stages import only the stages before them, and modules stay short."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hpsearch

PACKAGE = Path(hpsearch.__file__).parent
# Stage -> the hpsearch packages it must not import: data flows training -> search -> card/views.
FORBIDDEN = {
    "training": ("hpsearch.views", "hpsearch.card", "hpsearch.cli"),
    "search": ("hpsearch.views", "hpsearch.card", "hpsearch.cli"),
    "card": ("hpsearch.cli",),
    "views": ("hpsearch.cli",),
}
MAX_LINES = 450


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_a_stage_does_not_import_the_stages_after_it(stage):
    wrong = {
        (path.name, name)
        for path in (PACKAGE / stage).rglob("*.py")
        for name in _imports(path)
        if name.startswith(FORBIDDEN[stage])
    }
    assert wrong == set()


def test_no_module_is_longer_than_a_reader_takes_in():
    long = {
        p.relative_to(PACKAGE).as_posix(): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
