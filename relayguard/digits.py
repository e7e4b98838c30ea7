"""Numbers in text from outside (logs, configs, replies, the command line), read safely.

`str.isdigit()` is true for '²', '③' and other digit characters that `int()` refuses, so the
usual `int(s) if s.isdigit()` raises on hostile input (a request line with `host:²5` stopped
`relayguard logs` with a traceback). Every such check goes through here instead.
"""

from __future__ import annotations


def is_digits(text: str) -> bool:
    """True for one or more ASCII digits 0-9, nothing else."""
    return text.isascii() and text.isdigit()


def ascii_int(text: str | None) -> int | None:
    """`text` as a non-negative int when it is ASCII digits only, else None."""
    return int(text) if text and is_digits(text) else None
