"""tinyproxy audit: rule fixtures (exact rule and line, accepted by tinyproxy itself, closed
by their own edits), stock Debian config, bad input, fuzzing, and agreement with a real
tinyproxy on 127.0.7.2 asked by the untrusted 127.0.7.250 to relay to a loopback canary."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayguard.audit import audit_paths
from relayguard.audit.base import AuditOptions
from relayguard.audit.rules.tinyproxy import RULES
from relayguard.audit.tinyproxy import TinyproxyAuditor
from relayguard.findings import Category, Severity
from tests.audit.proxytools import (
    OUTSIDE,
    Canaries,
    apply_edits,
    audited_verdicts,
    canaries,
    check_fixture,
    fixture_files,
    http_proxy_verdicts,
    no_finding_above_info,
)
from tests.servers import free_port
from tests.servers.base import Daemon, run_daemon
from tests.servers.tinyproxy import STOCK_BODY, tinyproxy

FIXTURES = Path(__file__).parent / "fixtures"
REAL = Path(__file__).resolve().parents[3].parent / \
    "shared/data/real-configs/tinyproxy/tinyproxy.conf"
AUDITOR = TinyproxyAuditor()
OUT = AuditOptions(outside_client=ipaddress.ip_address(OUTSIDE))
HOST = "127.0.7.2"
CANARY = "127.0.7.22"
KEYS = ["GET 80", "GET 25", "CONNECT 443", "CONNECT 25"]


@pytest.mark.parametrize("fixture", fixture_files(FIXTURES), ids=lambda p: p.name)
def test_fixture(fixture: Path, tmp_path: Path) -> None:
    check_fixture(AUDITOR, fixture, tmp_path, "tinyproxy.conf")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_rule_has_both_fixtures(rule) -> None:
    assert (FIXTURES / f"{rule.id.lower()}.conf").is_file()
    assert (FIXTURES / f"{rule.id.lower()}_fp.conf").is_file()


@pytest.mark.parametrize("path", [REAL, Path("/etc/tinyproxy/tinyproxy.conf")], ids=str)
def test_stock_debian_config_has_nothing_above_info(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path} not present")
    result = AUDITOR.audit(path, AuditOptions())
    no_finding_above_info(result)
    assert [f.rule for f in result.findings] == ["TINYPROXY-LISTEN-ALL"]
    (p,) = result.facts["proxy_paths"]
    assert (p["open_to_outside"], p["clients"], p["listen"]) == (False, "loopback", "*:8888")


def test_one_line_change_to_stock_is_critical_with_smtp(tmp_path: Path) -> None:
    conf = tmp_path / "tinyproxy.conf"
    text = (REAL.read_text() if REAL.is_file() else "Port 8888\nAllow 127.0.0.1\n")
    conf.write_text(text.replace("Allow 127.0.0.1", "Allow 0.0.0.0/0"), encoding="utf-8")
    result = AUDITOR.audit(conf, AuditOptions())
    by_rule = {f.rule: f for f in result.findings}
    assert by_rule["TINYPROXY-ALLOW-BROAD"].severity is Severity.CRITICAL
    smtp = by_rule["TINYPROXY-CONNECT-ANY-PORT"]
    assert smtp.category is Category.SMTP_VIA_PROXY and smtp.severity is Severity.CRITICAL
    assert result.facts["proxy_paths"][0]["tunnel_ports"] == [25, 80, 443, 465, 587]


@pytest.mark.parametrize(("text", "line", "needle"), [
    ("Port 8888\nBogusDirective yes\n", 2, "unknown directive"),
    ("Port 8888\nAllow\n", 2, "needs a value"),
    ("Port eighty\n", 1, "not a port number"),
    ("Port 8888\nConnectPort https\n", 2, "not a number"),
    ("Port 8888\nBasicAuth onlyuser\n", 2, "user and a password"),
])
def test_bad_input_is_an_error_entry_with_its_line(tmp_path: Path, text: str, line: int,
                                                    needle: str) -> None:
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(text, encoding="utf-8")
    result = AUDITOR.audit(conf, AuditOptions())
    assert any(e.line == line and needle in e.message for e in result.errors), result.errors
    if not text.startswith("Port eighty"):  # the check replaces Port with a free port
        ok, _ = AUDITOR.config_test(conf) or (False, "")
        assert not ok  # tinyproxy itself refuses these too


def test_missing_port_and_unreadable_file(tmp_path: Path) -> None:
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text("Allow 127.0.0.1\n", encoding="utf-8")
    assert any("no Port" in e.message for e in AUDITOR.audit(conf, AuditOptions()).errors)
    report = audit_paths([tmp_path / "nope.conf"], server_type="tinyproxy")
    assert report.errors and not report.findings


def test_without_a_port_line_nothing_is_called_open(tmp_path: Path) -> None:
    """tinyproxy refuses to start without `Port` ("You MUST set a Port"), so a config that
    would otherwise admit everyone relays nothing: the error says why, and no finding claims
    an open proxy (those had no file:line either, there being no Port line to cite)."""
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text("Listen 0.0.0.0\nAllow 0.0.0.0/0\n", encoding="utf-8")
    result = AUDITOR.audit(conf, AuditOptions())
    assert [e.message for e in result.errors] == ["no Port line (tinyproxy refuses to start)"]
    assert result.findings == []
    assert result.facts["proxy_paths"] == []
    exe = shutil.which("tinyproxy")
    if exe is not None:  # the real daemon agrees (bound to loopback, should it start at all)
        local = tmp_path / "local.conf"
        local.write_text("Listen 127.0.11.9\nAllow 0.0.0.0/0\n", encoding="utf-8")
        proc = subprocess.run([exe, "-d", "-c", str(local)], capture_output=True, text=True,
                              timeout=10, check=False)
        assert proc.returncode != 0 and "Port" in proc.stderr, proc.stderr


_WORDS = ["Port", "8888", "Allow", "Deny", "ConnectPort", "443", "25", "0", "Listen",
          "BasicAuth", "0.0.0.0/0", "::/0", ".example.com", "#", '"', "127.0.0.1", "Upstream"]


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=6)), max_size=5)
                .map(" ".join), max_size=12))
def test_fuzz_parser_never_crashes(tmp_path: Path, lines: list[str]) -> None:
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    report = audit_paths([conf], server_type="tinyproxy")
    for f in report.findings:
        assert f.location.line is None or f.location.line >= 1


# ---------------------------------------------------------------------------------------------
# Agreement with the real daemon

SCENARIOS = {
    "no-acl": ("", {"TINYPROXY-NO-ACL", "TINYPROXY-CONNECT-ANY-PORT"}),
    "allow-subnet-connect-443": ("Allow 127.0.7.0/24\nConnectPort 443\n",
                                 {"TINYPROXY-ALLOW-BROAD"}),
    "stock": (STOCK_BODY, set()),
    "deny-first": ("Deny 127.0.7.250\nAllow 127.0.7.0/24\n", set()),
    "reverse-only": (f'ReversePath "/x/" "http://{CANARY}/"\nReverseOnly Yes\n', set()),
}


@pytest.fixture(scope="module")
def canary() -> Iterator[Canaries]:
    with canaries(CANARY) as c:
        yield c


@pytest.mark.server
@pytest.mark.parametrize("name", SCENARIOS)
def test_audit_verdict_matches_real_tinyproxy(name: str, canary: Canaries) -> None:
    body, expected_rules = SCENARIOS[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"rg-audit-tinyproxy-{name}-"))  # unique: parallel runs
    port = free_port(HOST)
    try:
        with tinyproxy(HOST, port, body, workdir=workdir) as d:
            result = AUDITOR.audit(d.config, OUT)
            assert result.errors == []
            real = http_proxy_verdicts(HOST, port, canary)
            assert audited_verdicts(result, KEYS) == real, d.diagnostics()
        assert {f.rule for f in result.findings if f.severity > 0} == expected_rules
        if not any(real.values()):
            return
        apply_edits([e for f in result.findings for e in f.edits])
        assert not any(AUDITOR.audit(d.config, OUT).facts["outside_verdicts"].values())
        daemon = Daemon(name="tinyproxy", host=HOST, port=port, workdir=workdir,
                        config=d.config, logs=d.logs)
        with run_daemon(daemon, ["tinyproxy", "-d", "-c", str(d.config)]):
            after = http_proxy_verdicts(HOST, port, canary)
        assert not any(after.values()), (after, d.config.read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
