"""Privoxy audit: rule fixtures (exact rule and line, accepted by `privoxy --config-test`,
closed by their own edits), stock Debian config, bad input, fuzzing, and agreement with a
real Privoxy on 127.0.7.3 asked by the untrusted 127.0.7.250 to relay to a loopback canary."""

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
from relayguard.audit.privoxy import PrivoxyAuditor, parse
from relayguard.audit.rules.privoxy import RULES, connect_ports
from relayguard.findings import Severity
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
from tests.servers.privoxy import privoxy

FIXTURES = Path(__file__).parent / "fixtures"
REAL = Path(__file__).resolve().parents[3].parent / "shared/data/real-configs/privoxy/config"
AUDITOR = PrivoxyAuditor()
OUT = AuditOptions(outside_client=ipaddress.ip_address(OUTSIDE))
HOST = "127.0.7.3"
CANARY = "127.0.7.23"
KEYS = ["GET 80", "GET 25", "CONNECT 443", "CONNECT 25"]


@pytest.mark.parametrize("fixture", fixture_files(FIXTURES), ids=lambda p: p.name)
def test_fixture(fixture: Path, tmp_path: Path) -> None:
    check_fixture(AUDITOR, fixture, tmp_path, "config")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_rule_has_both_fixtures(rule) -> None:
    assert (FIXTURES / f"{rule.id.lower()}.conf").is_file()
    assert (FIXTURES / f"{rule.id.lower()}_fp.conf").is_file()


@pytest.mark.parametrize("path", [REAL, Path("/etc/privoxy/config")], ids=str)
def test_stock_debian_config_has_no_finding(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path} not present")
    result = AUDITOR.audit(path, AuditOptions())
    no_finding_above_info(result)
    assert result.findings == []
    listens = [(p["listen"], p["clients"]) for p in result.facts["proxy_paths"]]
    assert listens == [("127.0.0.1:8118", "loopback"), ("[::1]:8118", "loopback")]


def test_limit_connect_follows_aliases_and_last_section(tmp_path: Path) -> None:
    (tmp_path / "a.action").write_text(
        "{{alias}}\nsafe = +limit-connect{443, 563}\n{ safe }\n/\n"
        "{ +limit-connect{-} }\n.example.com\n", encoding="utf-8")
    (tmp_path / "b.action").write_text("{ -limit-connect \\\n }\n/\n", encoding="utf-8")
    conf = tmp_path / "config"
    conf.write_text(f"confdir {tmp_path}\nactionsfile a.action\nlisten-address :8118\n")
    assert connect_ports(parse(conf)) == {443}
    conf.write_text(f"confdir {tmp_path}\nactionsfile a.action\nactionsfile b.action\n")
    assert connect_ports(parse(conf)) is None


def test_open_privoxy_listening_everywhere_is_critical(tmp_path: Path) -> None:
    conf = tmp_path / "config"
    conf.write_text("listen-address 0.0.0.0:8118\n", encoding="utf-8")
    result = AUDITOR.audit(conf, AuditOptions())
    assert {f.rule: f.severity for f in result.findings} == {
        "PRIVOXY-OPEN": Severity.CRITICAL, "PRIVOXY-CONNECT-ANY-PORT": Severity.CRITICAL}


@pytest.mark.parametrize(("text", "line", "needle"), [
    ("listen-address\n", 1, "without an address"),
    ("permit-access\n", 1, "without a source"),
    ("actionsfile missing.action\n", 1, "actionsfile missing.action"),
])
def test_bad_input_is_an_error_entry_with_its_line(tmp_path: Path, text: str, line: int,
                                                    needle: str) -> None:
    conf = tmp_path / "config"
    conf.write_text(text, encoding="utf-8")
    result = AUDITOR.audit(conf, AuditOptions())
    assert any(e.line == line and needle in e.message for e in result.errors), result.errors


_WORDS = ["listen-address", ":8118", "0.0.0.0:8118", "[::1]:8118", "permit-access",
          "deny-access", "localhost", "10.0.0.0/8", "actionsfile", "user.action", "confdir",
          "forward-socks5t", "/", ".", "enable-edit-actions", "1", "#", "\\#", "[", "/24"]


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=6)), max_size=5)
                .map(" ".join), max_size=12),
       st.lists(st.sampled_from(["{", "}", "{{alias}}", "a = +limit-connect{1-9}", "/",
                                 "{ +limit-connect{", "443} }", "\\", "{ a }", "-x"]),
                max_size=10))
def test_fuzz_parser_never_crashes(tmp_path: Path, lines: list[str], actions: list[str]) -> None:
    (tmp_path / "f.action").write_text("\n".join(actions), encoding="utf-8")
    conf = tmp_path / "config"
    conf.write_text(f"confdir {tmp_path}\nactionsfile f.action\n" + "\n".join(lines),
                    encoding="utf-8", errors="surrogatepass")
    report = audit_paths([conf], server_type="privoxy")
    for f in report.findings:
        assert f.location.line is None or f.location.line >= 1


# ---------------------------------------------------------------------------------------------
# Agreement with the real daemon (stock Debian actions files: no limit-connect)

SCENARIOS = {
    "no-acl": ("", {"PRIVOXY-OPEN", "PRIVOXY-CONNECT-ANY-PORT"}),
    "loopback-only": ("permit-access 127.0.0.1\n", set()),
    "deny-last": ("permit-access 127.0.7.0/24\ndeny-access 127.0.7.250\n", set()),
    "permit-last": ("deny-access 127.0.7.250\npermit-access 127.0.7.0/24\n",
                    {"PRIVOXY-OPEN", "PRIVOXY-CONNECT-ANY-PORT"}),
}


@pytest.fixture(scope="module")
def canary() -> Iterator[Canaries]:
    with canaries(CANARY) as c:
        yield c


@pytest.mark.server
@pytest.mark.parametrize("name", SCENARIOS)
def test_audit_verdict_matches_real_privoxy(name: str, canary: Canaries) -> None:
    if not Path("/etc/privoxy/default.action").is_file():
        pytest.skip("privoxy's stock actions files are not installed")
    body, expected_rules = SCENARIOS[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"rg-audit-privoxy-{name}-"))  # unique: parallel runs
    port = free_port(HOST)
    try:
        with privoxy(HOST, port, body, workdir=workdir) as d:
            result = AUDITOR.audit(d.config, OUT)
            assert result.errors == []
            real = http_proxy_verdicts(HOST, port, canary)
            assert audited_verdicts(result, KEYS) == real, d.diagnostics()
        assert {f.rule for f in result.findings if f.severity > 0} == expected_rules
        if not any(real.values()):
            return
        # Only edits to the test's own config: the limit-connect edit targets the system's
        # /etc/privoxy/user.action, which a test must not touch.
        apply_edits([e for f in result.findings for e in f.edits if e.path == str(d.config)])
        assert not any(AUDITOR.audit(d.config, OUT).facts["outside_verdicts"].values())
        daemon = Daemon(name="privoxy", host=HOST, port=port, workdir=workdir,
                        config=d.config, logs=d.logs)
        with run_daemon(daemon, ["privoxy", "--no-daemon", str(d.config)]):
            after = http_proxy_verdicts(HOST, port, canary)
        assert not any(after.values()), (after, d.config.read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
