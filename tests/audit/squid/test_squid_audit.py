"""Squid audit: every rule's fixtures (exact rule and line, accepted by `squid -k parse`,
closed by its own edits), the stock Debian config, includes and conditionals, bad input."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayguard.audit import audit_paths
from relayguard.audit.base import AuditOptions
from relayguard.audit.rules.squid import RULES
from relayguard.audit.squid import SquidAuditor, parse
from relayguard.errors import InputError
from relayguard.findings import Category, Severity
from tests.audit.proxytools import OUTSIDE, check_fixture, fixture_files, no_finding_above_info

FIXTURES = Path(__file__).parent / "fixtures"
REAL = Path(__file__).resolve().parents[3].parent / "shared/data/real-configs/squid/squid.conf"
AUDITOR = SquidAuditor()
OUT = AuditOptions(outside_client=ipaddress.ip_address(OUTSIDE))


@pytest.mark.parametrize("fixture", fixture_files(FIXTURES), ids=lambda p: p.name)
def test_fixture(fixture: Path, tmp_path: Path) -> None:
    check_fixture(AUDITOR, fixture, tmp_path, "squid.conf")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_rule_has_both_fixtures_and_runnable_examples(rule, tmp_path: Path) -> None:
    stem = rule.id.lower()
    assert (FIXTURES / f"{stem}.conf").is_file()
    assert (FIXTURES / f"{stem}_fp.conf").is_file()
    for kind, fires in (("bad", True), ("good", False)):
        conf = tmp_path / kind / "squid.conf"
        conf.parent.mkdir()
        conf.write_text(getattr(rule, kind), encoding="utf-8")
        result = AUDITOR.audit(conf, AuditOptions())
        assert result.errors == []
        assert (rule.id in {f.rule for f in result.findings}) is fires, (kind, result.findings)
        verdict = AUDITOR.config_test(conf)
        assert verdict is None or verdict[0], verdict


@pytest.mark.parametrize("path", [REAL, Path("/etc/squid/squid.conf")], ids=str)
def test_stock_debian_config_has_nothing_above_info(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path} not present")
    result = AUDITOR.audit(path, AuditOptions())
    no_finding_above_info(result)
    assert [f.rule for f in result.findings] == ["SQUID-PORT-EXPOSURE"]
    (p,) = result.facts["proxy_paths"]
    assert p["open_to_outside"] is False and p["clients"] == "loopback"
    assert 25 not in p["loopback_ports"]  # Safe_ports keeps the local MTA out


def test_stock_localnet_uncommented_is_not_called_broad(tmp_path: Path) -> None:
    """The stock `localnet` ACL (RFC 1918, CGN, link-local, ULA fc00::/7, fe80::/10) is a LAN:
    uncommenting the stock `http_access allow localnet` must not make it "(much of) the
    Internet" — IPv6 ULA and link-local prefixes are short but private."""
    text = REAL.read_text(encoding="utf-8")
    assert "#http_access allow localnet\n" in text
    conf = tmp_path / "squid.conf"
    conf.write_text(text.replace("#http_access allow localnet\n", "http_access allow localnet\n")
                    .replace("include /etc/squid/conf.d/*.conf\n", ""), encoding="utf-8")
    result = AUDITOR.audit(conf, OUT)
    assert result.errors == []
    assert [f for f in result.findings if f.rule == "SQUID-LOCALNET-BROAD"] == []
    assert not any(f.severity >= Severity.HIGH for f in result.findings), result.findings
    p = result.facts["proxy_paths"][0]
    assert p["open_to_outside"] is False and p["clients"] == "trusted"
    ok, out = AUDITOR.config_test(conf) or (True, "")
    assert ok, out


