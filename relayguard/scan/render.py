"""How `scan` is told: the verdict and the stories first (fix first), then the usual report.

Text and Markdown get a story header above the shared reporter's findings; JSON and SARIF are
the shared reporters unchanged (stories are in `stats["stories"]`); HTML is the shared HTML
reporter, which draws the scan's verdict, stories, timelines and blocklist table itself.
Everything is a string; the CLI prints it.
"""

from __future__ import annotations

from typing import Any

from relayguard.findings import Report
from relayguard.report import OutputFormat, printable, render
from relayguard.report.markdown import _fence, escape_inline
from relayguard.scan.correlate import SOURCE_WORDS


def _story_lines(stats: dict[str, Any], md: bool) -> list[str]:
    out: list[str] = []
    for i, story in enumerate(stats.get("stories") or [], 1):
        seen = ", ".join(SOURCE_WORDS.get(s, s) for s in story["evidence"])
        head = f"{story['severity'].upper()}, {story['confidence']}: {story['headline']}"
        if md:
            out.append(f"{i}. **{escape_inline(head)}**")
            out.append(f"   - evidence agreeing: {seen} ({len(story['findings'])} finding(s): "
                       f"{', '.join(f'`{r}`' for r in story['rules'])})")
            out += [f"   - what followed: {escape_inline(line)}"
                    for line in story.get("followed") or []]
            if story.get("fix"):
                fence = _fence(story["fix"])
                fix = printable(story["fix"]).replace("\n", "\n     ")
                out.append(f"   - **fix first:**\n\n     {fence}\n     {fix}\n     {fence}")
        else:
            out.append(f"{i}. {printable(head)}")
            if story.get("fix"):
                fix = printable(story["fix"]).replace("\n", "\n      ")
                out.append(f"   FIX FIRST: {fix}")
            out.append(f"   evidence agreeing: {seen} — {len(story['findings'])} finding(s): "
                       f"{', '.join(story['rules'])}")
            out += [f"   what followed: {printable(line)}" for line in story.get("followed") or []]
    return out


def scan_header(report: Report, md: bool = False) -> str:
    """The verdict and the stories, before the detailed findings."""
    stats = report.stats if isinstance(report.stats, dict) else {}
    host = stats.get("host", "?")
    word = stats.get("verdict", "?")
    lines = [f"## {escape_inline(f'relayguard scan: {host} — {word}')}" if md
             else f"relayguard scan: {printable(host)}  VERDICT {word}",
             f"{stats.get('verdict_meaning', '')}", ""]
    told = _story_lines(stats, md)
    if told:
        lines += [("### What to do, most urgent first" if md else "What to do, most urgent "
                   "first:"), "", *told, ""]
    source = stats.get("probe_source")
    if source:
        lines.append(f"probes came from {source}")
    lines.append("")
    return "\n".join(lines)


def fleet_header(summary: Report, md: bool = False) -> str:
    """The fleet table: one line per site, worst verdict on top."""
    stats = summary.stats
    rows = stats.get("fleet") or []
    lines = [f"{'## ' if md else ''}relayguard fleet scan: {stats.get('sites')} site(s), "
             f"overall {stats.get('verdict')}", ""]
    if md:
        lines += ["| site | host | verdict | findings | errors | headline |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            cells = [escape_inline(str(r[k])) for k in
                     ("site", "host", "verdict", "findings", "errors", "headline")]
            lines.append("| " + " | ".join(cells) + " |")
    else:
        for r in rows:
            lines.append(f"  {printable(r['site']):<20} {printable(r['host']):<24} "
                         f"{r['verdict']:<10} {r['findings']:>3} finding(s) {r['errors']:>2} "
                         f"error(s)  {printable(r['headline'])}")
    return "\n".join(lines) + "\n\n"


def render_scan(report: Report, fmt: OutputFormat, *, color: bool = False,
                width: int = 100) -> str:
    """One site's scan in any format."""
    if fmt is OutputFormat.TEXT:
        return scan_header(report) + render(report, fmt, color=color, width=width)
    if fmt is OutputFormat.MARKDOWN:
        return scan_header(report, md=True) + "\n" + render(report, fmt)
    if fmt is OutputFormat.HTML:
        from relayguard.scan.html import render_scan_html

        return render_scan_html(report)
    return render(report, fmt, color=color, width=width)
