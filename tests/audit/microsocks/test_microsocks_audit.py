"""microsocks audit: its command line read from systemd units (Environment, EnvironmentFile,
continuation lines) and scripts, rule fixtures closed by their own edits, discovery under a
root, bad input, fuzzing, and agreement with a real microsocks on 127.0.7.5 asked by the
untrusted 127.0.7.250 for SOCKS5 tunnels to a loopback canary."""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayguard.audit import audit_paths
from relayguard.audit.base import AuditOptions
from relayguard.audit.microsocks import MicrosocksAuditor, parse
from relayguard.audit.rules.microsocks import RULES
from relayguard.findings import Category, Confidence
from tests.audit.proxytools import (
    OUTSIDE,
    Canaries,
    audited_verdicts,
    canaries,
    check_fixture,
    fixture_files,
    socks_verdicts,
)
from tests.servers import free_port
from tests.servers.microsocks import microsocks

FIXTURES = Path(__file__).parent / "fixtures"
AUDITOR = MicrosocksAuditor()
OUT = AuditOptions(outside_client=ipaddress.ip_address(OUTSIDE))
HOST = "127.0.7.5"
CANARY = "127.0.7.25"
KEYS = ["SOCKS 443", "SOCKS 25"]


@pytest.mark.parametrize("fixture", fixture_files(FIXTURES), ids=lambda p: p.name)
def test_fixture(fixture: Path, tmp_path: Path) -> None:
    check_fixture(AUDITOR, fixture, tmp_path, "microsocks.service")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_rule_has_both_fixtures(rule) -> None:
    assert (FIXTURES / f"{rule.id.lower()}.service").is_file()
    assert (FIXTURES / f"{rule.id.lower()}_fp.service").is_file()


def test_open_microsocks_finding_and_facts(tmp_path: Path) -> None:
    unit = tmp_path / "microsocks.service"
    unit.write_text("[Service]\nExecStart=/usr/bin/microsocks -i0.0.0.0 -p 9050\n")
    result = AUDITOR.audit(unit, AuditOptions())
    (f,) = result.findings
    assert (f.rule, f.category, f.location.line) == (
        "MICROSOCKS-NO-AUTH", Category.OPEN_SOCKS_PROXY, 2)
    assert f.edits[0].new == ("ExecStart=/usr/bin/microsocks -i 127.0.0.1 -p 9050",)
    (p,) = result.facts["proxy_paths"]
    assert p["listen"] == "0.0.0.0:9050" and p["open_to_outside"]
    assert p["tunnel_ports"] == [25, 80, 443, 465, 587]


def test_unresolved_variable_lowers_confidence(tmp_path: Path) -> None:
    unit = tmp_path / "microsocks.service"
    unit.write_text("[Service]\nExecStart=/usr/bin/microsocks $OPTS\n")
    (f,) = AUDITOR.audit(unit, AuditOptions()).findings
    assert f.confidence is Confidence.POSSIBLE
    assert any("OPTS" in e.text for e in f.evidence)


def test_discovery_under_root_finds_units_and_scripts(tmp_path: Path) -> None:
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    (units / "socks.service").write_text("[Service]\nExecStart=/usr/bin/microsocks\n")
    (units / "nginx.service").write_text("[Service]\nExecStart=/usr/sbin/nginx\n")
    init = tmp_path / "etc/init.d"
    init.mkdir(parents=True)
    (init / "microsocks").write_text("#!/bin/sh\nexec /usr/bin/microsocks -i 127.0.0.1\n")
    assert AUDITOR.candidates(tmp_path) == [units / "socks.service", init / "microsocks"]
    report = audit_paths([], server_type="microsocks",
                         options=AuditOptions(root=tmp_path))
    assert [(f.rule, f.location.path) for f in report.findings] == [
        ("MICROSOCKS-NO-AUTH", str(units / "socks.service"))]
    assert AUDITOR.candidates(tmp_path / "empty") == []


