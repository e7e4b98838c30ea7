"""CROSS-PROXY-TO-LOCAL-MTA needs a raw tunnel to the MTA's own port, not to any port.

A real Postfix on 127.0.11.22:25 trusts 127.0.0.0/8 (Debian's stock `mynetworks`). A real Squid
or tinyproxy that tunnels only to 443 reaches port 25 with plain HTTP alone, whose request
line Postfix drops as a non-SMTP command: no chain, and the audit must not claim one. The
same proxies without the port limit tunnel to 25 and the stranger's RCPT is accepted: the
audit reports the chain once, as both smtp-via-proxy and open-smtp-relay.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from relayguard.audit import run_audit
from relayguard.audit.base import AuditOptions
from relayguard.findings import Severity
from tests.audit.proxytools import read_until
from tests.servers import Daemon, free_port
from tests.servers.postfix import postfix
from tests.servers.squid import squid
from tests.servers.tinyproxy import tinyproxy

pytestmark = [pytest.mark.server,
              pytest.mark.skipif(shutil.which("postfix") is None, reason="postfix not installed")]

MTA = "127.0.11.22"
STRANGER = "127.0.11.250"
STOCK_MYNETWORKS = "mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128\n"
OPTIONS = AuditOptions(outside_client=ipaddress.ip_address(STRANGER))

Launcher = Callable[..., AbstractContextManager[Daemon]]
CASES: dict[str, tuple[str, Launcher, str, bool]] = {
    # name: (proxy host, launcher, config part, does the stranger relay through it?)
    "squid-connect-443-only": ("127.0.11.1", squid, "acl SSL_ports port 443\n"
                               "http_access deny CONNECT !SSL_ports\nhttp_access allow all\n",
                               False),
    "squid-allow-all": ("127.0.11.1", squid, "http_access allow all\n", True),
    "tinyproxy-connectport-443": ("127.0.11.2", tinyproxy, "ConnectPort 443\n", False),
    "tinyproxy-open": ("127.0.11.2", tinyproxy, "", True),
}


@pytest.fixture(scope="module")
def mta() -> Iterator[Daemon]:
    workdir = Path(tempfile.mkdtemp(prefix="rg-audit-tunnel-postfix-"))
    try:
        with postfix(MTA, 25, STOCK_MYNETWORKS, workdir=workdir) as d:
            yield d
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _reply(s: socket.socket) -> str:
    """One SMTP reply (the last line of a multi-line one); '' if the peer went quiet."""
    buf = ""
    for _ in range(20):  # bounded: an EHLO reply has a dozen lines at most
        chunk = read_until(s, b"\r\n", 5.0).decode("ascii", "replace")
        if not chunk:
            break
        buf += chunk
        done = [ln for ln in buf.split("\r\n") if ln[3:4] == " "]
        if done and buf.endswith("\r\n"):
            return done[-1]
    return buf.strip()


def rcpt_through_connect(host: str, port: int) -> str:
    """The stranger's CONNECT to the MTA's port 25, then SMTP up to RCPT: the last reply."""
    with socket.create_connection((host, port), timeout=5, source_address=(STRANGER, 0)) as s:
        s.sendall(f"CONNECT {MTA}:25 HTTP/1.1\r\nHost: {MTA}:25\r\n\r\n".encode())
        head = read_until(s, b"\r\n\r\n", 5.0)
        if head.split(b" ", 2)[1:2] != [b"200"]:
            return head.decode("ascii", "replace").split("\r\n")[0]
        last = _reply(s)  # banner
        for cmd in ("EHLO client.outside.example", "MAIL FROM:<someone@outside.example>",
                    "RCPT TO:<victim@relay-target.example>"):
            s.sendall(f"{cmd}\r\n".encode())
            last = _reply(s)
        return last


def smtp_through_http(host: str, port: int) -> None:
    """The stranger's HTTP POST to http://MTA:25/ with an SMTP dialogue as body."""
    body = ("EHLO client.outside.example\r\nMAIL FROM:<someone@outside.example>\r\n"
            "RCPT TO:<victim@relay-target.example>\r\n")
    with socket.create_connection((host, port), timeout=5, source_address=(STRANGER, 0)) as s:
        s.sendall(f"POST http://{MTA}:25/ HTTP/1.1\r\nHost: {MTA}:25\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode())
        read_until(s, b"\r\n\r\n", 5.0)


@pytest.mark.parametrize("name", CASES)
def test_chain_only_through_a_tunnel_to_the_mta_port(name: str, mta: Daemon) -> None:
    host, launcher, conf, chained = CASES[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"rg-audit-tunnel-{name}-"))
    try:
        with launcher(host, free_port(host), conf, workdir=workdir) as proxy:
            reply = rcpt_through_connect(host, proxy.port)
            assert reply.startswith("250") is chained, (reply, mta.diagnostics())
            if not chained:
                seen = len(mta.log("mail"))
                smtp_through_http(host, proxy.port)
                log = mta.wait_log("mail", "non-SMTP command", timeout=5.0)[seen:]
                # port 25 is reachable, but only by plain HTTP, which Postfix drops
                assert "non-SMTP command" in log and "rcpt=1" not in log, log
            report, _ = run_audit([proxy.config, Path(str(mta.extra["conf_dir"]))],
                                  options=OPTIONS)
        cross = [f for f in report.findings if f.rule == "CROSS-PROXY-TO-LOCAL-MTA"]
        if chained:
            [f] = cross
            assert f.severity == Severity.CRITICAL
            assert [c.value for c in f.categories] == ["smtp-via-proxy", "open-smtp-relay"]
        else:
            assert cross == [], [f.title for f in cross]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
