"""The one exception type the harness raises for bad input: its message says what was expected, what
was found and what to do."""


class HarnessError(Exception):
    """A user-facing error; the CLI prints its message without a traceback and exits with status 2."""
