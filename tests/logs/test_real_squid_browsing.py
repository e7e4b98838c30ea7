"""A Squid doing its ordinary job: a real Squid tunnels a browser's HTTPS (CONNECT to 443)
and fetches a page for it. Its access log holds nothing but proxying, which is what a
forward proxy is for; only tunnels and fetches to SMTP ports are relay abuse there. HTTPS
tunnels were reported as `LOGS-PROXY-CONNECT` (high), "relayed", for every site visited."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from relayguard.logs.analyze import analyse
from tests.logs.test_real_servers import _wait_log
from tests.servers import http_canary, http_get, tcp_canary
from tests.servers.squid import squid

pytestmark = pytest.mark.server

PROXY, SITE, BROWSER = "127.0.5.111", "127.0.5.112", "127.0.5.113"


def _https_tunnel(proxy: tuple[str, int], target: str) -> bytes:
    """CONNECT through the proxy and read what the far side says first (its banner)."""
    with socket.create_connection(proxy, timeout=10, source_address=(BROWSER, 0)) as s:
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        reply = b""
        for _ in range(50):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
            if b"\r\n\r\n" in reply and reply.count(b"\n") > 3:
                break
        return reply


@pytest.fixture(scope="module")
def browsing_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keep = tmp_path_factory.mktemp("squid-browsing") / "access.log"
    with tcp_canary(SITE, 443, banner=b"TLS-ish hello\r\n") as tls, http_canary(SITE) as web, \
            squid(PROXY, 3128, "http_access allow all\n") as proxy:
        reply = _https_tunnel(proxy.address, f"{SITE}:443")
        assert reply.startswith(b"HTTP/1.1 200"), reply
        assert tls.hits
        assert http_get(proxy.host, proxy.port, f"http://{SITE}:{web.port}/news",
                        source=BROWSER).status == 200
        _wait_log(lambda: proxy.log("access"), "TCP_TUNNEL/200", 1)
        _wait_log(lambda: proxy.log("access"), "/news", 1)
        keep.write_text(proxy.log("access"), encoding="utf-8")
    return keep


def test_https_tunnels_of_a_forward_proxy_are_its_job(browsing_log: Path) -> None:
    report = analyse([str(browsing_log)])
    assert report.stats["by_format"].get("squid", 0) >= 2
    assert report.findings == () and report.stats["incidents"] == []
