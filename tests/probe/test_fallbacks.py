"""When the canary cannot listen on SMTP ports: say so, or use --smtp-check-target."""

from __future__ import annotations

import asyncio

import pytest

from relayguard.findings import Confidence
from relayguard.probe.context import ProbeOptions
from relayguard.probe.runner import run_probe
from relayguard.probe.targets import Target
from tests.servers import PROXY_MODULES, apache
from tests.servers.microsocks import microsocks
from tests.servers.postfix import postfix

pytestmark = pytest.mark.server

SCANNER = "127.0.4.99"


def test_smtp_check_target_banner_makes_connect_smtp_likely() -> None:
    with postfix("127.0.4.47", 2525), apache(
            "127.0.4.17", 8080, "ProxyRequests On\nAllowCONNECT 443 2525\n",
            modules=PROXY_MODULES):
        options = ProbeOptions(timeout=3.0, source=SCANNER, canary_host="127.0.4.10",
                               canary_smtp_ports=(), smtp_check_target=("127.0.4.47", 2525))
        report = asyncio.run(run_probe([Target("127.0.4.17", 8080)], options))
    assert report.errors == ()
    smtp = [f for f in report.findings if f.rule == "PROBE-CONNECT-SMTP"]
    assert len(smtp) == 1 and smtp[0].confidence is Confidence.LIKELY
    assert "220 mx.relayguard.test ESMTP" in smtp[0].evidence[0].text
    assert any("--smtp-check-target" in n for n in report.notes)
    assert {f.category.value for f in report.findings} == {
        "open-http-proxy", "open-connect-proxy", "smtp-via-proxy"}


def test_smtp_check_target_through_socks() -> None:
    with postfix("127.0.4.49", 2525), microsocks("127.0.4.18", 1080):
        options = ProbeOptions(timeout=3.0, source=SCANNER, canary_host="127.0.4.19",
                               canary_smtp_ports=(), smtp_check_target=("127.0.4.49", 2525))
        report = asyncio.run(run_probe([Target("127.0.4.18", 1080)], options))
    assert report.errors == ()
    by_rule = {f.rule: f for f in report.findings}
    assert set(by_rule) == {"PROBE-SOCKS5", "PROBE-SOCKS-SMTP"}
    assert by_rule["PROBE-SOCKS5"].confidence is Confidence.CONFIRMED
    assert by_rule["PROBE-SOCKS-SMTP"].confidence is Confidence.LIKELY


def test_no_smtp_canary_and_no_check_target_is_an_error_not_clean() -> None:
    options = ProbeOptions(timeout=1.0, source=SCANNER, canary_host="127.0.4.11",
                           canary_smtp_ports=(), ports=(1,))
    report = asyncio.run(run_probe([Target("127.0.4.32")], options))
    assert [e.source for e in report.errors] == ["canary"]
    assert "--smtp-check-target" in report.errors[0].message


def test_canary_falls_back_to_free_ports_and_says_so() -> None:
    async def main() -> tuple[list[str], int]:
        blocker = await asyncio.start_server(lambda r, w: None, "127.0.4.12", 8099)
        try:
            options = ProbeOptions(timeout=1.0, source=SCANNER, canary_host="127.0.4.12",
                                   canary_http_port=8099, ports=(1,))
            report = await run_probe([Target("127.0.4.33")], options)
        finally:
            blocker.close()
        return list(report.notes), report.stats["canary"]["http_port"]

    notes, port = asyncio.run(main())
    assert port not in (8099, 0)
    assert any("127.0.4.12:8099" in n and "using a free port instead" in n for n in notes)
