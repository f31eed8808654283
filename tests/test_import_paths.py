"""Every import path a user is shown still works: the public names of ``sharpness``, and each ``import`` line and
dotted ``sharpness.…`` path in the README, the documentation pages and the examples.

The package's modules are grouped into folders (issue #31); this is what keeps a move from silently breaking a
path that a reader copies from the docs. Code blocks are parsed with :mod:`ast`, so a multi-line
``from sharpness.x import (a, b)`` counts like a one-line one; a block that is not Python (shell, output) is
skipped.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

import sharpness
from test_docs import public_names

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
CODE_BLOCK = re.compile(r"^```(?:python|py)\s*\n(.*?)^```", re.M | re.S)
#: An inline code span that is nothing but a dotted path into the package, e.g. `sharpness.objective.streams`.
INLINE_PATH = re.compile(r"`(sharpness(?:\.\w+)+)(?:\(\))?`")
#: Optional extras: their modules import a third-party package that may not be installed.
OPTIONAL = ("sharpness.integrations.",)


def _imports(source: str) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names) for each ``import sharpness…`` / ``from sharpness… import …`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "sharpness":
            found.append((node.module, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Import):
            found += [(a.name, ()) for a in node.names if a.name.split(".")[0] == "sharpness"]
    return found


def documented_imports() -> list[tuple[str, str, tuple[str, ...]]]:
    """(where, module, names) for every import of the package in a page's Python blocks or an example script."""
    found = []
    for page in PAGES:
        for block in CODE_BLOCK.findall(page.read_text()):
            try:
                found += [(page.relative_to(ROOT).as_posix(), m, n) for m, n in _imports(block)]
            except SyntaxError:
                continue
    for script in EXAMPLES:
        found += [(script.relative_to(ROOT).as_posix(), m, n) for m, n in _imports(script.read_text())]
    return found


def documented_paths() -> list[tuple[str, str]]:
    """(where, dotted path) for every inline-code ``sharpness.…`` path on a page."""
    return sorted({(page.relative_to(ROOT).as_posix(), path) for page in PAGES
                   for path in INLINE_PATH.findall(page.read_text())})


def _from_this_checkout(module) -> None:
    """A module an old path names may still be found in another installed copy of the package (an editable
    install of another checkout, say): count it only when it comes from the package under test."""
    here = Path(sharpness.__file__).parent
    assert Path(module.__file__).resolve().is_relative_to(here), f"{module.__name__} loads from {module.__file__}"


def _resolve(path: str):
    """The module or attribute a dotted path names: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as err:
            if err.name and err.name.split(".")[0] != "sharpness":
                raise  # the module exists but needs an extra
            continue
        _from_this_checkout(obj)
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(path)


def _optional(module: str) -> bool:
    return module.startswith(OPTIONAL)


@pytest.mark.parametrize("name", public_names())
def test_every_public_name_imports_from_the_top_level(name):
    namespace: dict = {}
    exec(f"from sharpness import {name}", namespace)
    assert namespace[name] is getattr(sharpness, name)


def test_the_documents_show_imports_at_all():
    assert len(documented_imports()) >= 5 and len(documented_paths()) >= 5


def test_a_path_that_moved_is_caught():
    with pytest.raises((ImportError, AssertionError, AttributeError)):
        _resolve("sharpness.losses.per_sample_loss")  # before issue #31's regrouping; now sharpness.objective.losses


@pytest.mark.parametrize(("where", "module", "names"), documented_imports(),
                         ids=lambda v: v if isinstance(v, str) else ",".join(v))
def test_every_documented_import_works(where, module, names):
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        if _optional(module) and not (err.name or "").startswith("sharpness"):
            pytest.skip(f"{module} needs an optional extra: {err}")
        raise
    _from_this_checkout(mod)
    for name in names:
        assert name == "*" or hasattr(mod, name) or importlib.util.find_spec(f"{module}.{name}"), \
            f"{where}: `from {module} import {name}` fails"


@pytest.mark.parametrize(("where", "path"), documented_paths(), ids=lambda v: v)
def test_every_documented_dotted_path_resolves(where, path):
    try:
        _resolve(path)
    except ImportError as err:
        if _optional(path) and not (err.name or "").startswith("sharpness"):
            pytest.skip(f"{path} needs an optional extra: {err}")
        raise
