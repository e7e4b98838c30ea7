"""One configuration line as the line-oriented proxies (Squid, tinyproxy, Privoxy, Dante) see it.

Every node keeps the file and line it came from, so a finding can cite the exact text and an
`Edit` can replace exactly those lines; the parsers of those servers all build these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relayguard.audit.readfile import read_text
from relayguard.findings import Edit, Evidence, Location


@dataclass(frozen=True, slots=True)
class Directive:
    """`name args…` read from `path` at 1-based `line`; `text` is the physical line(s) as
    written, joined with newlines when the directive was continued over several lines."""

    path: str
    line: int
    name: str
    args: tuple[str, ...]
    text: str

    @property
    def location(self) -> Location:
        return Location(path=self.path, line=self.line)

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(self.text.split("\n"))

    def evidence(self, note: str = "") -> Evidence:
        """The line itself as evidence (optionally with why it matters)."""
        text = " ".join(part.strip() for part in self.lines)
        return Evidence("config", f"{text}    <- {note}" if note else text, self.location)

    def replace(self, *new: str) -> Edit:
        """Replace this directive's lines by `new` lines (none = delete it)."""
        return Edit(self.path, self.line, self.lines, tuple(new))

    def insert_before(self, *new: str) -> Edit:
        return Edit(self.path, self.line, (), tuple(new))

    def insert_after(self, *new: str) -> Edit:
        return Edit(self.path, self.line + len(self.lines), (), tuple(new))


def strip_comment(text: str, marker: str = "#") -> str:
    """Drop a comment that starts the line or follows whitespace (`a b  # c` -> `a b`)."""
    s = text.strip()
    if s.startswith(marker):
        return ""
    for i, ch in enumerate(s):
        if ch == marker and s[i - 1] in " \t":
            return s[:i].rstrip()
    return s


def read_lines(path: Path, shown: str | None = None) -> list[str]:
    """A config file's physical lines (newline-split, `\\r` dropped); InputError if unreadable."""
    text = read_text(path, shown)
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
