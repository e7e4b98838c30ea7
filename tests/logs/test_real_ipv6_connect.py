"""A tunnel to an IPv6 SMTP target through a real open Apache proxy: Apache logs
`CONNECT [::1]:2525`, and the incident's destination must say which address and which port
(`[::1]:2525`), not `::1:2525`, itself a valid IPv6 address with no port."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayguard.logs.analyze import analyse
from tests.servers import PROXY_MODULES, apache
from tests.servers.http import connect

pytestmark = pytest.mark.server

PROXY, SPAMMER = "127.0.5.115", "127.0.5.116"


@pytest.fixture(scope="module")
def tunnel_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keep = tmp_path_factory.mktemp("v6") / "access.log"
    # the far end only has to accept the tunnel: a second Apache, on [::1]
    with apache("::1", 2525) as far, \
            apache(PROXY, 18115, "ProxyRequests On\nAllowCONNECT 2525\n",
                   modules=PROXY_MODULES) as proxy:
        with connect(*proxy.address, SPAMMER) as s:
            s.sendall(b"CONNECT [::1]:2525 HTTP/1.0\r\n\r\n")
            head = s.recv(4096)
            assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
            s.sendall(b"EHLO spam.test\r\n\r\n")  # the far side answers it as HTTP
            s.recv(4096)
        far.wait_log("access", "EHLO")
        proxy.wait_log("access", "CONNECT [::1]:2525")
        keep.write_text(proxy.log("access"), encoding="utf-8")
    return keep


def test_ipv6_destination_keeps_its_brackets(tunnel_log: Path) -> None:
    report = analyse([str(tunnel_log)])
    (inc,) = [i for i in report.stats["incidents"] if i["kind"] == "proxy-smtp"]
    assert inc["destinations"] == [("[::1]:2525", 1)]
    assert inc["outcomes"] == {"relayed": 1} and inc["clients"] == [(SPAMMER, 1)]
