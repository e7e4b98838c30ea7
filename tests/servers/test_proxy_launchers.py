"""Each proxy launcher starts the real daemon with the test's policy, and stops it."""

from __future__ import annotations

import pytest

from tests.servers.base import port_open
from tests.servers.dante import danted, restricted_rules
from tests.servers.http import http_canary, http_get, tcp_canary
from tests.servers.microsocks import microsocks
from tests.servers.privoxy import privoxy
from tests.servers.socks import socks4_connect, socks5_connect
from tests.servers.squid import STOCK_ACCESS, squid
from tests.servers.tinyproxy import tinyproxy

pytestmark = pytest.mark.server

CLIENT = "127.0.4.99"
CANARY = "127.0.4.202"


@pytest.fixture(scope="module")
def canary():
    with http_canary(CANARY) as c:
        yield c


def via_proxy(host: str, port: int, canary, nonce: str) -> int:
    url = f"http://{canary.host}:{canary.port}/{nonce}"
    return http_get(host, port, url, source=CLIENT).status


@pytest.mark.parametrize(("access", "status", "reached"), [
    (STOCK_ACCESS, 403, False),
    ("http_access allow all\n", 200, True),
])
def test_squid(canary, access: str, status: int, reached: bool) -> None:
    with squid("127.0.4.203", 13128, access) as proxy:
        nonce = f"squid-{status}"
        assert via_proxy(proxy.host, proxy.port, canary, nonce) == status, proxy.diagnostics()
        assert bool(canary.wait_for(nonce, 1.0 if reached else 0.3)) is reached
        assert f"{CLIENT} " in proxy.wait_log("access", f"{CLIENT} ")
    assert not port_open("127.0.4.203", 13128)


@pytest.mark.parametrize(("body", "status", "reached"), [
    ("Allow 127.0.0.1\n", 403, False),
    ("", 200, True),
])
def test_tinyproxy(canary, body: str, status: int, reached: bool) -> None:
    with tinyproxy("127.0.4.204", 18888, body) as proxy:
        nonce = f"tiny-{status}"
        assert via_proxy(proxy.host, proxy.port, canary, nonce) == status, proxy.diagnostics()
        assert bool(canary.wait_for(nonce, 1.0 if reached else 0.3)) is reached


def test_privoxy_without_permit_access_forwards_for_anyone(canary) -> None:
    with privoxy("127.0.4.205", 18118) as proxy:
        assert via_proxy(proxy.host, proxy.port, canary, "privoxy-1") == 200, \
            proxy.diagnostics()
        assert canary.wait_for("privoxy-1")


def test_microsocks_open_and_with_password() -> None:
    with tcp_canary(CANARY) as smtp:
        with microsocks("127.0.4.206", 11080) as socks:
            code, s = socks5_connect(socks.host, socks.port, smtp.host, smtp.port,
                                     source=CLIENT)
            assert code == 0 and s is not None
            with s:
                assert s.recv(100).startswith(b"220 ")
        with microsocks("127.0.4.206", 11081, user="u", password="p") as socks:
            assert socks5_connect(socks.host, socks.port, smtp.host, smtp.port,
                                  source=CLIENT)[0] == 0xFF
            code, s = socks5_connect(socks.host, socks.port, smtp.host, smtp.port,
                                     source=CLIENT, user="u", password="p")
            assert code == 0 and s is not None
            s.close()


def test_danted_open_and_restricted() -> None:
    with tcp_canary(CANARY) as smtp:
        with danted("127.0.4.207", 11082) as socks:
            code, s = socks4_connect(socks.host, socks.port, smtp.host, smtp.port,
                                     source=CLIENT)
            assert code == 0x5A and s is not None, socks.diagnostics()
            s.close()
        with danted("127.0.4.207", 11083, restricted_rules("127.0.0.1/32")) as socks, \
                pytest.raises(ConnectionError):
            socks5_connect(socks.host, socks.port, smtp.host, smtp.port, source=CLIENT)
