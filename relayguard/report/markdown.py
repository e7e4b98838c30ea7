"""Markdown for a ticket or a wiki page: verdict, one section per finding, evidence fenced."""

from __future__ import annotations

import re

from relayguard.findings import Report
from relayguard.report import printable


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in `text`, so evidence cannot break out."""
    longest = 0
    run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


# Characters that start Markdown/HTML syntax anywhere in a line: escaped with a backslash, which
# CommonMark allows before any ASCII punctuation, so they render as themselves.
_SPECIAL = frozenset("\\`*_[]<>#|&!~")
# A cell's or list item's text could otherwise open a block of its own ("1. ", "- ", "+ ", "=").
_BLOCK_START = re.compile(r"^(\d{1,9})([.)])|^([-+=])")


def escape_inline(text: str) -> str:
    """Text for one line of Markdown (table cell, heading, list item) that renders literally.

    Evidence is written by attackers (log lines, request targets), so nothing in it may open a
    link, an HTML tag, a code span, a new table row or a new block; line breaks become spaces
    and control characters visible escapes.
    """
    flat = printable(" ".join(text.split()))
    out = "".join("\\" + ch if ch in _SPECIAL else ch for ch in flat)
    return _BLOCK_START.sub(lambda m: (m.group(1) or "") + "\\" + (m.group(2) or m.group(3)),
                            out, count=1)


def _block(text: str) -> str:
    """Text for a code block: CRLF becomes LF, other control characters visible escapes."""
    return printable(text.replace("\r\n", "\n"))


def render_markdown(report: Report) -> str:
    """The whole report as Markdown."""
    findings = report.sorted_findings()
    lines = [f"# relayguard {report.command} report", ""]
    if findings:
        worst = findings[0].severity.label
        lines.append(f"**{len(findings)} finding(s)**, worst severity **{worst}**.")
    else:
        lines.append("**No findings.**")
    if report.errors:
        lines += ["", f"**{len(report.errors)} check(s) could not be completed**: the result is "
                  "incomplete, not clean."]
    lines.append("")
    if findings:
        lines += ["| severity | confidence | category | rule | where | title |",
                  "|---|---|---|---|---|---|"]
        for f in findings:
            lines.append(
                f"| {f.severity.label} | {f.confidence.label} | {' + '.join(f.categories)} | "
                f"{escape_inline(f.rule)} | {escape_inline(str(f.location))} | "
                f"{escape_inline(f.title)} |"
            )
        lines.append("")
    for n, f in enumerate(findings, 1):
        lines += [f"## {n}. {escape_inline(f.title)}", "",
                  f"- rule: {escape_inline(f.rule)}, category: {' + '.join(f.categories)}",
                  f"- severity: **{f.severity.label}**, confidence: {f.confidence.label}",
                  f"- where: {escape_inline(str(f.location))}", ""]
        for ev in f.evidence:
            where = f" ({escape_inline(str(ev.location))})" if ev.location else ""
            body = _block(ev.text)
            fence = _fence(body)
            lines += [f"Evidence, {escape_inline(ev.kind)}{where}:", "", fence, body, fence, ""]
        if f.fix:
            body = _block(f.fix)
            fence = _fence(body)
            lines += ["Fix:", "", fence, body, fence, ""]
    if report.errors:
        lines += ["## Checks that could not be completed", ""]
        lines += [f"- {escape_inline(str(e))}" for e in report.errors]
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""]
        lines += [f"- {escape_inline(n)}" for n in report.notes]
        lines.append("")
    return "\n".join(lines)
