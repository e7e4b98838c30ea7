"""Dante audit: rule fixtures (exact rule and line, accepted by `danted -V`, closed by their
own edits), the stock Debian sample, bad input, fuzzing, and agreement with a real danted on
127.0.7.4 asked by the untrusted 127.0.7.250 for SOCKS5 tunnels to a loopback canary."""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayguard.audit import audit_paths
from relayguard.audit.base import AuditOptions
from relayguard.audit.dante import DanteAuditor
from relayguard.audit.rules.dante import RULES
from relayguard.findings import Category, Confidence, Severity
from tests.audit.proxytools import (
    OUTSIDE,
    Canaries,
    apply_edits,
    audited_verdicts,
    canaries,
    check_fixture,
    fixture_files,
    no_finding_above_info,
    socks_verdicts,
)
from tests.servers import free_port
from tests.servers.base import Daemon, run_daemon
from tests.servers.dante import OPEN_RULES, danted, restricted_rules

FIXTURES = Path(__file__).parent / "fixtures"
REAL = Path(__file__).resolve().parents[3].parent / \
    "shared/data/real-configs/dante-server/danted.conf"
AUDITOR = DanteAuditor()
OUT = AuditOptions(outside_client=ipaddress.ip_address(OUTSIDE))
HOST = "127.0.7.4"
CANARY = "127.0.7.24"
KEYS = ["SOCKS 443", "SOCKS 25"]


@pytest.mark.parametrize("fixture", fixture_files(FIXTURES), ids=lambda p: p.name)
def test_fixture(fixture: Path, tmp_path: Path) -> None:
    check_fixture(AUDITOR, fixture, tmp_path, "danted.conf")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_rule_has_both_fixtures(rule) -> None:
    assert (FIXTURES / f"{rule.id.lower()}.conf").is_file()
    assert (FIXTURES / f"{rule.id.lower()}_fp.conf").is_file()


@pytest.mark.parametrize("path", [REAL, Path("/etc/danted.conf")], ids=str)
def test_stock_debian_sample_has_no_finding(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path} not present")
    result = AUDITOR.audit(path, AuditOptions())
    no_finding_above_info(result)
    assert result.findings == [] and result.facts["proxy_paths"] == []


def test_open_socks_is_critical_and_names_smtp(tmp_path: Path) -> None:
    conf = tmp_path / "danted.conf"
    conf.write_text("internal: 0.0.0.0 port = 1080\nexternal: eth0\nsocksmethod: username none\n"
                    "client pass { from: 0/0 to: 0/0 }\nsocks pass { from: 0/0 to: 0/0 }\n")
    result = AUDITOR.audit(conf, AuditOptions())
    by_rule = {f.rule: f for f in result.findings}
    assert by_rule["DANTE-OPEN-SOCKS"].category is Category.OPEN_SOCKS_PROXY
    assert by_rule["DANTE-SOCKS-SMTP"].severity is Severity.CRITICAL
    assert by_rule["DANTE-BIND-UDP"].location.line == 5
    (p,) = result.facts["proxy_paths"]
    assert p["listen"] == "0.0.0.0:1080" and p["open_to_outside"]
    assert p["loopback_ports"] == [25, 80, 443, 465, 587]


def test_global_clientmethod_decides_how_sure_we_are(tmp_path: Path) -> None:
    conf = tmp_path / "danted.conf"
    rules = "client pass { from: 0/0 to: 0/0 }\nsocks pass { from: 0/0 to: 0/0 }\n"
    conf.write_text("internal: 0.0.0.0 port = 1080\nexternal: eth0\nsocksmethod: none\n"
                    "clientmethod: pam.address\n" + rules)
    found = {f.rule: f.confidence for f in AUDITOR.audit(conf, AuditOptions()).findings}
    assert found["DANTE-OPEN-SOCKS"] is Confidence.POSSIBLE  # PAM decides, not the config
    conf.write_text("internal: 0.0.0.0 port = 1080\nexternal: eth0\nsocksmethod: none\n"
                    "clientmethod: none\n" + rules)
    found = {f.rule: f.confidence for f in AUDITOR.audit(conf, AuditOptions()).findings}
    assert found["DANTE-OPEN-SOCKS"] is Confidence.LIKELY


