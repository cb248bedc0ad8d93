"""Errors that end a task with one clear line and a non-zero exit."""

from invoke.exceptions import Exit


class SwarmhubError(Exit):
    """What went wrong and what to do about it, in one line.

    It is an ``invoke.Exit``: both ``invoke`` and ``fab`` print the message alone
    (no traceback) and exit with ``code``.
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(f"error: {message}", code=code)
        self.reason = message

    def __str__(self) -> str:
        return self.reason