@pytest.mark.parametrize(("text", "needle"), [
    ("[Service]\nExecStart=/usr/bin/microsocks -p\n", "without a value"),
    ("[Service]\nExecStart=/usr/bin/microsocks -p http\n", "is not a port"),
    ("[Service]\nExecStart=/usr/bin/microsocks 'unterminated\n", "cannot split"),
    ("[Service]\nExecStart=/usr/bin/socat\n", "no microsocks command line"),
])
def test_bad_input_is_an_error_entry(tmp_path: Path, text: str, needle: str) -> None:
    unit = tmp_path / "microsocks.service"
    unit.write_text(text, encoding="utf-8")
    result = AUDITOR.audit(unit, AuditOptions())
    assert any(needle in e.message for e in result.errors), result.errors


def test_recognise_only_files_that_run_microsocks(tmp_path: Path) -> None:
    yes, no = tmp_path / "a.service", tmp_path / "b.service"
    yes.write_text("[Service]\nExecStart=/usr/local/bin/microsocks -1\n")
    no.write_text("[Service]\n# microsocks was here\nExecStart=/bin/true\n")
    assert AUDITOR.recognise(yes) and not AUDITOR.recognise(no)
    assert parse(yes).invocations[0].auth_once


_WORDS = ["ExecStart=", "/usr/bin/microsocks", "microsocks", "-i", "-p", "-u", "-P", "-1",
          "-b", "-w", "0.0.0.0", "127.0.0.1", "1080", "$X", "${Y}", "Environment=X=-i",
          "EnvironmentFile=-/nonexistent", "'", '"', "\\", "[Service]", ";", "&&"]


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=6)), max_size=6)
                .map(" ".join), max_size=10))
def test_fuzz_parser_never_crashes(tmp_path: Path, lines: list[str]) -> None:
    unit = tmp_path / "microsocks.service"
    unit.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    report = audit_paths([unit], server_type="microsocks")
    for f in report.findings:
        assert f.location.line is None or f.location.line >= 1


# ---------------------------------------------------------------------------------------------
# Agreement with the real daemon: the unit file runs exactly the launcher's command line.

@pytest.fixture(scope="module")
def canary() -> Iterator[Canaries]:
    with canaries(CANARY) as c:
        yield c


@pytest.mark.server
@pytest.mark.parametrize("auth", [False, True], ids=["no-auth", "user-password"])
def test_audit_verdict_matches_real_microsocks(auth: bool, canary: Canaries,
                                               tmp_path: Path) -> None:
    port = free_port(HOST)
    creds = {"user": "relay", "password": "long-random-passphrase"} if auth else {}
    with microsocks(HOST, port, **creds) as d:
        argv = d.proc.args if d.proc is not None else []
        unit = tmp_path / "microsocks.service"
        unit.write_text(f"[Service]\nExecStart={shlex.join(['/usr/bin/' + argv[0], *argv[1:]])}\n")
        result = AUDITOR.audit(unit, OUT)
        assert result.errors == []
        real = socks_verdicts(HOST, port, canary)
        assert audited_verdicts(result, KEYS) == real
        assert real == {"SOCKS 443": not auth, "SOCKS 25": not auth}
        assert {f.rule for f in result.findings} == (set() if auth else {"MICROSOCKS-NO-AUTH"})
        # The running process itself is audited too (a live system: /proc/PID/cmdline).
        cmdline = Path(f"/proc/{d.proc.pid}/cmdline") if d.proc is not None else None
        assert cmdline in AUDITOR.candidates(Path("/"))
        live = AUDITOR.audit(cmdline, OUT)
        assert [(f.rule, f.location.line) for f in live.findings] == \
            ([] if auth else [("MICROSOCKS-NO-AUTH", 1)])
        assert audited_verdicts(live, KEYS) == real
        if auth:  # the credentials really work: the audit is right that they are the barrier
            assert socks_verdicts(HOST, port, canary, user="relay",
                                  password="long-random-passphrase") == {
                "SOCKS 443": True, "SOCKS 25": True}
