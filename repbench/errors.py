"""The one error type a user sees: the CLI prints its message on one line and exits non-zero."""
from __future__ import annotations


class RepbenchError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), at most `limit` characters:
    a longer line ends with its last whole sentence within them, else its last whole word and "…", never mid-word
    (library messages put their advice after the fact, and half a word reads as a broken message)."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if len(line) <= limit:
        return line
    head = line[:limit + 1]
    sentence = head.rfind(". ")
    if sentence >= 10:
        return head[:sentence + 1]
    word = head[:limit - 2].rfind(" ")
    return head[:word].rstrip(" ,;:") + " …" if word > 0 else line[:limit]  # one long token: nothing to keep whole
