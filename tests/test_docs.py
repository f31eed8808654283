"""The documentation site covers the public API: every public name of ``sharpness`` has its own entry in the
API reference (docs/api/), every subpackage with an ``__all__`` is rendered whole there, every page under
docs/ is in the site's navigation, and README.md stays a front page that links into them. (``mkdocs build --strict`` itself runs in .ci/run.)"""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

import pytest

import sharpness

ROOT = Path(__file__).resolve().parents[1]
API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))
DIRECTIVE = re.compile(r"^::: (sharpness(?:\.\w+)*)\s*$", re.M)


def _directives() -> set[str]:
    return {name for page in API_PAGES for name in DIRECTIVE.findall(page.read_text())}


def public_names() -> list[str]:
    """``sharpness.__all__`` when the package declares it, else every public non-module attribute it exports."""
    declared = getattr(sharpness, "__all__", None)
    if declared is not None:
        return list(declared)
    return sorted(n for n, v in vars(sharpness).items() if not n.startswith("_") and not isinstance(v, types.ModuleType))


def _declared_all(init: Path) -> list[str] | None:
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return None


def public_subpackages() -> dict[str, list[str]]:
    """``sharpness.X`` -> its ``__all__``, for every subpackage that declares one (read from the source, not imported)."""
    found = {}
    for init in sorted((ROOT / "sharpness").glob("*/__init__.py")):
        names = _declared_all(init)
        if names is not None:
            found[f"sharpness.{init.parent.name}"] = names
    return found


def test_the_api_reference_pages_exist():
    assert API_PAGES, "docs/api/*.md is missing"
    assert len(public_names()) >= 40  # the package's exports were found at all


@pytest.mark.parametrize("name", public_names())
def test_every_public_name_has_an_api_entry(name):
    assert f"sharpness.{name}" in _directives(), f"docs/api/ has no `::: sharpness.{name}`"


@pytest.mark.parametrize("package", sorted(public_subpackages()))
def test_every_public_subpackage_is_rendered_whole(package):
    """A ``::: sharpness.X`` directive renders X's ``__all__``: it must be there, and not narrowed by ``members:``."""
    assert public_subpackages()[package], f"{package}.__all__ is empty"
    assert package in _directives(), f"docs/api/ has no `::: {package}`"
    for page in API_PAGES:
        for block in re.findall(rf"^::: {re.escape(package)}\s*\n((?:    .*\n)*)", page.read_text(), re.M):
            assert "members:" not in block, f"{page.name}: `::: {package}` lists only some members"


def test_the_readme_is_a_front_page():
    """Issue 31: README.md stays a front page (≤ ~150 lines) whose details live on the site's pages."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150, "README.md grew past a front page: move the details into docs/"
    for page in ("docs/getting-started.md", "docs/cli.md", "docs/api/index.md", "docs/reproductions.md"):
        assert f"]({page})" in readme, f"README.md does not link {page}"
        assert (ROOT / page).is_file()


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")]
    assert pages
    for page in pages:
        assert re.search(rf":\s+{re.escape(page)}\s*$", nav, re.M), f"mkdocs.yml nav does not list {page}"
