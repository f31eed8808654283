"""Run the command line in-process the way a user's shell would: exit code, stdout, stderr."""

from __future__ import annotations

import pytest

from sharpness.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else int(code)), out, err


def assert_input_error(result: tuple[int, str, str], *fragments: str) -> None:
    """Exit 2, exactly one line on stderr, no traceback, and the line names what was expected/arrived."""
    code, out, err = result
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
