"""The Apache launcher really starts httpd, proxies for strangers when told to, and stops."""

from __future__ import annotations

import pytest

from tests.servers import PROXY_MODULES, DaemonError, apache, http_canary, http_get, port_open

pytestmark = pytest.mark.server

HOST = "127.0.4.200"
CLIENT = "127.0.4.99"


def test_open_forward_proxy_reaches_canary_and_stops() -> None:
    with http_canary("127.0.4.201") as canary, apache(
        HOST, 18080, "ProxyRequests On\n", modules=PROXY_MODULES
    ) as httpd:
        url = f"http://{canary.host}:{canary.port}/nonce-abc"
        reply = http_get(httpd.host, httpd.port, url, source=CLIENT)
        assert reply.status == 200, httpd.diagnostics()
        assert reply.text == "canary /nonce-abc\n"
        hits = canary.wait_for("nonce-abc")
        # The kernel picks the egress address (127.0.0.1 on lo), not the Listen address.
        assert len(hits) == 1 and hits[0].peer[0].startswith("127.")
        assert f"{CLIENT} - - " in httpd.wait_log("access", CLIENT)
        workdir = httpd.workdir
    assert not port_open(HOST, 18080)
    assert not workdir.exists()


def test_origin_only_serves_index_and_refuses_to_proxy() -> None:
    with apache(HOST, 18081, "", index_html="hello\n") as httpd:
        assert http_get(HOST, 18081, "/", source=CLIENT).text == "hello\n"
        assert (httpd.extra["body"]).read_text() == ""


def test_bad_config_fails_fast_with_diagnostics() -> None:
    with pytest.raises(DaemonError, match="NoSuchDirective"), apache(
        HOST, 18082, "NoSuchDirective on\n"
    ):
        pass


def test_connect_tunnel_to_tcp_canary_from_chosen_source() -> None:
    from tests.servers import tcp_canary
    from tests.servers.http import connect

    with tcp_canary("127.0.4.201") as canary, apache(
        HOST, 18083, "ProxyRequests On\nAllowCONNECT 443\n",
        modules=PROXY_MODULES,
    ):
        # Stock AllowCONNECT-like list: the canary's random port is refused.
        with connect(HOST, 18083, CLIENT) as s:
            s.sendall(f"CONNECT {canary.host}:{canary.port} HTTP/1.0\r\n\r\n".encode())
            assert s.recv(4096).split(b"\r\n")[0].split()[1] == b"403"
        assert canary.hits == []
