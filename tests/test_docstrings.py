"""Docstrings teach (issue #31): the math, shapes, defaults, sources and reasons, never a lab notebook.

History and measurements belong in CHANGELOG.md and benchmarks/README.md; a dated run or a "was 11" in a
docstring is history. This keeps the package's docstrings free of both.
"""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sharpness"
#: A date (a run's, a result file's) or a before/after number ("was 11").
HISTORY = re.compile(r"20[0-9]{2}-[0-9]{2}-[0-9]{2}|\bwas [0-9]")


def docstrings(path: Path):
    """(line, text) of the module's, every class's, every function's and every attribute's docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node, clean=False)
            if text:
                yield getattr(node, "lineno", 1), text
        if isinstance(node, (ast.Module, ast.ClassDef)):
            # attribute docstrings: a string right after an assignment (the API reference shows them)
            for before, after in zip(node.body, node.body[1:]):
                if (isinstance(before, (ast.Assign, ast.AnnAssign)) and isinstance(after, ast.Expr)
                        and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                    yield after.lineno, after.value.value


def test_the_scan_sees_the_package_docstrings(tmp_path):
    found = [t for p in PACKAGE.rglob("*.py") for _, t in docstrings(p)]
    assert len(found) > 200  # the walk reaches modules, classes and functions
    assert HISTORY.search("results/conv-shortcut-2026-12-02.json") and HISTORY.search("it was 11 products")
    assert not HISTORY.search("sharpness.report/1, tol 1e-3, k ≥ 2")
    module = tmp_path / "attribute.py"
    module.write_text('X = 1\n"""X, from results/run-2026-12-02.json."""\n', encoding="utf-8")
    attribute = list(docstrings(module))
    assert [line for line, _ in attribute] == [2] and HISTORY.search(attribute[0][1])


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_docstring_carries_dates_or_history(path):
    hits = [f"{path.relative_to(PACKAGE.parent)}:{line}: {m.group(0)!r}"
            for line, text in docstrings(path) for m in HISTORY.finditer(text)]
    assert not hits, "history belongs in CHANGELOG.md or benchmarks/README.md, not a docstring:\n" + "\n".join(hits)