def test_without_socksmethod_nothing_is_relayed(tmp_path: Path) -> None:
    conf = tmp_path / "danted.conf"
    conf.write_text("internal: 0.0.0.0 port = 1080\nexternal: eth0\n"
                    "client pass { from: 0/0 to: 0/0 }\nsocks pass { from: 0/0 to: 0/0 }\n")
    result = AUDITOR.audit(conf, AuditOptions())
    assert result.findings == []


@pytest.mark.parametrize(("text", "line", "needle"), [
    ("client pass\nfrom: 0/0\n", 1, "expected '{'"),
    ("socks pass {\n from: 0/0 to: 0/0\n", 1, "not closed"),
    ("internal 0.0.0.0\n", 1, "keyword:"),
    ("}\n", 1, "unexpected"),
    ("socksmethod: none\nsocks pass {\n from: 0/0 to: 0/0\n socksmethod: username\n}\n", 4,
     "not in the global"),
])
def test_bad_input_is_an_error_entry_with_its_line(tmp_path: Path, text: str, line: int,
                                                    needle: str) -> None:
    conf = tmp_path / "danted.conf"
    conf.write_text(text, encoding="utf-8")
    result = AUDITOR.audit(conf, AuditOptions())
    assert any(e.line == line and needle in e.message for e in result.errors), result.errors


_WORDS = ["client", "socks", "pass", "block", "{", "}", "from:", "to:", "0/0", "0.0.0.0/0",
          "port", "=", "25", "-", "1", "eq", "socksmethod:", "none", "rfc931", "username",
          "command:", "connect", "bind", "internal:", "external:", "method:", "#", "::/0"]


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=6)), max_size=6)
                .map(" ".join), max_size=14))
def test_fuzz_parser_never_crashes(tmp_path: Path, lines: list[str]) -> None:
    conf = tmp_path / "danted.conf"
    conf.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    report = audit_paths([conf], server_type="dante")
    for f in report.findings:
        assert f.location.line is None or f.location.line >= 1


# ---------------------------------------------------------------------------------------------
# Agreement with the real daemon

SMTP_BLOCKED = ("client pass {\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n}\n"
                "socks block {\n    from: 0.0.0.0/0 to: 0.0.0.0/0 port = 25\n}\n"
                "socks pass {\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n    command: connect\n}\n")
CLIENT_BLOCKED = "client block {\n    from: 127.0.7.250/32 to: 0.0.0.0/0\n}\n" + OPEN_RULES
SCENARIOS = {
    "open": (OPEN_RULES, {"DANTE-OPEN-SOCKS", "DANTE-SOCKS-SMTP"}),
    "restricted": (restricted_rules("127.0.7.1/32"), set()),
    "smtp-blocked": (SMTP_BLOCKED, {"DANTE-OPEN-SOCKS", "DANTE-SOCKS-SMTP"}),
    "stranger-blocked-first": (CLIENT_BLOCKED, set()),
}


@pytest.fixture(scope="module")
def canary() -> Iterator[Canaries]:
    with canaries(CANARY) as c:
        yield c


@pytest.mark.server
@pytest.mark.parametrize("name", SCENARIOS)
def test_audit_verdict_matches_real_danted(name: str, canary: Canaries) -> None:
    rules, expected_rules = SCENARIOS[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"rg-audit-danted-{name}-"))  # unique: parallel runs
    port = free_port(HOST)
    try:
        with danted(HOST, port, rules, workdir=workdir) as d:
            result = AUDITOR.audit(d.config, OUT)
            assert result.errors == []
            real = socks_verdicts(HOST, port, canary)
            assert audited_verdicts(result, KEYS) == real, d.diagnostics()
        assert {f.rule for f in result.findings if f.severity > 0} == expected_rules
        if not any(real.values()):
            return
        apply_edits([e for f in result.findings for e in f.edits])
        assert not any(AUDITOR.audit(d.config, OUT).facts["outside_verdicts"].values())
        daemon = Daemon(name="danted", host=HOST, port=port, workdir=workdir,
                        config=d.config, logs=d.logs)
        argv = ["danted", "-f", str(d.config), "-p", str(workdir / "danted.pid"), "-N", "1"]
        with run_daemon(daemon, argv):
            after = socks_verdicts(HOST, port, canary)
        assert not any(after.values()), (after, d.config.read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
