"""The finding model: severities parse and order, locations print, fingerprints are stable,
reports sort worst first, values are frozen."""

from __future__ import annotations

import dataclasses

import pytest

from relayguard.findings import (
    CATEGORY_MEANINGS,
    Category,
    Confidence,
    Edit,
    ErrorEntry,
    Evidence,
    Finding,
    Location,
    Report,
    Severity,
)


@pytest.mark.parametrize(("text", "sev"), [
    ("high", Severity.HIGH), ("HIGH", Severity.HIGH), (" Critical ", Severity.CRITICAL),
    ("info", Severity.INFO), ("low", Severity.LOW), ("medium", Severity.MEDIUM)])
def test_severity_parse(text: str, sev: Severity) -> None:
    assert Severity.parse(text) is sev


@pytest.mark.parametrize("text", ["", "hgh", "warning", "3", "error"])
def test_severity_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="one of: info, low, medium, high, critical"):
        Severity.parse(text)


def test_orders_and_labels() -> None:
    assert Severity.INFO < Severity.LOW < Severity.MEDIUM < Severity.HIGH < Severity.CRITICAL
    assert Confidence.POSSIBLE < Confidence.LIKELY < Confidence.CONFIRMED
    assert [s.label for s in Severity] == ["info", "low", "medium", "high", "critical"]
    assert [c.label for c in Confidence] == ["possible", "likely", "confirmed"]


def test_every_category_has_a_meaning() -> None:
    assert set(CATEGORY_MEANINGS) == set(Category)
    assert all(m.strip() for m in CATEGORY_MEANINGS.values())
    assert str(Category.SMTP_VIA_PROXY) == "smtp-via-proxy"


@pytest.mark.parametrize(("loc", "text", "as_dict"), [
    (Location(path="/etc/x.conf", line=3), "/etc/x.conf:3", {"path": "/etc/x.conf", "line": 3}),
    (Location(path="/etc/x.conf"), "/etc/x.conf", {"path": "/etc/x.conf"}),
    (Location(host="192.0.2.1", port=25), "192.0.2.1:25", {"host": "192.0.2.1", "port": 25}),
    (Location(host="2001:db8::1", port=3128), "[2001:db8::1]:3128",
     {"host": "2001:db8::1", "port": 3128}),
    (Location(host="example.org"), "example.org", {"host": "example.org"}),
    (Location(), "-", {}),
])
def test_location(loc: Location, text: str, as_dict: dict) -> None:
    assert str(loc) == text
    assert loc.to_dict() == as_dict


def finding(**kw: object) -> Finding:
    base: dict = dict(rule="APACHE-X", category=Category.OPEN_HTTP_PROXY,
                      severity=Severity.HIGH, confidence=Confidence.LIKELY, title="t",
                      location=Location(path="/etc/x.conf", line=3))
    base.update(kw)
    return Finding(**base)


def test_target_only_for_network_findings() -> None:
    assert finding().target is None
    assert finding(location=Location(host="::1", port=1080)).target == "[::1]:1080"


def test_fingerprint_stable_and_distinguishing() -> None:
    fp = finding().fingerprint()
    assert fp == finding().fingerprint()
    assert len(fp) == 32 and int(fp, 16) >= 0
    # Evidence and fix may be reworded without changing the identity.
    assert finding(evidence=(Evidence("config", "x"),), fix="y").fingerprint() == fp
    others = [finding(rule="APACHE-Y"), finding(title="u"), finding(category=Category.HARDENING),
              finding(location=Location(path="/etc/x.conf", line=4)),
              finding(location=Location(path="/etc/y.conf", line=3))]
    assert len({f.fingerprint() for f in others} | {fp}) == 6
    # Non-UTF-8 bytes (surrogateescape) from configs must not crash hashing.
    assert len(finding(title="\udcff").fingerprint()) == 32


def test_to_dict_round_values() -> None:
    f = finding(evidence=(Evidence("config", "ProxyRequests On", Location(path="/a", line=1)),),
                fix="ProxyRequests Off",
                edits=(Edit("/a", 1, ("ProxyRequests On",), ("ProxyRequests Off",)),))
    d = f.to_dict()
    assert d == {
        "rule": "APACHE-X", "category": "open-http-proxy", "categories": ["open-http-proxy"],
        "severity": "high",
        "confidence": "likely", "title": "t", "location": {"path": "/etc/x.conf", "line": 3},
        "target": None,
        "evidence": [{"kind": "config", "text": "ProxyRequests On",
                      "location": {"path": "/a", "line": 1}}],
        "fix": "ProxyRequests Off",
        "edits": [{"path": "/a", "line": 1, "old": ["ProxyRequests On"],
                   "new": ["ProxyRequests Off"]}],
        "fingerprint": f.fingerprint(),
    }


def test_error_entry() -> None:
    assert str(ErrorEntry("/etc/x.conf", "unterminated <Proxy>", 7)) == (
        "/etc/x.conf:7: unterminated <Proxy>")
    assert str(ErrorEntry("127.0.0.1:25", "timed out")) == "127.0.0.1:25: timed out"
    assert ErrorEntry("a", "b").to_dict() == {"source": "a", "message": "b"}
    assert ErrorEntry("a", "b", 2).to_dict() == {"source": "a", "message": "b", "line": 2}


def test_report_sorts_worst_first_then_confidence_place_rule() -> None:
    a = finding(rule="R-A", severity=Severity.MEDIUM)
    b = finding(rule="R-B", severity=Severity.CRITICAL, confidence=Confidence.POSSIBLE)
    c = finding(rule="R-C", severity=Severity.CRITICAL, confidence=Confidence.CONFIRMED)
    d = finding(rule="R-D", severity=Severity.MEDIUM, location=Location(path="/a", line=1))
    e = finding(rule="R-0", severity=Severity.MEDIUM)
    report = Report("audit", (a, b, c, d, e))
    assert [f.rule for f in report.sorted_findings()] == ["R-C", "R-B", "R-D", "R-0", "R-A"]
    assert report.findings == (a, b, c, d, e)  # the report itself is not reordered


def test_values_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding().title = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Location().line = 1  # type: ignore[misc]


def test_categories_list_the_main_one_first_and_each_once() -> None:
    """A chain (proxy → loopback-trusting MTA) is one finding in two categories."""
    chain = finding(category=Category.SMTP_VIA_PROXY,
                    also=(Category.OPEN_SMTP_RELAY, Category.SMTP_VIA_PROXY))
    assert chain.to_dict()["categories"] == ["smtp-via-proxy", "open-smtp-relay"]
    assert finding().to_dict()["categories"] == ["open-http-proxy"]
