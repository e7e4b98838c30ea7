"""Reporters: each turns a `Report` into a string; only the CLI writes it anywhere.

Reporters never know which command produced a finding, and never filter: what to show is
decided before they are called.
"""

from __future__ import annotations

import re
from enum import StrEnum

from relayguard.findings import Report

# Control characters (ESC above all) and bidi overrides are written by whoever sent the logged
# request or wrote the config: printed raw they could rewrite a terminal or reorder what a
# person reads. Reporters show them as visible escapes (`\x1b`); newline and tab stay.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """`text` as a string that cannot drive a terminal: unsafe characters become escapes."""
    return _UNSAFE.sub(lambda m: repr(m.group())[1:-1], str(text))


class OutputFormat(StrEnum):
    """The `--format` choices every command accepts."""

    TEXT = "text"
    JSON = "json"
    SARIF = "sarif"
    MARKDOWN = "markdown"
    HTML = "html"


def render(report: Report, fmt: OutputFormat, *, color: bool = False, width: int = 100) -> str:
    """Render `report` in `fmt`; `color` only matters for text on a terminal."""
    if fmt is OutputFormat.TEXT:
        from relayguard.report.text import render_text

        return render_text(report, color=color, width=width)
    if fmt is OutputFormat.JSON:
        from relayguard.report.jsondoc import render_json

        return render_json(report)
    if fmt is OutputFormat.SARIF:
        from relayguard.report.sarif import render_sarif

        return render_sarif(report)
    if fmt is OutputFormat.MARKDOWN:
        from relayguard.report.markdown import render_markdown

        return render_markdown(report)
    if fmt is OutputFormat.HTML:
        from relayguard.report.html import render_html

        return render_html(report)
    raise AssertionError(f"unhandled format {fmt!r}")  # pragma: no cover
