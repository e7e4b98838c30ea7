"""SARIF 2.1.0: validated against the official OASIS schema vendored in tests/data/, plus the
parts the schema cannot check (levels, rule index, URIs, fingerprints)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator

from relayguard import __version__
from relayguard.catalogue import Rule
from relayguard.findings import (
    Category,
    Confidence,
    ErrorEntry,
    Finding,
    Location,
    Report,
    Severity,
)
from relayguard.report import OutputFormat, render
from relayguard.report.sarif import sarif_level
from tests.report.conftest import make_report

SCHEMA = json.loads((Path(__file__).parent.parent / "data" / "sarif-schema-2.1.0.json")
                    .read_text(encoding="utf-8"))
VALIDATOR = Draft4Validator(SCHEMA)
# RFC 3986 URI-reference characters, with every `%` starting a valid escape.
URI_REF = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")

RULE = Rule(
    id="APACHE-FORWARD-PROXY-OPEN", server="apache", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.HIGH, title="Forward proxy open", description="ProxyRequests On, no ACL.",
    why="Spammers relay through it.", fix="ProxyRequests Off",
    reference="https://httpd.apache.org/docs/2.4/mod/mod_proxy.html#proxyrequests",
)


@pytest.fixture(autouse=True)
def catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A known catalogue, so descriptors are tested whatever rules exist today."""
    monkeypatch.setattr("relayguard.report.sarif.all_rules", lambda: (RULE,))


def sarif(report: Report) -> dict:
    doc = json.loads(render(report, OutputFormat.SARIF))
    errors = sorted(VALIDATOR.iter_errors(doc), key=str)
    assert not errors, "\n".join(e.message for e in errors[:5])
    return doc


def test_sample_report_is_valid_sarif() -> None:
    doc = sarif(make_report())
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("relayguard", __version__)
    # Only catalogued rules that fired get a descriptor; ruleIndex points at it.
    assert [r["id"] for r in driver["rules"]] == ["APACHE-FORWARD-PROXY-OPEN"]
    desc = driver["rules"][0]
    assert desc["helpUri"] == RULE.reference
    assert desc["defaultConfiguration"] == {"level": "error"}
    assert desc["properties"]["category"] == "open-http-proxy"
    results = run["results"]
    assert [r["ruleId"] for r in results] == [
        "PROBE-CONNECT-SMTP", "APACHE-FORWARD-PROXY-OPEN", "LOGS-PROXY-ABUSE",
        "APACHE-PROXY-UNUSED"]
    assert [r["level"] for r in results] == ["error", "error", "warning", "note"]
    assert [r.get("ruleIndex") for r in results] == [None, 0, None, None]
    proxy = results[1]
    assert proxy["locations"] == [{"physicalLocation": {
        "artifactLocation": {"uri": "file:///etc/apache2/mods-enabled/proxy.conf"},
        "region": {"startLine": 12}}}]
    assert proxy["properties"]["category"] == "open-http-proxy"
    assert proxy["message"]["text"].startswith("Forward proxy open to everyone")
    # A network target still gets an artifact URI (GitHub rejects results without one).
    assert results[0]["locations"] == [{
        "physicalLocation": {"artifactLocation": {"uri": "%5B%3A%3A1%5D%3A3128"}},
        "message": {"text": "[::1]:3128"}}]
    assert results[3]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "relative%20dir/httpd.conf")
    inv = run["invocations"][0]
    assert inv["executionSuccessful"] is False
    assert inv["toolExecutionNotifications"] == [{"level": "error", "message": {
        "text": "/etc/apache2/conf-enabled/broken.conf:4: unterminated <Proxy>"}}]


def test_clean_run_is_successful() -> None:
    doc = sarif(Report("audit"))
    run = doc["runs"][0]
    assert run["results"] == []
    assert run["invocations"][0]["executionSuccessful"] is True


@pytest.mark.parametrize(("severity", "level"), [
    (Severity.CRITICAL, "error"), (Severity.HIGH, "error"), (Severity.MEDIUM, "warning"),
    (Severity.LOW, "note"), (Severity.INFO, "note")])
def test_levels(severity: Severity, level: str) -> None:
    assert sarif_level(severity) == level


def test_fingerprint_stable_across_runs() -> None:
    a = sarif(make_report())["runs"][0]["results"]
    b = sarif(make_report())["runs"][0]["results"]
    assert [r["partialFingerprints"] for r in a] == [r["partialFingerprints"] for r in b]
    assert len({r["partialFingerprints"]["relayguard/v1"] for r in a}) == 4


