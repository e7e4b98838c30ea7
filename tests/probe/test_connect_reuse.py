"""Refused CONNECTs to the SMTP ports share one kept-alive connection, and a proxy that
closes it anyway still gets every port tried on a new one (no error, no lost check)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from relayguard.probe.context import ProbeOptions
from relayguard.probe.runner import run_probe
from relayguard.probe.targets import Target
from tests.servers import PROXY_MODULES, apache

SCANNER = "127.0.4.99"
CANARY = "127.0.4.87"
APACHE = "127.0.4.88"
CLOSER = "127.0.4.89"


@pytest.mark.server
def test_stock_apache_refuses_all_smtp_connects_on_one_connection(tmp_path: Path) -> None:
    # %k: requests already served on this connection; %{remote}p: the scanner's port.
    log = tmp_path / "apache" / "reuse.log"
    body = ('ProxyRequests On\nLogFormat "%r|%>s|%{remote}p|%k" reuse\n'
            f'CustomLog "{log}" reuse\n')
    (tmp_path / "apache").mkdir()
    with apache(APACHE, 8080, body, modules=PROXY_MODULES, workdir=tmp_path / "apache"):
        options = ProbeOptions(timeout=3.0, source=SCANNER, canary_host=CANARY)
        report = asyncio.run(run_probe([Target(APACHE, 8080)], options))
        lines = _logged(log, 3)
    assert report.errors == ()
    assert {f.category.value for f in report.findings} == {
        "open-http-proxy", "open-connect-proxy", "smtp-via-proxy"}
    smtp = {int(m.group(1)): line.split("|") for line in lines
            if (m := re.match(rf"CONNECT {re.escape(CANARY)}:(\d+) ", line))
            and m.group(1) != "443"}
    assert sorted(smtp) == [25, 465, 587]
    assert {fields[1] for fields in smtp.values()} == {"403"}
    assert len({fields[2] for fields in smtp.values()}) == 1  # one scanner socket
    assert [int(smtp[p][3]) for p in (25, 465, 587)] == [0, 1, 2]
    # Banner/GET, Host-header GET, CONNECT 443, HTTP to port 25, the three SMTP CONNECTs.
    assert report.stats["connections"] == 5


def _logged(log: Path, smtp_connects: int) -> list[str]:
    """The access log once it holds `smtp_connects` CONNECTs to SMTP ports (at most 5 s):
    Apache writes a request's line after answering it, so the probe can be done a moment
    before the last line is there (a CI run once read the log without the CONNECT to 587)."""
    deadline = time.monotonic() + 5
    while True:
        lines = log.read_text().splitlines() if log.exists() else []
        found = sum(1 for line in lines if re.match(rf"CONNECT {re.escape(CANARY)}:(25|465|587) ",
                                                    line))
        if found >= smtp_connects or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


async def _closing_proxy(seen: list[str], reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
    """Refuses every request with an HTTP/1.1 403 that looks reusable, then hangs up."""
    try:
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0].decode())
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope\n")
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


def test_a_proxy_that_closes_after_a_refusal_still_gets_every_port_tried() -> None:
    seen: list[str] = []

    async def main() -> object:
        server = await asyncio.start_server(
            lambda r, w: _closing_proxy(seen, r, w), CLOSER, 8080)
        async with server:
            options = ProbeOptions(timeout=2.0, source=SCANNER, canary_host=CANARY)
            return await run_probe([Target(CLOSER, 8080)], options)

    report = asyncio.run(main())
    assert report.errors == ()  # type: ignore[attr-defined]
    assert report.findings == ()  # type: ignore[attr-defined]
    connects = sorted(int(line.split()[1].rsplit(":", 1)[1]) for line in seen
                      if line.startswith("CONNECT "))
    assert connects == [25, 443, 465, 587]
