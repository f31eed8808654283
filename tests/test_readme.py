"""README.md and the documentation pages stay true: every ```python block of README.md and docs/**/*.md runs as
written (so the tutorials execute), and every `sharpness` command line in a ```bash block names a command and
options that exist (long studies are not run, but their flags are checked)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sharpness.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The front page and the site's pages (the text the README used to hold lives there now).
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]


def _blocks(language: str, pages: list[Path] = PAGES) -> list[tuple[str, int, str]]:
    """(page, index within the page, code) of every ```language block."""
    found = []
    for page in pages:
        blocks = re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), re.S | re.M)
        found += [(page.relative_to(ROOT).as_posix(), i, code) for i, code in enumerate(blocks)]
    return found


def _unique(blocks):
    """A block that a page repeats word for word (the front page's example on getting started) runs once."""
    seen = set()
    return [block for block in blocks if not (block[2] in seen or seen.add(block[2]))]


@pytest.mark.parametrize(
    "page, index, code", [pytest.param(*b, id=f"{b[0]}:{b[1] + 1}") for b in _unique(_blocks("python"))]
)
def test_python_snippet_runs_as_written(page, index, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a snippet may write files (the tracker's CSV)
    exec(compile(code, f"{page} python block {index + 1}", "exec"), {"__name__": "__readme__"})


def test_the_readme_keeps_a_python_example_and_the_pages_their_tutorials():
    assert len(_blocks("python", [README])) >= 1
    assert len(_blocks("python")) >= 3  # the README's three examples, wherever they now live


def _command_lines(pages: list[Path] = PAGES) -> list[list[str]]:
    """The argument lists after ``sharpness`` / ``-m sharpness`` in the bash blocks (continuations joined)."""
    found = []
    for _, _, block in _blocks("bash", pages):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("#"):
                continue
            for part in re.split(r"&&|;", line):
                words = shlex.split(part)
                for i, word in enumerate(words):
                    if word == "sharpness" and (i == 0 or words[i - 1] == "-m"):
                        found.append(words[i + 1:])
                        break
    return found


def test_every_readme_command_line_uses_existing_commands_and_options():
    lines = _command_lines()
    assert len(lines) >= 23  # the 23 command lines the README held before its text moved to docs/
    assert len(_command_lines([README])) >= 2  # the front page's own commands
    for args in lines:
        command = cli.commands.get(args[0])
        assert command is not None, f"README names no such command: sharpness {' '.join(args)}"
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for word in args[1:]:
            if word.startswith("--"):
                assert word.split("=")[0] in known, f"README: `sharpness {args[0]}` has no option {word}"
