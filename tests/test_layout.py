"""The package's layout: layers import only the layers below them, and modules stay short.

The layers are the ones ``hpsearch/__init__.py``'s docstring names, lowest first; every
import of an hpsearch module is checked, at the top of a file, inside a function or under
``TYPE_CHECKING``. Only ``cli.py`` and ``hpsearch/__init__.py`` may import hpsearch modules
inside a function (so that ``hpsearch --help`` stays quick); anywhere else such an import
hides a dependency from the reader.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import hpsearch

PACKAGE = Path(hpsearch.__file__).parent
MAX_LINES = 450
MAY_DEFER = {"cli.py", "__init__.py"}  # relative to the package; __init__ of the package only


def _layers() -> list[list[str]]:
    """The layers the package docstring draws: ``errors → checks, files → ... → cli``."""
    doc = hpsearch.__doc__ or ""
    chain = re.search(r"lowest first.*?:\n\n(.*?)\n\n", doc, re.S)
    assert chain, "hpsearch/__init__.py's docstring draws no layer chain ('Layers, lowest first: ...')"
    return [[name.strip() for name in layer.split(",")] for layer in " ".join(chain.group(1).split()).split("→")]


def _node(module: str) -> str | None:
    """The layer member a module belongs to: ``hpsearch.search.loop`` → ``search``; None for the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _rank() -> dict[str, int]:
    return {name: i for i, layer in enumerate(_layers()) for name in layer}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """Every hpsearch module ``path`` imports: (module, line, inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside = {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hpsearch":
            if node.module == "hpsearch":  # `from hpsearch import schema`: a module, or a name of the package
                names = [f"hpsearch.{a.name}" for a in node.names if _is_module(a.name)]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "hpsearch"]
        else:
            continue
        found += [(name, node.lineno, id(node) in inside) for name in names]
    return found


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_the_docstring_names_every_module_and_package_once():
    named = [name for layer in _layers() for name in layer]
    members = {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    members |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert sorted(named) == sorted(members)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_a_module_imports_only_the_layers_below_its_own(path):
    rank = _rank()
    here = _node("hpsearch." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    upward = [
        f"line {line}: {module}"
        for module, line, _ in _imports(path)
        if (there := _node(module)) is not None and there != here and rank[there] >= rank[here]
    ]
    assert upward == []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_only_the_cli_defers_an_import_of_an_hpsearch_module(path):
    if path.relative_to(PACKAGE).as_posix() in MAY_DEFER:
        return
    hidden = [f"line {line}: {module}" for module, line, deferred in _imports(path) if deferred]
    assert hidden == []


def test_the_checks_catch_an_upward_and_a_deferred_import(tmp_path, monkeypatch):
    """The two rules above fail on a file that breaks them."""
    bad = PACKAGE / "training" / "_layout_probe.py"
    bad.write_text("from hpsearch.search.loop import work\n\n\ndef f():\n    from hpsearch import schema\n", "utf-8")
    try:
        with pytest.raises(AssertionError):
            test_a_module_imports_only_the_layers_below_its_own(bad)
        with pytest.raises(AssertionError):
            test_only_the_cli_defers_an_import_of_an_hpsearch_module(bad)
    finally:
        bad.unlink()


def test_the_best_model_folder_is_named_in_one_module():
    """``best-model`` as a string (not in a docstring or comment) appears in hpsearch.layout only."""
    spelled = set()
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if "best-model" in node.value:
                    spelled.add(path.relative_to(PACKAGE).as_posix())
    assert spelled == {"layout.py"}


def test_no_module_edits_a_command_line():
    """A pool's workers get the parent's settings in a file, not an edited ``argv``."""
    editing = [p.relative_to(PACKAGE).as_posix() for p in _modules() if "argv" in p.read_text(encoding="utf-8")]
    assert set(editing) <= {"cli.py", "__main__.py", "search/pool.py"}
    pool = (PACKAGE / "search" / "pool.py").read_text(encoding="utf-8")
    assert 'argv = ["run", "--worker-settings"' in pool


def test_no_module_is_longer_than_a_reader_takes_in():
    long = {
        p.relative_to(PACKAGE).as_posix(): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
