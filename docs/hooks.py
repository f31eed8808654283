"""mkdocs hooks: the site reads the repository's own files instead of copies of them.

* ``<!-- include: PATH -->`` (optionally ``<!-- include: PATH +1 -->`` to push its headings one level down) on a
  line of its own is replaced by the file PATH, relative to the repository root: experiments/README.md,
  benchmarks/README.md and examples/README.md are written once, where they live, and shown on the site as they are.
* Links are rewritten so that what works on GitHub works on the site: a link is resolved against the file it was
  written in (the page, or the included file), then
  - a page of docs/ stays a page link;
  - a README that a page includes becomes a link to that page;
  - a figure (figures/, benchmarks/results/) becomes a link to its copy under assets/ on the site;
  - any other file of the repository (a script, a JSON result) is named as code, since the site does not hold it.
* The tutorials execute when the site builds: every ```python block of tutorials/ runs,
  each in a fresh namespace inside a temporary folder, and what it prints is shown below it; a block that fails
  fails the build. (tests/test_readme.py runs the same blocks under pytest, and those of README.md and
  getting-started.md too: getting started's dense-Hessian example alone takes 25 s, which the build skips.)
  ``SHARPNESS_DOCS_EXECUTE=0 mkdocs build`` skips them for a quick look at the pages; CI always runs them.
* The docstrings' Sphinx roles (:class:`~x.Name`) are shown as code on the API pages (below).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import time
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("mkdocs.hooks.sharpness")
ASSET_DIRS = ("figures", "benchmarks/results")
ASSET_SUFFIXES = (".png", ".svg", ".jpg")
ASSET_PREFIX = "assets"
INCLUDE = re.compile(r"^<!-- include: (\S+)( \+\d)? -->$", re.M)
LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _included_by(files) -> dict[str, str]:
    """repository path of an included file -> the docs page (src_uri) that includes it."""
    found = {}
    for path in sorted((ROOT / "docs").rglob("*.md")):
        for match in INCLUDE.finditer(path.read_text()):
            found[match.group(1)] = path.relative_to(ROOT / "docs").as_posix()
    return found


def on_files(files, config):
    for folder in ASSET_DIRS:
        for path in sorted((ROOT / folder).glob("*")):
            if path.suffix in ASSET_SUFFIXES:
                uri = f"{ASSET_PREFIX}/{folder}/{path.name}"
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def _rewrite_links(text: str, base: str, page_uri: str, includes: dict[str, str]) -> str:
    """Rewrite the links of ``text``, written in the repository folder ``base``, for the page ``page_uri``."""
    page_dir = posixpath.dirname(page_uri)

    def relative(docs_uri: str) -> str:
        return posixpath.relpath(docs_uri, page_dir or ".")

    def one(match: re.Match) -> str:
        bang, label, target = match.groups()
        if re.match(r"^[a-z]+:|^#", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(base, path))
        if repo_path.startswith("docs/"):
            uri = repo_path[len("docs/"):]
            return f"{bang}[{label}]({relative(uri)}{'#' + anchor if anchor else ''})"
        if repo_path in includes:
            return f"{bang}[{label}]({relative(includes[repo_path])})"
        if repo_path.startswith(ASSET_DIRS) and repo_path.endswith(ASSET_SUFFIXES):
            return f"{bang}[{label}]({relative(ASSET_PREFIX + '/' + repo_path)})"
        return label if label.strip("`") == repo_path else f"{label} (`{repo_path}`)"

    return _outside_fences(text, lambda part: LINK.sub(one, part))


def _outside_fences(text: str, change) -> str:
    """``change`` applied to the prose of ``text`` only: code blocks are left as they are."""
    pieces, last = [], 0
    for fence in FENCE.finditer(text):
        pieces.append(change(text[last:fence.start()]))
        pieces.append(fence.group(0))
        last = fence.end()
    pieces.append(change(text[last:]))
    return "".join(pieces)


EXECUTED = ("tutorials/",)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```\n", re.S | re.M)


def _run_block(code: str, where: str) -> str:
    """Run one block as a script in a temporary folder and return what it printed."""
    import contextlib
    import io
    import tempfile

    out, here = io.StringIO(), os.getcwd()
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(out):
        os.chdir(folder)
        try:
            exec(compile(code, where, "exec"), {"__name__": "__docs__"})
        finally:
            os.chdir(here)
    return out.getvalue()


def _execute(markdown: str, page_uri: str) -> str:
    count = 0

    def one(match: re.Match) -> str:
        nonlocal count
        count += 1
        where, start = f"docs/{page_uri} python block {count}", time.perf_counter()
        printed = _run_block(match.group(1), where)
        LOG.info("ran %s in %.1f s", where, time.perf_counter() - start)
        if not printed.strip():
            return match.group(0)
        return f"{match.group(0)}\nOutput, from running the block when this page was built:\n\n```text\n{printed.rstrip()}\n```\n"

    return PYTHON_BLOCK.sub(one, markdown)


def on_page_markdown(markdown, page, config, files):
    page_uri = page.file.src_uri
    if page_uri.startswith(EXECUTED) and os.environ.get("SHARPNESS_DOCS_EXECUTE", "1") != "0":
        markdown = _execute(markdown, page_uri)
    includes = _included_by(files)
    out = _rewrite_links(markdown, posixpath.dirname("docs/" + page_uri), page_uri, includes)

    def include(match: re.Match) -> str:
        rel = match.group(1)
        text = (ROOT / rel).read_text()
        shift = int(match.group(2) or 0)
        if shift:
            heading = re.compile(r"^(#+) ", re.M)
            text = _outside_fences(text, lambda part: heading.sub(lambda h: "#" * (len(h.group(1)) + shift) + " ", part))
        return _rewrite_links(text, posixpath.dirname(rel), page_uri, includes)

    return INCLUDE.sub(include, out)


# The docstrings cross-reference in Sphinx's roles (:class:`~pkg.Name`, :func:`f`), which Markdown renders as
# ":class:" before the code. On the site the role goes and the name stays code; "~" keeps the last part only,
# as Sphinx shows it.
ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):<code>(~?)([^<]+)</code>")


def on_page_content(html, page, config, files):
    return ROLE.sub(lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>", html)
