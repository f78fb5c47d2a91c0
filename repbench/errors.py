"""The one error type a user sees: the CLI prints its message on one line and exits non-zero."""
from __future__ import annotations


class RepbenchError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), cut to `limit` characters."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
