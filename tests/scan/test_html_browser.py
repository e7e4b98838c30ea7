"""The scan's HTML report opened in a real headless Chromium (Debian `chromium`): it renders,
the charts and tables are in the DOM, attacker-written evidence stays text, and screenshots at
laptop and phone widths are real pictures of the right size."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from relayguard.findings import Category, Confidence, Evidence, Finding, Location, Report, Severity
from relayguard.scan.correlate import stories
from relayguard.scan.html import render_scan_html
from tests.cli.test_cli import ENV
from tests.scan.conftest import Host, blocklist_args

pytestmark = pytest.mark.server

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--hide-scrollbars"]
LAPTOP, PHONE = (1366, 900), (390, 844)
REFUSING = "not-served.rg-scan.test"  # the local rbldnsd answers REFUSED for it


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (scripts/install-test-deps installs it)")
    with tempfile.TemporaryDirectory(prefix="rg-chromium-") as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args,
                               page.as_uri()], capture_output=True, text=True, timeout=60)


def dom(page: Path) -> str:
    done = chromium(page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(page: Path, size: tuple[int, int], out: Path) -> bytes:
    done = chromium(page, f"--window-size={size[0]},{size[1]}", f"--screenshot={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    return out.read_bytes()


def png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the pixel data) of a PNG, no imaging library."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


@pytest.fixture(scope="module")
def open_page(open_host: Host, dnsbl: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    page = tmp_path_factory.mktemp("html") / "scan.html"
    # plus a list the local nameserver does not serve: it answers REFUSED (an unusable row)
    done = subprocess.run([sys.executable, "-m", "relayguard", "scan", *open_host.cli_args(),
                           *blocklist_args(dnsbl), "--zones", f"{REFUSING}:ip",
                           "--format", "html", "--output", str(page),
                           "--no-history"], capture_output=True, text=True, env=ENV,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    return page


def test_browser_renders_verdict_stories_charts_and_tables(open_page: Path) -> None:
    tree = dom(open_page)
    assert '<section class="verdict v-OPEN" id="verdict"><b>OPEN</b>' in tree
    assert tree.count('<div class="card story">') == 1
    assert '<span class="chip on">blocklist</span>' in tree
    # the incident timeline chart: an SVG with one drawn series per line of the legend
    assert tree.count('class="timeline"') == 1
    assert tree.count('class="series"') == 2  # all requests + the proxy-smtp incident
    assert "proxy-smtp (relayed)" in tree
    # findings grouped by category, in the vocabulary's order
    cats = [c for c in ("open-http-proxy", "open-connect-proxy", "smtp-via-proxy",
                        "proxy-abuse", "blocklisted") if f'id="cat-{c}"' in tree]
    assert cats == ["open-http-proxy", "open-connect-proxy", "smtp-via-proxy", "proxy-abuse",
                    "blocklisted"]
    assert tree.count('<div class="card finding">') == 10
    # the blocklist table with the DNSBL's answer
    assert '<table class="blocklist">' in tree
    assert "<td>11.22.33.44</td><td>listed</td><td>dnsbl.dronebl.org</td>" in tree
    assert "open proxy on port 8080 relaying spam" in tree


def _rows(tree: str) -> dict[str, list[str]]:
    """The blocklist table's rows by list name: each row's cell texts."""
    table = tree.split('<table class="blocklist">', 1)[1].split("</table>", 1)[0]
    out = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]:
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c))
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        out[cells[2]] = cells
    return out


def test_blocklist_rows_say_what_to_do(open_page: Path) -> None:
    tree = dom(open_page)
    header = re.search(r'<table class="blocklist"><tbody><tr>(.*?)</tr>', tree).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == [
        "target", "verdict", "list", "state", "codes", "TXT", "detail", "what to do"]
    rows = _rows(tree)
    listed = rows["dnsbl.dronebl.org"]
    assert listed[3] == "listed" and listed[4] == "DroneBL 9: open HTTP proxy"
    assert "lookup: https://dronebl.org/lookup?ip=11.22.33.44" in listed[7]
    assert "delisting: fix the cause, then request removal" in listed[7]
    refused = rows[REFUSING]
    assert refused[3] == "unusable"
    assert refused[6].startswith("refused: the nameserver")
    assert "answered REFUSED" in refused[6]
    assert refused[7].startswith("a list that refuses (or silently blanks) your resolver")
    assert "--resolver 127.0.0.1" in refused[7]


LAYOUT_PROBE = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" width="{w}" height="{h}" style="border:0;display:block" srcdoc="{page}"></iframe>
<script>
const f = document.getElementById("f");
function measure() {{
  const d = f.contentDocument, w = f.contentWindow;
  document.body.setAttribute("data-layout", JSON.stringify({{
    scroll: d.documentElement.scrollWidth, inner: w.innerWidth,
    wide: [...d.querySelectorAll("main > *")].filter(
      x => x.getBoundingClientRect().right > w.innerWidth + 0.5).map(
      x => x.tagName + "#" + x.id + "." + x.className),
    broken: [...d.querySelectorAll("table.blocklist td:nth-child(-n+4)")].filter(td => {{
      const t = td.firstChild, r = d.createRange(), top = i => {{
        r.setStart(t, i); r.setEnd(t, i + 1); return Math.round(r.getBoundingClientRect().top);
      }};
      // a line break inside the text that is not after a space or a hyphen splits a word
      for (let i = 1; t && i < t.length; i++)
        if (top(i) > top(i - 1) && !" -".includes(t.data[i - 1])) return true;
      return false;
    }}).map(td => td.textContent)}}));
}}
if (f.contentDocument && f.contentDocument.readyState === "complete"
    && f.contentDocument.body && f.contentDocument.body.childElementCount) measure();
else f.addEventListener("load", measure);
</script></body></html>"""


