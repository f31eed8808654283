"""The ``sharpness`` command line: a thin click layer over the library.

Every command maps its options onto one library call and prints the result: a table for people on stdout, or
JSON with ``--json``. Progress and logs go to stderr: progress bars only on a terminal, and ``analyze``'s one
line per finished measure also in a pipeline (``-q`` silences it).

Exit codes (the same for every command):

\b
  0  success
  2  bad usage or bad input: one line on stderr saying what was expected and what arrived
  3  a requested gate failed (the report is still written)
  130  interrupted (Ctrl-C): one line, no report; long jobs resume from their last saved state
  other  a bug: please report it with the traceback
"""

from __future__ import annotations

import sys
import warnings

import click

from .. import __version__
from ..objective.distributed import DistributedError
from ..errors import GateFailed, InputError

EXIT_OK, EXIT_INPUT, EXIT_GATE = 0, 2, 3


GROUP_HELP = """Sharp vs flat minima analysis for PyTorch models.

\b
Exit codes:
  0  success
  2  bad usage or bad input (one line on stderr, no traceback)
  3  a requested gate failed (the report is still written)
  other  a bug
"""


@click.group(help=GROUP_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sharpness")
def cli() -> None:
    pass


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group and turn user errors into one line on stderr and exit code 2."""
    prog = "sharpness"
    with warnings.catch_warnings():  # restores the caller's warning display when main is called in-process
        warnings.showwarning = _one_line_warning
        _run(prog, argv)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library warning as one stderr line (``sharpness: warning: ...``), not Python's two lines of source."""
    click.echo(f"sharpness: warning: {' '.join(str(message).split())}", err=True)


def _run(prog: str, argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        name = exc.ctx.command_path if exc.ctx is not None else prog
        hint = f" (see '{name} --help')"
        click.echo(f"{name}: error: {exc.format_message()}{hint}", err=True)
        sys.exit(EXIT_INPUT)
    except click.ClickException as exc:
        click.echo(f"{prog}: error: {exc.format_message()}", err=True)
        sys.exit(EXIT_INPUT)
    except (InputError, DistributedError) as exc:
        # A DistributedError: another rank died or a collective timed out; that rank prints its own cause.
        click.echo(f"{prog}: error: {' '.join(str(exc).split())}", err=True)
        sys.exit(EXIT_INPUT)
    except GateFailed as exc:
        click.echo(f"{prog}: gate failed: {exc}", err=True)
        sys.exit(EXIT_GATE)
    except OSError as exc:
        if exc.filename is None:
            raise
        click.echo(f"{prog}: error: cannot access {exc.filename}: {exc.strerror}", err=True)
        sys.exit(EXIT_INPUT)
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        sys.exit(130)
    sys.exit(EXIT_OK)


# Commands register themselves on `cli` when their module is imported.
from . import analyze, info, landscape  # noqa: E402,F401
from . import train  # noqa: E402,F401
from . import reproduce  # noqa: E402,F401
from . import correlate  # noqa: E402,F401
