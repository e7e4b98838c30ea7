"""Runner behaviour that the server matrix does not show: IPv6, rate limit, canary address."""

from __future__ import annotations

import asyncio
import time

import pytest

from relayguard.probe.context import ProbeOptions
from relayguard.probe.runner import route_local_address, run_probe
from relayguard.probe.targets import Target
from tests.servers.base import free_port
from tests.servers.microsocks import microsocks


@pytest.mark.server
def test_ipv6_target_and_canary() -> None:
    port = free_port("::1")
    with microsocks("::1", port):
        options = ProbeOptions(timeout=2.0, source="::1", canary_host="::1",
                               canary_http_port=0, canary_raw_port=0, canary_smtp_ports=(0,))
        report = asyncio.run(run_probe([Target("::1", port)], options))
    assert report.errors == ()
    assert {f.rule for f in report.findings} == {"PROBE-SOCKS5", "PROBE-SOCKS-SMTP"}
    assert {f.target for f in report.findings} == {f"[::1]:{port}"}


def test_rate_limit_spaces_new_connections() -> None:
    options = ProbeOptions(timeout=1.0, source="127.0.4.99", canary_host="127.0.4.13",
                           ports=tuple(range(1, 11)), rate=20.0)
    started = time.monotonic()
    report = asyncio.run(run_probe([Target("127.0.4.34")], options))
    assert time.monotonic() - started >= 9 / 20
    assert report.stats["services"] == {"closed": 10}
    assert report.stats["connections"] == 10


def test_default_canary_host_is_the_local_end_of_the_route() -> None:
    assert route_local_address("127.0.4.35") == "127.0.0.1"
    # Free ports only: this canary sits on 127.0.0.1, which other tests may use.
    options = ProbeOptions(timeout=1.0, ports=(1,), canary_http_port=0, canary_raw_port=0,
                           canary_smtp_ports=(0,))
    report = asyncio.run(run_probe([Target("127.0.4.35")], options))
    assert report.stats["canary"]["host"] == "127.0.0.1"
