"""Reporters: each turns a `Report` into a string; only the CLI writes it anywhere.

Reporters never know which command produced a finding, and never filter: what to show is
decided before they are called.
"""

from __future__ import annotations

from enum import Enum

from relayguard.findings import Report


class OutputFormat(str, Enum):
    """The `--format` choices every command accepts."""

    TEXT = "text"
    JSON = "json"
    SARIF = "sarif"
    MARKDOWN = "markdown"


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
    raise AssertionError(f"unhandled format {fmt!r}")  # pragma: no cover
