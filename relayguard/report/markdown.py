"""Markdown for a ticket or a wiki page: verdict, one section per finding, evidence in code blocks."""

from __future__ import annotations

from relayguard.findings import Report


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in `text`, so evidence cannot break out."""
    longest = 0
    run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def _inline(text: str) -> str:
    """Escape text placed in a table cell or heading."""
    out = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "`*_[]<>#":
        out = out.replace(ch, "\\" + ch)
    return out


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
        lines.append(f"**{len(report.errors)} check(s) could not be completed**: the result is "
                     "incomplete, not clean.")
    lines.append("")
    if findings:
        lines += ["| severity | confidence | category | rule | where | title |",
                  "|---|---|---|---|---|---|"]
        for f in findings:
            lines.append(
                f"| {f.severity.label} | {f.confidence.label} | {f.category.value} | {f.rule} | "
                f"{_inline(str(f.location))} | {_inline(f.title)} |"
            )
        lines.append("")
    for n, f in enumerate(findings, 1):
        lines += [f"## {n}. {_inline(f.title)}", "",
                  f"- rule: `{f.rule}`, category: `{f.category.value}`",
                  f"- severity: **{f.severity.label}**, confidence: {f.confidence.label}",
                  f"- where: `{f.location}`", ""]
        for ev in f.evidence:
            where = f" ({_inline(str(ev.location))})" if ev.location else ""
            fence = _fence(ev.text)
            lines += [f"Evidence, {ev.kind}{where}:", "", fence, ev.text, fence, ""]
        if f.fix:
            fence = _fence(f.fix)
            lines += ["Fix:", "", fence, f.fix, fence, ""]
    if report.errors:
        lines += ["## Checks that could not be completed", ""]
        lines += [f"- {_inline(str(e))}" for e in report.errors]
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""]
        lines += [f"- {_inline(n)}" for n in report.notes]
        lines.append("")
    return "\n".join(lines)
