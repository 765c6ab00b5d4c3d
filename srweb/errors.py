"""How an exception reads in one line (CLI errors, card checks, Hub answers, failed runs)."""

from __future__ import annotations


def first_line(exc: BaseException, *, with_type: bool = False) -> str:
    """The first line of ``exc``'s message (its type name when it has none); ``with_type`` prefixes
    ``Type: `` (for errors from libraries, whose type says more than their message)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[0]
    return f"{type(exc).__name__}: {line}" if with_type else line
