"""The JSON output contract (DESIGN.md): keys, every finding field, the category vocabulary."""

from __future__ import annotations

import json

from relayguard import __version__
from relayguard.findings import (
    Category,
    Confidence,
    Evidence,
    Finding,
    Location,
    Report,
    Severity,
)
from relayguard.report import OutputFormat, render
from tests.report.conftest import HOSTILE, make_report

# The vocabulary users script against (DESIGN.md "Categories"), spelled out so that renaming or
# dropping a category fails here; adding one means adding it here too, on purpose.
CATEGORIES = {
    "open-http-proxy", "open-connect-proxy", "smtp-via-proxy", "open-socks-proxy",
    "open-smtp-relay", "proxy-abuse", "relay-abuse", "blocklisted", "hardening", "volume-anomaly",
}
FINDING_KEYS = {"rule", "category", "categories", "severity", "confidence", "title", "location",
                "target", "evidence", "fix", "edits", "fingerprint"}


def doc(report: Report) -> dict:
    return json.loads(render(report, OutputFormat.JSON))


def test_top_level_keys_and_identity() -> None:
    d = doc(make_report())
    assert set(d) == {"tool", "version", "command", "findings", "errors", "stats", "notes"}
    assert d["tool"] == "relayguard"
    assert d["version"] == __version__
    assert d["command"] == "audit"


def test_every_finding_serialises_every_field() -> None:
    d = doc(make_report())
    assert len(d["findings"]) == 4
    for f in d["findings"]:
        assert set(f) == FINDING_KEYS
        assert f["category"] in CATEGORIES
        assert f["categories"][0] == f["category"] and set(f["categories"]) <= CATEGORIES
        assert f["severity"] in {"critical", "high", "medium", "low", "info"}
        assert f["confidence"] in {"confirmed", "likely", "possible"}
        assert len(f["fingerprint"]) == 32


def test_findings_worst_first_with_exact_values() -> None:
    d = doc(make_report())
    assert [f["rule"] for f in d["findings"]] == [
        "PROBE-CONNECT-SMTP", "APACHE-FORWARD-PROXY-OPEN", "LOGS-PROXY-ABUSE",
        "APACHE-PROXY-UNUSED"]
    smtp, proxy, logged, _ = d["findings"]
    assert smtp["category"] == "smtp-via-proxy"
    assert smtp["severity"] == "critical"
    assert smtp["confidence"] == "confirmed"
    assert smtp["location"] == {"host": "::1", "port": 3128}
    assert smtp["target"] == "[::1]:3128"
    assert smtp["fix"] is None
    assert proxy["location"] == {"path": "/etc/apache2/mods-enabled/proxy.conf", "line": 12}
    assert proxy["target"] is None
    assert proxy["evidence"] == [{"kind": "config", "text": "ProxyRequests On", "location": {
        "path": "/etc/apache2/mods-enabled/proxy.conf", "line": 12}}]
    assert proxy["fix"] == "ProxyRequests Off"
    assert proxy["edits"] == [{"path": "/etc/apache2/mods-enabled/proxy.conf", "line": 12,
                               "old": ["ProxyRequests On"], "new": ["ProxyRequests Off"]}]
    assert logged["evidence"][0]["text"] == HOSTILE


def test_errors_stats_notes() -> None:
    d = doc(make_report())
    assert d["errors"] == [{"source": "/etc/apache2/conf-enabled/broken.conf",
                            "message": "unterminated <Proxy>", "line": 4}]
    # A value JSON cannot hold (a Path) is written as text rather than crashing the report.
    assert d["stats"] == {"configs": 1, "files_read": 3, "servers": ["apache"], "root": "/"}
    assert d["notes"] == ["apache: auditing /etc/apache2/apache2.conf"]


def test_category_vocabulary_is_exactly_the_documented_one() -> None:
    assert {c.value for c in Category} == CATEGORIES


def test_empty_report() -> None:
    d = doc(Report(command="probe"))
    assert d["command"] == "probe"
    assert (d["findings"], d["errors"], d["stats"], d["notes"]) == ([], [], {}, [])


def test_non_utf8_bytes_survive_as_escapes() -> None:
    # Configs and logs are read with surrogateescape; the JSON must stay ASCII and parseable.
    text = b"GET /\xff\xfe HTTP/1.0".decode("utf-8", "surrogateescape")
    f = Finding("LOGS-X", Category.PROXY_ABUSE, Severity.LOW, Confidence.LIKELY, "t",
                Location(path="/x"), (Evidence("log", text),))
    out = render(Report("logs", (f,)), OutputFormat.JSON)
    assert out.isascii()
    assert json.loads(out)["findings"][0]["evidence"][0]["text"] == text
