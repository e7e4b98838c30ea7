"""One fixed Report every reporter test renders: all severities, a file and a network finding,
evidence written by an attacker (ESC, backticks, pipes, HTML), edits, errors, notes, stats."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayguard.findings import (
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

HOSTILE = ("GET http://mx.victim:25/ HTTP/1.1\x1b[2J\x1b]0;owned\x07 ```x``` | "
           "<script>alert(1)</script>")


def make_report() -> Report:
    """The sample report (a function, so tests can build variants)."""
    file_finding = Finding(
        rule="APACHE-FORWARD-PROXY-OPEN",
        category=Category.OPEN_HTTP_PROXY,
        severity=Severity.HIGH,
        confidence=Confidence.LIKELY,
        title="Forward proxy open to everyone",
        location=Location(path="/etc/apache2/mods-enabled/proxy.conf", line=12),
        evidence=(Evidence("config", "ProxyRequests On",
                           Location(path="/etc/apache2/mods-enabled/proxy.conf", line=12)),),
        fix="ProxyRequests Off",
        edits=(Edit("/etc/apache2/mods-enabled/proxy.conf", 12, ("ProxyRequests On",),
                    ("ProxyRequests Off",)),),
    )
    smtp = Finding(
        rule="PROBE-CONNECT-SMTP",
        category=Category.SMTP_VIA_PROXY,
        severity=Severity.CRITICAL,
        confidence=Confidence.CONFIRMED,
        title="CONNECT to port 25 reached the canary",
        location=Location(host="::1", port=3128),
        evidence=(Evidence("transcript",
                           "CONNECT 127.0.0.9:25 HTTP/1.1\n200 Connection established"),),
    )
    logged = Finding(
        rule="LOGS-PROXY-ABUSE",
        category=Category.PROXY_ABUSE,
        severity=Severity.MEDIUM,
        confidence=Confidence.CONFIRMED,
        title="Relayed requests | <b>in</b> `access.log`",
        location=Location(path="/var/log/apache2/access.log", line=7),
        evidence=(Evidence("log", HOSTILE),),
    )
    info = Finding(
        rule="APACHE-PROXY-UNUSED",
        category=Category.HARDENING,
        severity=Severity.INFO,
        confidence=Confidence.POSSIBLE,
        title="mod_proxy loaded but unused",
        location=Location(path="relative dir/httpd.conf", line=3),
    )
    return Report(
        command="audit",
        findings=(info, file_finding, logged, smtp),
        errors=(ErrorEntry("/etc/apache2/conf-enabled/broken.conf", "unterminated <Proxy>", 4),),
        stats={"configs": 1, "files_read": 3, "servers": ["apache"], "root": Path("/")},
        notes=("apache: auditing /etc/apache2/apache2.conf",),
    )


@pytest.fixture
def report() -> Report:
    return make_report()
