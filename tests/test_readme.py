"""README.md stays true: every ```python block runs as written, and every `sharpness` command line in a
```bash block names a command and options that exist (long studies are not run, but their flags are checked)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sharpness.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.S | re.M)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_snippet_runs_as_written(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a snippet may write files (the tracker's CSV)
    code = _blocks("python")[index]
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})


def _command_lines() -> list[list[str]]:
    """The argument lists after ``sharpness`` / ``-m sharpness`` in the bash blocks (continuations joined)."""
    found = []
    for block in _blocks("bash"):
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
    assert len(lines) >= 10  # the blocks were found at all
    for args in lines:
        command = cli.commands.get(args[0])
        assert command is not None, f"README names no such command: sharpness {' '.join(args)}"
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for word in args[1:]:
            if word.startswith("--"):
                assert word.split("=")[0] in known, f"README: `sharpness {args[0]}` has no option {word}"
