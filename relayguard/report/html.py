"""A self-contained HTML report: findings, and for `logs` the per-minute timeline as inline SVG.

Everything that came from outside (log lines, titles built from them, host names) is escaped
with `html.escape`; log lines are written by attackers. No scripts, no external resources.
"""

from __future__ import annotations

import html
from typing import Any

from relayguard import __version__
from relayguard.findings import Report
from relayguard.report import printable

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
.f{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;margin:.8em 0}
.sev{font-weight:bold;padding:0 .4em;border-radius:3px;color:#fff}
.critical{background:#900}.high{background:#d33}.medium{background:#c80}.low{background:#369}
.info{background:#888} pre{white-space:pre-wrap;word-break:break-all;background:#f6f6f6;
padding:.4em;margin:.3em 0;font-size:12px} table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}
svg{background:#fafafa;border:1px solid #ddd} .meta{color:#666}
"""
_COLORS = ["#d33", "#36c", "#393", "#c80", "#939", "#099", "#666"]


def escape(value: Any) -> str:
    """Escape for HTML text and attributes, control characters and bidi overrides made
    visible first (`printable`): evidence must not reorder or hide what a person reads."""
    return html.escape(printable(value), quote=True)


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _svg_timelines(series: list[tuple[str, int, list[list[Any]]]], width: int = 1000,
                   window: tuple[float, float] | None = None) -> str:
    """One small bar chart per series (own y scale), all on one shared time axis, so an
    incident of 16 requests/min stays visible next to 200 requests/min of ordinary traffic."""
    from relayguard.logs.counting import iso

    lo, hi = window if window else (float("-inf"), float("inf"))
    pts = [(name, bucket, [(t, n) for t, n in ((_epoch(t), n) for t, n in points)
                           if lo <= t <= hi])
           for name, bucket, points in series]
    pts = [p for p in pts if p[2]]
    if not pts:
        return "<p class=meta>no timed events</p>"
    t0 = min(p[0] for _, _, ps in pts for p in ps)
    t1 = max(p[0] + b for _, b, ps in pts for p in ps)
    span = max(t1 - t0, 60.0)
    left, h, gap = 60, 60, 26
    w = width - left - 10
    height = len(pts) * (h + gap) + 24
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="events per time bucket">']
    for i, (name, bucket, ps) in enumerate(pts):
        top = 18 + i * (h + gap)
        ymax = max(n for _, n in ps) or 1
        color = _COLORS[i % len(_COLORS)]
        bar = max(1.0, bucket / span * w)
        out.append(f'<text x="{left}" y="{top - 4}" font-size="12" fill="{color}">{escape(name)} '
                   f'(max {escape(ymax)} per {escape(bucket // 60)} min)</text>')
        out.append(f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" '
                   'stroke="#bbb"/>')
        for t, n in ps:
            x = left + (t - t0) / span * w
            bh = max(1.0, n / ymax * h)
            out.append(f'<rect x="{x:.1f}" y="{top + h - bh:.1f}" width="{bar:.1f}" '
                       f'height="{bh:.1f}" fill="{color}"><title>{escape(iso(t))}: {escape(n)}'
                       f'</title></rect>')
    out.append(f'<text x="{left}" y="{height - 4}" font-size="11">{escape(iso(t0))}</text>')
    out.append(f'<text x="{left + w - 130}" y="{height - 4}" font-size="11">{escape(iso(t1))}'
               '</text>')
    out.append("</svg>")
    return "".join(out)


def _incident_window(incidents: list[dict[str, Any]],
                     timeline: dict[str, Any] | None) -> tuple[float, float] | None:
    """The incidents' span with a margin, when it is a small part of the whole log."""
    spans = [(_epoch(i["first_seen"]), _epoch(i["last_seen"])) for i in incidents
             if i.get("first_seen") and i.get("last_seen")]
    if not spans or not timeline or not timeline.get("points"):
        return None
    a, b = min(s for s, _ in spans), max(e for _, e in spans)
    t0, t1 = _epoch(timeline["points"][0][0]), _epoch(timeline["points"][-1][0])
    if (b - a) > 0.5 * (t1 - t0):
        return None
    pad = max(600.0, (b - a) * 0.25)
    return a - pad, b + pad


def render_html(report: Report) -> str:
    """The whole report as one HTML document with no external references."""
    parts = ["<!DOCTYPE html><html><head><meta charset=utf-8>",
             f"<title>relayguard {escape(report.command)}</title><style>{_CSS}</style>"
             "</head><body>",
             f"<h1>relayguard {escape(report.command)}</h1>",
             f"<p class=meta>relayguard {escape(__version__)} · {len(report.findings)} finding(s)"
             f" · {len(report.errors)} error(s)</p>"]
    stats = report.stats
    incidents = stats.get("incidents") if isinstance(stats, dict) else None
    timeline = stats.get("requests_timeline") if isinstance(stats, dict) else None
    if incidents is not None:
        series: list[tuple[str, int, list[list[Any]]]] = []
        if timeline and timeline.get("points"):
            series.append(("all requests", timeline["bucket_seconds"], timeline["points"]))
        for inc in incidents[:8]:
            series.append((f"{inc['kind']} ({inc['verdict']}, {inc['events']} events)",
                           inc["timeline"]["bucket_seconds"], inc["timeline"]["points"]))
        parts.append("<h2>Timeline</h2>")
        parts.append(_svg_timelines(series))
        window = _incident_window(incidents, timeline)
        if window is not None:
            parts.append("<h2>Around the incidents</h2>")
            parts.append(_svg_timelines(series, window=window))
        parts.append("<h2>Incidents</h2>")
        if not incidents:
            parts.append("<p>No incident.</p>")
        else:
            parts.append("<table><tr><th>kind</th><th>verdict</th><th>first seen</th>"
                         "<th>last seen</th><th>events</th><th>outcomes</th>"
                         "<th>top clients</th><th>top destinations</th></tr>")
            for inc in incidents:
                clients = ", ".join(f"{c} ({n})" for c, n in inc["clients"][:5])
                dests = ", ".join(f"{c} ({n})" for c, n in inc["destinations"][:5])
                parts.append(
                    f"<tr><td>{escape(inc['kind'])}</td><td>{escape(inc['verdict'])}</td>"
                    f"<td>{escape(inc['first_seen'])}</td><td>{escape(inc['last_seen'])}</td>"
                    f"<td>{escape(inc['events'])}</td><td>{escape(inc['outcomes'])}</td>"
                    f"<td>{escape(clients)}</td><td>{escape(dests)}</td></tr>")
            parts.append("</table>")
    parts.append("<h2>Findings</h2>")
    if not report.findings:
        parts.append("<p>No findings.</p>")
    for f in report.sorted_findings():
        parts.append(f'<div class=f><span class="sev {escape(f.severity.label)}">'
                     f"{escape(f.severity.label.upper())}</span> <b>{escape(f.title)}</b>"
                     f"<div class=meta>{escape(f.rule)} · {escape(f.category.value)} · confidence "
                     f"{escape(f.confidence.label)} · {escape(f.location)}</div>")
        for ev in f.evidence:
            where = f" ({escape(ev.location)})" if ev.location else ""
            parts.append(f"<div class=meta>{escape(ev.kind)}{where}</div>"
                         f"<pre>{escape(ev.text)}</pre>")
        if f.fix:
            parts.append(f"<div><b>fix:</b><pre>{escape(f.fix)}</pre></div>")
        parts.append("</div>")
    if report.errors:
        parts.append("<h2>Errors (the result is incomplete, not clean)</h2><ul>")
        parts.extend(f"<li>{escape(e)}</li>" for e in report.errors)
        parts.append("</ul>")
    if isinstance(stats, dict):
        scalars = {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}
        if "by_format" in stats:
            scalars["by_format"] = stats["by_format"]
        if scalars:
            parts.append("<h2>Statistics</h2><table>")
            parts.extend(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>"
                         for k, v in scalars.items())
            parts.append("</table>")
    for note in report.notes:
        parts.append(f"<p class=meta>note: {escape(note)}</p>")
    parts.append("</body></html>\n")
    return "".join(parts)
