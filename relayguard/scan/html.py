"""The scan's HTML sections: verdict, stories (fix first), incident charts, findings by
category, blocklist table. One self-contained page: inline CSS and SVG, no script, no link
to anything outside; every value from outside (evidence is attacker-written) is escaped.

These sections extend the shared HTML reporter (`relayguard.report.html`), whose page
structure, escaping and timeline chart they reuse.
"""

from __future__ import annotations

from typing import Any

from relayguard import __version__
from relayguard.findings import CATEGORY_MEANINGS, Category, Report
from relayguard.report.html import escape as e
from relayguard.scan.correlate import SOURCE_WORDS

CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;
background:#f4f5f7;overflow-wrap:anywhere}
main{max-width:1100px;margin:0 auto;padding:1.2em}
h1{font-size:1.45em;margin:.2em 0;word-break:break-word} h2{font-size:1.15em;margin:1.6em 0 .5em}
.verdict{border-radius:10px;padding:1em 1.2em;color:#fff;margin:.8em 0}
.verdict b{font-size:1.6em;letter-spacing:.04em;display:block}
.v-OPEN{background:#b00020}.v-ABUSED{background:#c2410c}.v-LISTED{background:#a16207}
.v-AT-RISK{background:#1d4ed8}.v-INCOMPLETE{background:#4b5563}.v-CLEAN{background:#15803d}
.card{background:#fff;border:1px solid #d8dbe0;border-radius:8px;padding:.8em 1em;margin:.7em 0}
.story h3{margin:.2em 0 .5em;font-size:1.05em}
.fixfirst{border-left:4px solid #15803d;background:#f0fdf4;padding:.4em .7em;margin:.5em 0}
.followed{border-left:4px solid #b45309;background:#fffbeb;padding:.3em .7em;margin:.4em 0}
.sev{font-weight:700;padding:.05em .45em;border-radius:4px;color:#fff;font-size:.85em}
.critical{background:#7f1d1d}.high{background:#dc2626}.medium{background:#d97706}
.low{background:#2563eb}.info{background:#6b7280}
.chip{display:inline-block;border:1px solid #94a3b8;border-radius:99px;padding:0 .6em;
margin:.1em .2em .1em 0;font-size:.85em;background:#f8fafc}
.chip.on{background:#1e293b;color:#fff;border-color:#1e293b}
.meta{color:#555;font-size:.9em;word-break:break-word}
pre{white-space:pre-wrap;word-break:break-all;background:#f6f8fa;border:1px solid #e5e7eb;
padding:.5em;margin:.3em 0;font-size:12.5px;max-height:24em;overflow:auto}
.scroll{overflow-x:auto} table{border-collapse:collapse;width:100%;background:#fff}
td.todo{white-space:pre-line}
.scroll table{min-width:640px}
td,th{border:1px solid #d8dbe0;padding:.3em .6em;text-align:left;vertical-align:top;
font-size:.9em;overflow-wrap:break-word}
th{background:#eef0f3}
.chart svg{width:100%;height:auto;background:#fff;border:1px solid #d8dbe0;border-radius:6px}
details summary{cursor:pointer;color:#334155}
@media (max-width:600px){main{padding:.6em}body{font-size:14px}.verdict b{font-size:1.3em}}
"""
_COLORS = ["#dc2626", "#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#525252"]


def svg_timeline(series: list[tuple[str, list[list[Any]]]], label: str,
                 width: int = 1000, height: int = 220) -> str:
    """Counts over time as an inline SVG that scales with the page (viewBox), one polyline
    per series of [iso time, count] points."""
    from datetime import datetime

    def epoch(s: str) -> float:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    pts = []
    for name, points in series:
        try:
            parsed = [(epoch(str(t)), float(n)) for t, n in points]
        except (ValueError, TypeError):
            continue
        if parsed:
            pts.append((name, parsed))
    if not pts:
        return "<p class=meta>no timed events</p>"
    t0 = min(p[0] for _, ps in pts for p in ps)
    t1 = max(p[0] for _, ps in pts for p in ps)
    ymax = max(p[1] for _, ps in pts for p in ps) or 1
    if t1 - t0 < 60.0:  # one burst: centre it in a two-minute window
        t0, t1 = t0 - 60.0, t1 + 60.0
    span = t1 - t0
    left, bottom, top = 48, 28, 10
    w, h = width - left - 12, height - bottom - top

    def x(t: float) -> float:
        return left + (t - t0) / span * w

    def y(n: float) -> float:
        return top + h - n / ymax * h

    from relayguard.logs.counting import iso

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'role="img" class="timeline" aria-label="{e(label)}"><title>{e(label)}</title>',
           f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#999"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#999"/>',
           f'<text x="4" y="{top + 10}" font-size="12">{e(f"{ymax:g}")}</text>',
           f'<text x="4" y="{top + h}" font-size="12">0</text>',
           f'<text x="{left}" y="{height - 8}" font-size="12">{e(iso(t0))}</text>',
           f'<text x="{left + w}" y="{height - 8}" font-size="12" text-anchor="end">'
           f"{e(iso(t1))}</text>"]
    for i, (name, ps) in enumerate(pts):
        color = _COLORS[i % len(_COLORS)]
        if len(ps) == 1:
            t, n = ps[0]
            out.append(f'<g class="series"><line x1="{x(t):.1f}" y1="{top + h}" '
                       f'x2="{x(t):.1f}" y2="{y(n):.1f}" stroke="{color}" stroke-width="6" '
                       f'opacity=".6"/><circle cx="{x(t):.1f}" cy="{y(n):.1f}" r="4" '
                       f'fill="{color}"/></g>')
        else:
            coords = " ".join(f"{x(t):.1f},{y(n):.1f}" for t, n in ps)
            out.append(f'<polyline class="series" fill="none" stroke="{color}" '
                       f'stroke-width="2" points="{coords}"/>')
        out.append(f'<text x="{left + 8}" y="{top + 14 + 15 * i}" font-size="12" '
                   f'fill="{color}">{e(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def verdict_section(stats: dict[str, Any], report: Report) -> str:
    word = str(stats.get("verdict", "?"))
    cls = word if word in ("OPEN", "ABUSED", "LISTED", "AT-RISK", "INCOMPLETE", "CLEAN") \
        else "INCOMPLETE"
    return (f'<section class="verdict v-{cls}" id="verdict"><b>{e(word)}</b>'
            f"{e(stats.get('verdict_meaning', ''))}<div>{len(report.findings)} finding(s) · "
            f"{len(report.errors)} check(s) that could not run · {_probed(stats)}"
            "</div></section>")


def _probed(stats: dict[str, Any]) -> str:
    """Where the probes came from, or that none were sent."""
    if "probe" in (stats.get("skipped") or []):
        return "not probed (--no-probe)"
    return f"probes from {e(stats.get('probe_source') or 'the default route')}"


def stories_section(stats: dict[str, Any]) -> str:
    stories = stats.get("stories") or []
    if not stories:
        return "<h2>What to do</h2><p>Nothing to fix.</p>"
    out = ['<h2 id="stories">What to do, most urgent first</h2>']
    for i, s in enumerate(stories, 1):
        chips = "".join(f'<span class="chip{" on" if k in s["evidence"] else ""}">'
                        f"{e(word)}</span>" for k, word in SOURCE_WORDS.items())
        out.append(f'<div class="card story"><h3>{i}. <span class="sev {e(s["severity"])}">'
                   f'{e(str(s["severity"]).upper())}</span> {e(s["headline"])}</h3>')
        if s.get("fix"):
            out.append(f'<div class="fixfirst"><b>Fix first</b><pre>{e(s["fix"])}</pre></div>')
        out.append(f"<div>Evidence agreeing ({e(s['confidence'])}): {chips}</div>")
        out += [f'<div class="followed"><b>What followed</b> {e(line)}</div>'
                for line in s.get("followed") or []]
        out.append(f"<div class=meta>{len(s['findings'])} finding(s): "
                   f"{e(', '.join(s['rules']))}</div></div>")
    return "".join(out)


def timeline_section(stats: dict[str, Any]) -> str:
    incidents = stats.get("incidents")
    if not incidents:
        return ""
    out = ['<h2 id="timeline">Incident timeline</h2><div class="chart">']
    series: list[tuple[str, list[list[Any]]]] = []
    timeline = stats.get("requests_timeline") or {}
    if timeline.get("points"):
        series.append(("all requests", timeline["points"]))
    for inc in incidents[:6]:
        series.append((f"{inc['kind']} ({inc['verdict']})", inc["timeline"]["points"]))
    out.append(svg_timeline(series, "events per minute, all incidents"))
    out.append("</div><div class=scroll><table><tr><th>kind</th><th>verdict</th>"
               "<th>first seen</th><th>last seen</th><th>events</th><th>top clients</th>"
               "<th>top destinations</th></tr>")
    for inc in incidents:
        clients = ", ".join(f"{c} ({n})" for c, n in inc.get("clients", [])[:5])
        dests = ", ".join(f"{c} ({n})" for c, n in inc.get("destinations", [])[:5])
        out.append(f"<tr><td>{e(inc['kind'])}</td><td>{e(inc['verdict'])}</td>"
                   f"<td>{e(inc['first_seen'])}</td><td>{e(inc['last_seen'])}</td>"
                   f"<td>{e(inc['events'])}</td><td>{e(clients)}</td><td>{e(dests)}</td></tr>")
    out.append("</table></div>")
    return "".join(out)


def findings_section(report: Report) -> str:
    out = ['<h2 id="findings">Findings by category</h2>']
    if not report.findings:
        return out[0] + "<p>No findings.</p>"
    by_cat: dict[Category, list[Any]] = {}
    for f in report.sorted_findings():
        by_cat.setdefault(f.category, []).append(f)
    for cat in Category:
        items = by_cat.get(cat)
        if not items:
            continue
        out.append(f'<h3 class="category" id="cat-{e(cat.value)}">{e(cat.value)} '
                   f"({len(items)})</h3><p class=meta>{e(CATEGORY_MEANINGS[cat])}</p>")
        for f in items:
            out.append(f'<div class="card finding"><span class="sev {e(f.severity.label)}">'
                       f"{e(f.severity.label.upper())}</span> <b>{e(f.title)}</b>"
                       f"<div class=meta>{e(f.rule)} · confidence {e(f.confidence.label)} · "
                       f"{e(f.location)}</div>")
            if f.fix:
                out.append(f'<div class="fixfirst"><b>Fix</b><pre>{e(f.fix)}</pre></div>')
            if f.evidence:
                out.append(f"<details><summary>evidence ({len(f.evidence)})</summary>")
                for ev in f.evidence:
                    where = f" ({e(ev.location)})" if ev.location else ""
                    out.append(f"<div class=meta>{e(ev.kind)}{where}</div><pre>{e(ev.text)}</pre>")
                out.append("</details>")
            out.append("</div>")
    return "".join(out)


# What to do about a (target, list) row when the check gave no remedy of its own.
_NEXT_STEP = {
    "listed": "fix the cause first (the story above), then request removal",
    "unusable": "this list's answers are not counted; the detail says why (a dead list: drop "
    "it from --zones; a resolver problem: use --resolver with a resolver that answers you)",
    "unknown": "no answer to count: check again later or through another --resolver",
    "refused": "run a local recursive resolver and pass --resolver 127.0.0.1, or use the "
    "list's keyed service",
}


def _next_step(res: dict[str, Any]) -> str:
    parts = [str(res["remedy"])] if res.get("remedy") else []
    if res.get("lookup"):
        parts.append(f"lookup: {res['lookup']}")
    if res.get("delist"):
        parts.append(f"delisting: {res['delist']}")
    if not parts and res.get("state") in _NEXT_STEP:
        parts.append(_NEXT_STEP[str(res["state"])])
    return "\n".join(parts)


def blocklist_section(stats: dict[str, Any]) -> str:
    """Every (target, list) answer: what it said, why, and what to do about it."""
    bl = stats.get("blocklist")
    if not bl or not bl.get("targets"):
        return ""
    out = ['<h2 id="blocklists">Blocklists</h2>',
           f"<p class=meta>resolver {e(bl.get('resolver'))} · catalogue "
           f"{e(bl.get('catalogue_date'))}</p><div class=scroll><table class=blocklist>"
           "<tr><th>target</th><th>verdict</th><th>list</th><th>state</th><th>codes</th>"
           "<th>TXT</th><th>detail</th><th>what to do</th></tr>"]
    for target, info in bl["targets"].items():
        lists = info.get("lists") or {"-": {"state": info.get("skipped", "")}}
        for zone, res in lists.items():
            codes = "; ".join(str(c.get("meaning", c.get("value", "")))
                              for c in res.get("codes", []))
            out.append(f"<tr><td>{e(target)}</td><td>{e(info.get('verdict'))}</td>"
                       f"<td>{e(zone)}</td><td>{e(res.get('state'))}</td><td>{e(codes)}</td>"
                       f"<td>{e('; '.join(res.get('txt', [])))}</td>"
                       f"<td class=detail>{e(res.get('detail', ''))}</td>"
                       f"<td class=todo>{e(_next_step(res))}</td></tr>")
    out.append("</table></div>")
    return "".join(out)


def tail_section(report: Report) -> str:
    out = []
    if report.errors:
        out.append('<h2 id="errors">Checks that could not run (the result is incomplete, not '
                   "clean)</h2><ul>")
        out += [f"<li>{e(err)}</li>" for err in report.errors]
        out.append("</ul>")
    if report.notes:
        out.append('<h2 id="notes">Notes</h2><ul class=meta>')
        out += [f"<li>{e(n)}</li>" for n in report.notes]
        out.append("</ul>")
    return "".join(out)


def render_scan_html(report: Report) -> str:
    """One site's scan as a self-contained page."""
    stats = report.stats if isinstance(report.stats, dict) else {}
    host = stats.get("host", "?")
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>relayguard scan: {e(host)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>relayguard scan: {e(host)}</h1>",
        f"<p class=meta>relayguard {e(__version__)} · site {e(stats.get('site', '?'))}</p>",
        verdict_section(stats, report), stories_section(stats), timeline_section(stats),
        findings_section(report), blocklist_section(stats), tail_section(report),
        "</main></body></html>\n",
    ])


def render_fleet_html(summary: Report, reports: list[Report]) -> str:
    """The fleet: a verdict table linking to each site's section, then every site."""
    stats = summary.stats
    rows = "".join(
        f'<tr><td><a href="#site-{i}">{e(r["site"])}</a></td><td>{e(r["host"])}</td>'
        f'<td><span class="chip on v-{e(r["verdict"])}">{e(r["verdict"])}</span></td>'
        f'<td>{e(r["findings"])}</td><td>{e(r["errors"])}</td><td>{e(r["headline"])}</td></tr>'
        for i, r in enumerate(stats.get("fleet") or []))
    parts = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>relayguard fleet scan</title><style>{CSS}</style></head><body><main>",
             f"<h1>relayguard fleet scan: {len(reports)} site(s)</h1>",
             f'<section class="verdict v-{e(stats.get("verdict"))}"><b>'
             f'{e(stats.get("verdict"))}</b>worst verdict of the fleet</section>',
             '<div class=scroll><table class="fleet"><tr><th>site</th><th>host</th>'
             f"<th>verdict</th><th>findings</th><th>errors</th><th>story</th></tr>{rows}"
             "</table></div>"]
    for i, report in enumerate(reports):
        st = report.stats if isinstance(report.stats, dict) else {}
        parts += [f'<h2 id="site-{i}" class="site">{e(st.get("site"))} ({e(st.get("host"))})'
                  "</h2>", verdict_section(st, report), stories_section(st),
                  timeline_section(st), findings_section(report), blocklist_section(st),
                  tail_section(report)]
    parts.append("</main></body></html>\n")
    return "".join(parts)