def test_open_proxy_reaching_smtp_is_critical_with_categories(tmp_path: Path) -> None:
    conf = tmp_path / "squid.conf"
    conf.write_text("http_port 127.0.7.1:3128\nhttp_access allow all\n", encoding="utf-8")
    result = AUDITOR.audit(conf, OUT)
    by_rule = {f.rule: f for f in result.findings}
    assert by_rule["SQUID-OPEN-HTTP-ACCESS"].category is Category.OPEN_HTTP_PROXY
    assert by_rule["SQUID-OPEN-CONNECT"].category is Category.OPEN_CONNECT_PROXY
    smtp = by_rule["SQUID-SAFE-PORTS-SMTP"]
    assert smtp.category is Category.SMTP_VIA_PROXY and smtp.severity is Severity.CRITICAL
    # the open-proxy findings keep the severity `relayguard rules` lists; SMTP is its own
    assert by_rule["SQUID-OPEN-HTTP-ACCESS"].severity is Severity.HIGH
    assert by_rule["SQUID-OPEN-CONNECT"].severity is Severity.HIGH
    assert smtp.location.line == 2
    assert result.facts["outside_verdicts"]["CONNECT 25"] is True
    (p,) = result.facts["proxy_paths"]
    assert p["open_to_outside"] and p["loopback_ports"] == [25, 80, 443, 465, 587]


