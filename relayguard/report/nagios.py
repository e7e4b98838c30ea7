"""Nagios/Icinga plugin output: one status line with perfdata, and the plugin exit code.

Per the Monitoring Plugins guidelines: `SERVICE STATUS: text | 'label'=value;warn;crit;min;max`
on the first line, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. A relay path a stranger can
use (high/critical) is CRITICAL, lesser findings are WARNING; when checks could not run and
nothing bad was found the state is UNKNOWN — never OK, since the result is incomplete.
"""

from __future__ import annotations

from enum import IntEnum

from relayguard.findings import Report, Severity
from relayguard.report import printable


class NagiosState(IntEnum):
    """Plugin exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def nagios_state(reports: list[Report], critical: Severity = Severity.HIGH,
                 warning: Severity = Severity.MEDIUM) -> NagiosState:
    """CRITICAL on a finding at or above `critical`, WARNING at or above `warning`,
    else UNKNOWN if any check could not run, else OK."""
    findings = [f for r in reports for f in r.findings]
    if any(f.severity >= critical for f in findings):
        return NagiosState.CRITICAL
    if any(f.severity >= warning for f in findings):
        return NagiosState.WARNING
    if any(r.errors for r in reports):
        return NagiosState.UNKNOWN
    return NagiosState.OK


def _label(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in text)


def render_nagios(reports: list[Report], critical: Severity = Severity.HIGH,
                  warning: Severity = Severity.MEDIUM) -> tuple[str, NagiosState]:
    """The status line (one line, newline-terminated) and the exit state."""
    state = nagios_state(reports, critical, warning)
    findings = [f for r in reports for f in r.findings]
    errors = sum(len(r.errors) for r in reports)
    if len(reports) == 1:
        stats = reports[0].stats if isinstance(reports[0].stats, dict) else {}
        subject = str(stats.get("host") or "host")
        stories = stats.get("stories") or []
        if stories and state in (NagiosState.CRITICAL, NagiosState.WARNING):
            text = f"{subject} {stats.get('verdict', '')}: {stories[0].get('headline', '')}"
        elif state is NagiosState.UNKNOWN:
            first = reports[0].errors[0]
            text = f"{subject}: {errors} check(s) could not run ({first})"
        else:
            not_run = stats.get("not_run") or []
            text = f"{subject}: no relay path for strangers" + (
                f" (not run: {', '.join(map(str, not_run))})" if not_run else "")
    else:
        bad = [str(r.stats.get("site")) for r in reports
               if any(f.severity >= warning for f in r.findings)]
        text = (f"{len(bad)} of {len(reports)} sites with findings"
                + (f" ({', '.join(bad[:5])}{', …' if len(bad) > 5 else ''})" if bad else ""))
        if errors:
            text += f"; {errors} check(s) could not run"
    text = printable(text).replace("|", "/").replace("\n", " ")
    perf = [f"findings={len(findings)};;;0"]
    for sev in (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW):
        n = sum(1 for f in findings if f.severity == sev)
        warn = "1" if sev == warning else ""
        crit = "1" if sev == critical else ""
        perf.append(f"{sev.label}={n};{warn};{crit};0")
    perf.append(f"errors={errors};;;0")
    if len(reports) > 1:
        perf.append(f"sites={len(reports)};;;0")
    for r in reports if len(reports) == 1 else []:
        for key, value in (r.stats.get("timings_s") or {}).items():
            perf.append(f"{_label(key)}_time={value}s;;;0")
    return f"RELAYGUARD {state.name} - {text} | {' '.join(perf)}\n", state
