"""The terminal report: the worst first, each finding with its evidence and its fix, via rich."""

from __future__ import annotations

import io

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from relayguard.findings import Finding, Report, Severity
from relayguard.report import printable as _clean

_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}


def _finding_panel(n: int, f: Finding) -> Panel:
    head = Text.assemble(
        (f" {f.severity.label.upper()} ", _STYLE[f.severity]),
        " ",
        (_clean(f.title), "bold"),
    )
    meta = Text(
        _clean(f"{f.rule} · {' + '.join(f.categories)} · confidence {f.confidence.label} · "
               f"{f.location}"),
        style="dim",
    )
    body: list[Text] = [head, meta]
    for ev in f.evidence:
        where = f" ({ev.location})" if ev.location else ""
        body.append(Text(_clean(f"\n{ev.kind}{where}:"), style="bold"))
        body.append(Text(_clean(ev.text)))
    if f.fix:
        body.append(Text("\nfix:", style="bold green"))
        body.append(Text(_clean(f.fix), style="green"))
    return Panel(Group(*body), title=f"#{n}", title_align="left", expand=True)


def render_text(report: Report, *, color: bool = False, width: int = 100) -> str:
    """Render for a person; `color` adds ANSI styles (only when writing to a terminal)."""
    buf = io.StringIO()
    # no_color=None when colour is wanted lets rich honour the NO_COLOR convention (styles
    # such as bold stay, colours go); without colour no escape sequence is written at all.
    console = Console(file=buf, force_terminal=color, no_color=None if color else True,
                      width=width, highlight=False, soft_wrap=False)
    findings = report.sorted_findings()
    if findings:
        counts = {s: sum(1 for f in findings if f.severity is s) for s in Severity}
        summary = ", ".join(f"{c} {s.label}" for s, c in sorted(counts.items(), reverse=True) if c)
        console.print(Text(_clean(f"relayguard {report.command}: {len(findings)} finding(s): "
                                  f"{summary}"), style="bold"))
    else:
        console.print(Text(_clean(f"relayguard {report.command}: no findings"),
                           style="bold green"))
    for n, f in enumerate(findings, 1):
        console.print(_finding_panel(n, f))
    if report.errors:
        console.print(Text(f"{len(report.errors)} check(s) could not be completed "
                           "(the result is incomplete, not clean):", style="bold red"))
        for e in report.errors:
            console.print(Text(_clean(f"  error: {e}")), soft_wrap=True)
    for note in report.notes:
        console.print(Text(_clean(f"note: {note}"), style="dim"), soft_wrap=True)
    for key, value in report.stats.items():
        if isinstance(value, (int, float, str)):
            console.print(Text(_clean(f"{key}: {value}"), style="dim"))
    return buf.getvalue()


__all__ = ["escape", "render_text"]