def test_include_glob_and_conditionals_are_followed(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-open.conf").write_text("http_access allow all\n")
    (tmp_path / "conf.d" / "20-never.conf").write_text("http_access deny all\n")
    conf = tmp_path / "squid.conf"
    conf.write_text(
        "http_port 127.0.7.1:3128\n"
        "if ${process_number} = 2\n"
        "http_access deny all\n"
        "else\n"
        f"include {tmp_path}/conf.d/*.conf\n"
        "endif\n", encoding="utf-8")
    result = AUDITOR.audit(conf, OUT)
    assert result.errors == []
    f = next(f for f in result.findings if f.rule == "SQUID-OPEN-HTTP-ACCESS")
    assert (f.location.path, f.location.line) == (str(tmp_path / "conf.d/10-open.conf"), 1)
    assert len(result.files) == 3


def test_per_port_acls_make_only_one_listener_open(tmp_path: Path) -> None:
    conf = tmp_path / "squid.conf"
    conf.write_text("http_port 127.0.7.1:3128 name=lan\nhttp_port 127.0.7.1:8080\n"
                    "acl lanport myportname lan\nacl alt localport 8080\n"
                    "acl Safe_ports port 80 443\nhttp_access deny !Safe_ports\n"
                    "http_access deny alt\nhttp_access allow lanport\nhttp_access deny all\n",
                    encoding="utf-8")
    result = AUDITOR.audit(conf, OUT)
    assert result.errors == []
    opened = {p["listen"]: p["open_to_outside"] for p in result.facts["proxy_paths"]}
    assert opened == {"127.0.7.1:3128": True, "127.0.7.1:8080": False}
    f = next(f for f in result.findings if f.rule == "SQUID-OPEN-HTTP-ACCESS")
    assert f.location.line == 8


def test_squid3_style_builtin_redefinitions_are_accepted(tmp_path: Path) -> None:
    conf = tmp_path / "squid.conf"
    conf.write_text("http_port 3128\nacl manager proto cache_object\nacl all src all\n"
                    "acl localhost src 127.0.0.1/32 ::1\nacl Safe_ports port 80\n"
                    "http_access allow manager localhost\nhttp_access deny manager\n"
                    "http_access deny !Safe_ports\nhttp_access allow localhost\n"
                    "http_access deny all\n", encoding="utf-8")
    result = AUDITOR.audit(conf, AuditOptions())
    assert result.errors == []
    assert [f.rule for f in result.findings] == ["SQUID-PORT-EXPOSURE"]
    ok, out = AUDITOR.config_test(conf) or (True, "")
    assert ok, out


def test_multiline_acl_and_values_file(tmp_path: Path) -> None:
    (tmp_path / "nets.txt").write_text("# trusted\n10.0.0.0/8\n0.0.0.0/0\n")
    conf = tmp_path / "squid.conf"
    conf.write_text("http_port 3128\nacl lan src \\\n  192.168.0.0/16\n"
                    f'acl lan src "{tmp_path}/nets.txt"\n'
                    "http_access allow lan\nhttp_access deny all\n", encoding="utf-8")
    result = AUDITOR.audit(conf, AuditOptions())
    broad = [f for f in result.findings if f.rule == "SQUID-LOCALNET-BROAD"]
    assert [f.location.line for f in broad] == [4]
    assert any(f.rule == "SQUID-OPEN-HTTP-ACCESS" for f in result.findings)


@pytest.mark.parametrize(("text", "line", "needle"), [
    ("http_access allow nosuchacl\n", 1, "undefined acl"),
    ("acl x\n", 1, "name and a type"),
    ("http_access permit all\n", 1, "allow or deny"),
    ("http_port nope\n", 1, "not a valid port"),
    ("include /nonexistent/relayguard/*.conf\n", 1, "no such file"),
    ("endif\n", 1, "without a matching"),
    ("acl a src 10.0.0.0/8\nacl a port 80\n", 2, "already has type"),
])
def test_bad_input_is_an_error_entry_with_its_line(tmp_path: Path, text: str, line: int,
                                                    needle: str) -> None:
    conf = tmp_path / "squid.conf"
    conf.write_text(text, encoding="utf-8")
    result = AUDITOR.audit(conf, AuditOptions())
    assert any(e.line == line and needle in e.message and e.source == str(conf)
               for e in result.errors), result.errors


def test_implicit_allow_is_reported_at_its_catalogue_severity(tmp_path: Path) -> None:
    conf = tmp_path / "squid.conf"
    conf.write_text("http_port 3128\nacl blocked src 10.0.0.0/8\nhttp_access deny blocked\n")
    by_rule = {f.rule: f for f in AUDITOR.audit(conf, OUT).findings}
    assert by_rule["SQUID-IMPLICIT-ALLOW"].severity is Severity.HIGH
    assert by_rule["SQUID-SAFE-PORTS-SMTP"].severity is Severity.CRITICAL


def test_include_loop_is_one_error_and_findings_are_not_repeated(tmp_path: Path) -> None:
    conf, other = tmp_path / "squid.conf", tmp_path / "other.conf"
    conf.write_text(f"http_port 3128\ninclude {other}\nhttp_access allow all\n")
    other.write_text(f"include {conf}\n")
    result = AUDITOR.audit(conf, OUT)
    [err] = result.errors
    assert (err.source, err.line) == (str(other), 1) and "include loop" in err.message
    places = [(f.rule, str(f.location)) for f in result.findings]
    assert places and len(places) == len(set(places)), places
    assert result.files == [str(conf), str(other)]
    verdict = AUDITOR.config_test(conf)  # Squid itself refuses the loop
    assert verdict is None or verdict[0] is False


def test_unreadable_input_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        parse(tmp_path / "missing.conf")
    binary = tmp_path / "squid.conf"
    binary.write_bytes(b"http_port 3128\x00\xff")
    report = audit_paths([binary], server_type="squid")
    assert report.findings == () and "NUL" in report.errors[0].message


_WORDS = ["http_access", "allow", "deny", "all", "!all", "acl", "src", "port", "CONNECT",
          "localhost", "http_port", "3128", "if", "else", "endif", "include", "\\", "#",
          "0.0.0.0/0", "10.0.0.0/8", "1-65535", "method", "dstdomain", "follow_x_forwarded_for",
          "intercept", "x", '"', "::/0", "-i", "to_localhost", "proxy_auth", "REQUIRED"]


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=6)), max_size=6)
                .map(" ".join), max_size=12))
def test_fuzz_parser_never_crashes(tmp_path: Path, lines: list[str]) -> None:
    conf = tmp_path / "squid.conf"
    conf.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    report = audit_paths([conf], server_type="squid")  # never raises: errors are entries
    for f in report.findings:
        assert f.location.line is None or f.location.line >= 1
    for e in report.errors:
        assert e.source.endswith("squid.conf") or "include" in e.message
