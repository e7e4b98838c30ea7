"""`relayguard probe` against real daemons on loopback: each gets exactly the right categories.

Every server runs from its Debian package with a config written here, on its own 127.0.4.x
address; the probe comes from 127.0.4.99, an address none of them trusts, and its canary
listens on 127.0.4.2 (HTTP 80, raw 443, SMTP 25/465/587). One probe run covers all targets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from relayguard.findings import Confidence, Report
from relayguard.probe.context import ProbeOptions
from relayguard.probe.runner import run_probe
from relayguard.probe.targets import Target
from tests.servers import PROXY_MODULES, apache
from tests.servers.dante import OPEN_RULES, danted, restricted_rules
from tests.servers.microsocks import microsocks
from tests.servers.postfix import postfix
from tests.servers.privoxy import privoxy
from tests.servers.squid import STOCK_ACCESS, squid
from tests.servers.tinyproxy import STOCK_BODY, tinyproxy

pytestmark = pytest.mark.server

SCANNER = "127.0.4.99"
CANARY = "127.0.4.2"

HTTP = "open-http-proxy"
CONNECT = "open-connect-proxy"
SMTP_VIA = "smtp-via-proxy"
SOCKS = "open-socks-proxy"
RELAY = "open-smtp-relay"

RESTRICTED_24 = '<Proxy "*">\n    Require ip 127.0.0.1\n</Proxy>\n'
RESTRICTED_22 = ('<Proxy "*">\n    Order deny,allow\n    Deny from all\n'
                 '    Allow from 127.0.0.1\n</Proxy>\n')
SQUID_ALLOW_ALL = STOCK_ACCESS.replace("http_access deny all\n", "http_access allow all\n")

# name -> (address, port, expected categories, expected rule ids or None to skip that check)
EXPECTED: dict[str, tuple[str, int, set[str], set[str] | None]] = {
    "apache-open": ("127.0.4.10", 8080, {HTTP, CONNECT, SMTP_VIA},
                    {"PROBE-HTTP-ABSOLUTE-URI", "PROBE-CONNECT", "PROBE-HTTP-SMTP"}),
    "apache-allowconnect-25": ("127.0.4.11", 8080, {HTTP, CONNECT, SMTP_VIA},
                               {"PROBE-HTTP-ABSOLUTE-URI", "PROBE-CONNECT",
                                "PROBE-CONNECT-SMTP", "PROBE-HTTP-SMTP"}),
    "apache-require-ip": ("127.0.4.12", 8080, set(), set()),
    "apache-order-deny-allow": ("127.0.4.13", 8080, set(), set()),
    "apache-reverse-only": ("127.0.4.14", 8080, set(), set()),
    "apache-rewrite-host": ("127.0.4.15", 8080, {HTTP, SMTP_VIA}, None),
    "squid-stock": ("127.0.4.20", 3128, set(), set()),
    "squid-allow-all": ("127.0.4.21", 3128, {HTTP, CONNECT},
                        {"PROBE-HTTP-ABSOLUTE-URI", "PROBE-CONNECT"}),
    "tinyproxy-stock": ("127.0.4.22", 8888, set(), set()),
    "tinyproxy-no-allow": ("127.0.4.23", 8888, {HTTP, CONNECT, SMTP_VIA}, None),
    "privoxy": ("127.0.4.24", 8118, {HTTP, CONNECT, SMTP_VIA}, None),
    "danted-open": ("127.0.4.25", 1080, {SOCKS, SMTP_VIA},
                    {"PROBE-SOCKS4", "PROBE-SOCKS5", "PROBE-SOCKS-SMTP"}),
    "danted-restricted": ("127.0.4.26", 1080, set(), set()),
    "microsocks-open": ("127.0.4.27", 1080, {SOCKS, SMTP_VIA},
                        {"PROBE-SOCKS5", "PROBE-SOCKS-SMTP"}),
    "microsocks-auth": ("127.0.4.28", 1080, set(), set()),
    "postfix-mynetworks": ("127.0.4.40", 2525, {RELAY}, {"PROBE-SMTP-RELAY"}),
    "postfix-client-access": ("127.0.4.41", 2525, {RELAY}, {"PROBE-SMTP-RELAY"}),
    "postfix-stock": ("127.0.4.42", 2525, set(), set()),
}


@contextlib.contextmanager
def all_servers() -> Iterator[None]:
    e = EXPECTED
    with contextlib.ExitStack() as stack:
        def start(cm: contextlib.AbstractContextManager[object]) -> None:
            stack.enter_context(cm)

        def a(name: str, body: str, modules: tuple[str, ...] = PROXY_MODULES) -> None:
            start(apache(e[name][0], e[name][1], body, modules=modules))

        a("apache-open", "ProxyRequests On\n")
        a("apache-allowconnect-25", "ProxyRequests On\nAllowCONNECT 25 443\n")
        a("apache-require-ip", "ProxyRequests On\n" + RESTRICTED_24)
        a("apache-order-deny-allow", "ProxyRequests On\n" + RESTRICTED_22)
        a("apache-reverse-only", 'ProxyRequests Off\nProxyPass "/app/" "http://127.0.4.16:9/"\n')
        a("apache-rewrite-host", "RewriteEngine On\n"
          "RewriteRule ^/(.*) http://%{HTTP_HOST}/$1 [P]\n", (*PROXY_MODULES, "rewrite"))
        start(squid(*e["squid-stock"][:2], STOCK_ACCESS))
        start(squid(*e["squid-allow-all"][:2], SQUID_ALLOW_ALL))
        start(tinyproxy(*e["tinyproxy-stock"][:2], STOCK_BODY))
        start(tinyproxy(*e["tinyproxy-no-allow"][:2], ""))
        start(privoxy(*e["privoxy"][:2]))
        start(danted(*e["danted-open"][:2], OPEN_RULES))
        start(danted(*e["danted-restricted"][:2], restricted_rules("127.0.0.1/32")))
        start(microsocks(*e["microsocks-open"][:2]))
        start(microsocks(*e["microsocks-auth"][:2], user="relay", password="guard"))
        start(postfix(*e["postfix-mynetworks"][:2], "mynetworks = 127.0.0.0/8\n"))
        start(postfix(*e["postfix-client-access"][:2],
                      "mynetworks = 127.0.0.1/32\nsmtpd_relay_restrictions = permit_mynetworks,"
                      " check_client_access cidr:${config_directory}/clients.cidr,"
                      " reject_unauth_destination\n",
                      files={"clients.cidr": "127.0.0.0/8 OK\n"}))
        start(postfix(*e["postfix-stock"][:2]))
        yield


@pytest.fixture(scope="module")
def report() -> Report:
    with all_servers():
        options = ProbeOptions(timeout=3.0, source=SCANNER, canary_host=CANARY)
        targets = [Target(addr, port) for addr, port, _, _ in EXPECTED.values()]
        return asyncio.run(run_probe(targets, options))


def _for(report: Report, name: str) -> list:
    addr, port = EXPECTED[name][:2]
    return [f for f in report.findings
            if f.location.host == addr and f.location.port == port]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_exact_categories(report: Report, name: str) -> None:
    addr, port, categories, rule_ids = EXPECTED[name]
    found = _for(report, name)
    assert {f.category.value for f in found} == categories, (
        name, [(f.rule, f.title) for f in found], report.notes)
    if rule_ids is not None:
        assert {f.rule for f in found} == rule_ids, name
    errors = [e for e in report.errors if e.source == f"{addr}:{port}"]
    assert errors == [], errors


@pytest.mark.parametrize("name", [n for n, v in EXPECTED.items() if v[2] - {RELAY}])
def test_proxy_findings_are_canary_confirmed_with_transcripts(report: Report, name: str) -> None:
    for f in _for(report, name):
        assert f.confidence is Confidence.CONFIRMED, f
        kinds = [e.kind for e in f.evidence]
        assert "transcript" in kinds and "note" in kinds
        assert any("received nonce rg" in e.text for e in f.evidence if e.kind == "note")


def test_smtp_relay_is_likely_without_delivery(report: Report) -> None:
    (f,) = _for(report, "postfix-mynetworks")
    assert f.confidence is Confidence.LIKELY
    transcript = "\n".join(e.text for e in f.evidence if e.kind == "transcript")
    assert "RCPT TO:<relaytest@relayguard.invalid>" in transcript
    assert "DATA" not in transcript
    assert "/20 relay tricks" in f.title


def test_no_errors_and_every_service_identified(report: Report) -> None:
    assert report.errors == ()
    services = report.stats["services"]
    assert services.get("http") == 11  # 6 apache, 2 squid, 2 tinyproxy, privoxy
    assert services.get("smtp") == 3
    assert services.get("socks5") == 2  # microsocks (open, auth)
    assert services.get("socks5+socks4") == 1  # danted open
    assert services.get("refuses") == 1  # danted restricted closes at once


def test_auth_required_socks_is_a_note_not_a_finding(report: Report) -> None:
    addr, port = EXPECTED["microsocks-auth"][:2]
    (note,) = [n for n in report.notes
               if n.startswith(f"{addr}:{port}: SOCKS5 requires authentication")]
    # microsocks -u/-P refuses 'no authentication' (0xff) and names what it wants instead.
    assert "server chose 0xff (no acceptable method)" in note, note
    assert "it chose 0x02 (username/password)" in note, note