def layout(page: Path, size: tuple[int, int], tmp: Path) -> dict[str, Any]:
    """How the report lays out in a viewport of `size`: the page inside an iframe of exactly
    that width (headless Chromium will not make a window narrower than 500 px), measured by
    a script in the outer page (the report itself has none)."""
    probe = tmp / f"layout-{size[0]}.html"
    probe.write_text(LAYOUT_PROBE.format(w=size[0], h=size[1],
                                         page=html.escape(page.read_text(), quote=True)))
    tree = chromium(probe, f"--window-size={max(size[0], 500) + 40},{size[1] + 40}",
                    "--dump-dom")
    assert tree.returncode == 0, tree.stderr[-2000:]
    found = re.search(r'data-layout="([^"]*)"', tree.stdout)
    assert found, tree.stdout[-2000:]
    return dict(json.loads(html.unescape(found.group(1))))


@pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_no_horizontal_overflow(open_page: Path, tmp_path: Path,
                                size: tuple[int, int]) -> None:
    """Nothing makes the page wider than the screen: wide tables scroll in their own box."""
    got = layout(open_page, size, tmp_path)
    assert got["inner"] == size[0]
    assert got["scroll"] <= got["inner"], got
    assert got["wide"] == [], got


def test_blocklist_table_does_not_split_words(open_page: Path, tmp_path: Path) -> None:
    """On a laptop the short columns (target, verdict, list, state) keep each word whole:
    `zen.s|pamh|aus.or|g` and `inco|nclu|sive` are unreadable."""
    got = layout(open_page, LAPTOP, tmp_path)
    assert got["broken"] == [], got


@pytest.mark.parametrize(("size", "name"), [(LAPTOP, "laptop"), (PHONE, "phone")])
def test_screenshots_are_real_pictures(open_page: Path, tmp_path: Path,
                                       size: tuple[int, int], name: str) -> None:
    data = screenshot(open_page, size, tmp_path / f"{name}.png")
    width, height, distinct = png_facts(data)
    assert (width, height) == size
    assert len(data) > 20_000  # a blank page compresses to a few kB
    assert distinct > 100, distinct  # text, colours and the chart, not one flat colour


def test_attacker_written_evidence_stays_text(tmp_path: Path) -> None:
    evil = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
    finding = Finding(
        "LOGS-PROXY-SMTP", Category.PROXY_ABUSE, Severity.CRITICAL, Confidence.LIKELY,
        f"CONNECT {evil}:25", Location(path="/var/log/apache2/access.log", line=3),
        (Evidence("log", f'1.2.3.4 - - "CONNECT {evil}:25 HTTP/1.1" 200'),), fix=evil)
    told = [s.to_dict() for s in stories([finding])]
    report = Report("scan", (finding,), (), {
        "host": evil, "site": evil, "verdict": "ABUSED", "verdict_meaning": evil,
        "stories": told,
        "incidents": [{"kind": evil, "verdict": "relayed", "first_seen": "2026-01-01T00:00:00Z",
                       "last_seen": "2026-01-01T00:05:00Z", "events": 2,
                       "clients": [[evil, 2]], "destinations": [[evil, 2]],
                       "timeline": {"points": [["2026-01-01T00:00:00Z", 1],
                                               ["2026-01-01T00:05:00Z", 1]]}}],
        "blocklist": {"resolver": evil, "catalogue_date": "x", "targets": {
            evil: {"verdict": "listed", "lists": {evil: {"state": "listed", "txt": [evil]}}}}},
    }, (evil,))
    page = tmp_path / "evil.html"
    page.write_text(render_scan_html(report))
    tree = dom(page)
    assert "<script" not in tree.split("</style>", 1)[1]
    assert "<img" not in tree
    assert "<title>relayguard scan: &lt;script&gt;" in tree
    assert tree.count('class="series"') == 1
