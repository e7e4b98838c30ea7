"""Runner behaviour that the server matrix does not show: IPv6, rate limit, per-host cap,
canary address."""

from __future__ import annotations

import asyncio
import contextlib
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


async def _max_concurrent(host: str, ports: tuple[int, ...], per_host: int) -> tuple[int, int]:
    """Probe `ports` of a loopback server that holds each connection 0.2 s before refusing
    to proxy (403); the most connections it ever had open at once, and the total."""
    now = peak = total = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal now, peak, total
        now += 1
        total += 1
        peak = max(peak, now)
        try:
            with contextlib.suppress(Exception):
                await asyncio.sleep(0.2)
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                await writer.drain()
                writer.close()
        finally:
            now -= 1

    servers = [await asyncio.start_server(handler, host, port) for port in ports]
    try:
        options = ProbeOptions(timeout=2.0, banner_wait=0.05, source="127.0.4.99",
                               canary_host="127.0.4.82", canary_http_port=0,
                               canary_raw_port=0, canary_smtp_ports=(0,), per_host=per_host,
                               concurrency=64)
        report = await run_probe([Target(host, port) for port in ports], options)
    finally:
        for s in servers:
            s.close()
    assert report.errors == () and report.findings == ()
    assert report.stats["services"] == {"http": len(ports)}
    return peak, total


@pytest.mark.parametrize("per_host", [1, 2, 3])
def test_per_host_caps_the_connections_one_host_sees_at_once(per_host: int) -> None:
    started = time.monotonic()
    peak, total = asyncio.run(_max_concurrent("127.0.4.81", (18081, 18082, 18083), per_host))
    assert peak == per_host, (peak, total)
    assert total >= 12  # several checks per port, so the cap really had work to hold back
    assert time.monotonic() - started < 30


def test_without_a_tight_per_host_cap_the_same_server_sees_more_at_once() -> None:
    """The counting server can see parallel connections: the cap above is what limits them."""
    peak, _ = asyncio.run(_max_concurrent("127.0.4.83", (18081, 18082, 18083), 16))
    assert peak > 3, peak


@pytest.mark.server
def test_per_host_1_never_waits_on_itself() -> None:
    """With one connection per host, no check may hold a connection while it waits for
    another: an MTA's first session rides on the identifying connection and the other
    sessions need it closed; a SOCKS5 server that wants credentials is asked which ones on a
    second connection; a proxy's SMTP CONNECTs share one. Each must finish promptly."""
    from tests.servers import PROXY_MODULES, apache
    from tests.servers.postfix import postfix

    with postfix("127.0.4.98", 2525, "mynetworks = 127.0.0.0/8\n"), \
            microsocks("127.0.4.94", 1080, user="u", password="p"), \
            apache("127.0.4.95", 8080, "ProxyRequests On\n", modules=PROXY_MODULES):
        options = ProbeOptions(timeout=2.0, source="127.0.4.99", canary_host="127.0.4.96",
                               per_host=1)
        started = time.monotonic()
        report = asyncio.run(run_probe([Target("127.0.4.98", 2525), Target("127.0.4.94", 1080),
                                        Target("127.0.4.95", 8080)], options))
        elapsed = time.monotonic() - started
    assert report.errors == ()
    assert {(f.location.host, f.category.value) for f in report.findings} == {
        ("127.0.4.98", "open-smtp-relay"), ("127.0.4.95", "open-http-proxy"),
        ("127.0.4.95", "open-connect-proxy"), ("127.0.4.95", "smtp-via-proxy")}
    assert any("127.0.4.94:1080" in n and "username/password" in n for n in report.notes)
    assert elapsed < 10, elapsed  # a self-wait lasts until the per-port deadline (120 s)