@pytest.mark.parametrize(("path", "uri"), [
    ("/etc/a b/#x%.conf", "file:///etc/a%20b/%23x%25.conf"),
    ("conf dir/h#.conf", "conf%20dir/h%23.conf"),
    ("c:onf/x.conf", "c%3Aonf/x.conf"),  # not a URI scheme
    ("/tmp/\udcff", "file:///tmp/%FF"),  # a non-UTF-8 byte kept by surrogateescape
])
def test_paths_become_valid_uri_references(path: str, uri: str) -> None:
    f = Finding("APACHE-FORWARD-PROXY-OPEN", Category.OPEN_HTTP_PROXY, Severity.HIGH,
                Confidence.LIKELY, "t", Location(path=path, line=0))
    res = sarif(Report("audit", (f,)))["runs"][0]["results"][0]
    phys = res["locations"][0]["physicalLocation"]
    assert phys["artifactLocation"]["uri"] == uri
    assert URI_REF.fullmatch(uri)
    assert phys["region"] == {"startLine": 1}  # SARIF lines start at 1


@settings(max_examples=60, deadline=None)
@given(title=st.text(max_size=30), path=st.text(min_size=1, max_size=30),
       line=st.none() | st.integers(-5, 10**6), sev=st.sampled_from(list(Severity)),
       err=st.text(max_size=20))
def test_any_report_validates(title: str, path: str, line: int | None, sev: Severity,
                              err: str) -> None:
    f = Finding(RULE.id, Category.OPEN_HTTP_PROXY, sev, Confidence.POSSIBLE, title,
                Location(path=path, line=line))
    doc = sarif(Report("audit", (f,), errors=(ErrorEntry(path, err),)))
    uri = doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"][
        "uri"]
    assert URI_REF.fullmatch(uri), uri


def test_schema_really_rejects_bad_sarif() -> None:
    """The vendored schema is live: the same document with one wrong value fails."""
    doc = json.loads(render(make_report(), OutputFormat.SARIF))
    assert VALIDATOR.is_valid(doc)
    doc["runs"][0]["results"][0]["level"] = "fatal"
    assert not VALIDATOR.is_valid(doc)
    doc = json.loads(render(make_report(), OutputFormat.SARIF))
    doc["runs"][0]["results"][1]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    assert not VALIDATOR.is_valid(doc)


def test_every_located_result_meets_github_ingestion_rules() -> None:
    """GitHub code scanning drops the whole upload when a result has no artifact URI, or one
    whose scheme is not `file`: every file or network finding carries a usable one."""
    f = Finding("BL-LISTED-SPAM", Category.BLOCKLISTED, Severity.HIGH, Confidence.CONFIRMED,
                "listed", Location(host="192.0.2.7"))
    report = Report("scan", (*make_report().findings, f))
    for res in sarif(report)["runs"][0]["results"]:
        uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert URI_REF.fullmatch(uri)
        assert ":" not in uri.split("/")[0] or uri.startswith("file:///"), uri


def test_a_finding_without_a_location_still_has_one_for_github() -> None:
    """A logs volume spike has no single place (Location()): GitHub's upload rejects the whole
    file ('expected at least one location'), so the result points at its first evidence
    line's file, or failing that at the command's report."""
    from relayguard.findings import Evidence

    spike = Finding("LOGS-VOLUME-SPIKE", Category.VOLUME_ANOMALY, Severity.MEDIUM,
                    Confidence.CONFIRMED, "800 requests/min at the peak", Location(),
                    (Evidence("log", "summary"),
                     Evidence("log", "1.2.3.4 - - GET /", Location(path="/var/log/a.log",
                                                                    line=9))))
    bare = Finding("LOGS-VOLUME-SPIKE", Category.VOLUME_ANOMALY, Severity.MEDIUM,
                   Confidence.CONFIRMED, "no evidence at all", Location())
    results = sarif(Report("logs", (spike, bare)))["runs"][0]["results"]
    assert results[0]["locations"] == [{"physicalLocation": {
        "artifactLocation": {"uri": "file:///var/log/a.log"}, "region": {"startLine": 9}}}]
    uri = results[1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert URI_REF.fullmatch(uri) and ":" not in uri
