"""Exceptions that carry a message a person can act on; the CLI turns them into exit code 2.

    RelayguardError
    ├── InputError      a file, directory or argument we cannot use (names it, and the line)
    └── UsageError      options that contradict each other or are out of range
"""

from __future__ import annotations


class RelayguardError(Exception):
    """Base of every error relayguard raises on purpose."""


class InputError(RelayguardError):
    """Input that cannot be used; `source` and `line` say exactly where."""

    def __init__(self, source: str, message: str, line: int | None = None) -> None:
        self.source = source
        self.line = line
        self.message = message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


class UsageError(RelayguardError):
    """Command-line options that cannot work together."""
