"""The one exception type the CLI turns into exit code 2.

Anything the *user* got wrong (a missing file, an unknown model name, a checkpoint that does not match its
architecture, labels out of range) raises :class:`InputError` with one line that says what was expected and
what arrived. Everything else is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad usage or bad input: the message is shown to the user as-is, exit code 2."""


class GateFailed(RuntimeError):
    """A requested pipeline gate failed (exit code 3); the report has already been written."""
