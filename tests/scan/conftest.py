"""Real servers in known states for `scan` tests, all on 127.0.10.0/24 (this suite's range).

- OPEN (127.0.10.10): Apache with the incident's open forward proxy (CONNECT to 25 allowed) on
  :8080 and a Postfix that trusts loopback on :25; spam already went through (in the logs);
  an rbldnsd at 127.0.10.5 serves DroneBL's zone (the catalogue's codes) and lists its
  "public address" 11.22.33.44 as an open HTTP proxy (DroneBL 9), and Spamhaus DBL's zone
  listing the mail domain client-one.zz as a spam domain.
- CLOSED (127.0.10.20): Apache serving pages only (`ProxyRequests Off`) on :8080 and a Postfix
  that trusts only 127.0.0.1 on :25; nothing listed.
Session-scoped: each daemon starts once and is always stopped.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.blocklist.blocklist_servers import Rbldnsd, start_rbldnsd, stop_rbldnsd
from tests.servers.apache import PROXY_MODULES, apache
from tests.servers.base import Daemon
from tests.servers.postfix import postfix

OPEN_IP, CLOSED_IP, DNS_IP = "127.0.10.10", "127.0.10.20", "127.0.10.5"
UNREACHABLE_IP = "127.0.10.99"  # nothing ever listens here
WEB, SMTP = 8080, 25
LISTED = "11.22.33.44"  # the open host's "public address", listed by the test DNSBL
ZONE = "dnsbl.dronebl.org"  # served by the local rbldnsd only, never asked of the world
OPEN_BODY = ("ProxyRequests On\nAllowCONNECT 443 25\n<Proxy \"*\">\n    Require all granted\n"
             "</Proxy>\n")
CLOSED_BODY = "ProxyRequests Off\n"
DBL_ZONE = "dbl.spamhaus.org"  # also only ever asked of the local rbldnsd
LISTED_DOMAIN = "client-one.zz"  # .zz: no such TLD, but not a reserved one either
DBL = f"""\
:127.0.1.2:DBL listing $
dbltest.com
{LISTED_DOMAIN} :127.0.1.2:spam domain
"""
DNSBL = """\
:127.0.0.2:Listed: see http://lookup.example/?ip=$
127.0.0.2
11.22.33.44 :127.0.0.9:open proxy on port 8080 relaying spam
"""


@dataclass
class Host:
    """One host in a known state: its daemons and what to tell `scan` about it."""

    address: str
    web: Daemon
    mta: Daemon

    @property
    def configs(self) -> list[Path]:
        return [self.web.config, Path(str(self.mta.extra["conf_dir"]))]

    @property
    def logs(self) -> list[str]:
        """Snapshots taken before any scan, so every scan reads the same logs (the scans'
        own probes land in the live access log)."""
        return [str(self.web.workdir / "access.snapshot.log"),
                str(self.mta.workdir / "mail.snapshot.log")]

    def snapshot(self) -> None:
        for daemon, name, snap in ((self.web, "access", "access.snapshot.log"),
                                   (self.mta, "mail", "mail.snapshot.log")):
            (daemon.workdir / snap).write_text(daemon.log(name))

    def cli_args(self) -> list[str]:
        args = [self.address, "--ports", f"{SMTP},{WEB}"]
        for c in self.configs:
            args += ["--config", str(c)]
        for log in self.logs:
            args += ["--log", log]
        return args


def spam_through(proxy: tuple[str, int], mx: tuple[str, int], source: str) -> str:
    """What the incident's spammers did: CONNECT mx:25, EHLO, MAIL, RCPT (never DATA)."""
    with socket.create_connection(proxy, timeout=5, source_address=(source, 0)) as s, \
            s.makefile("rwb") as f:
        f.write(f"CONNECT {mx[0]}:{mx[1]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        f.flush()
        status = f.readline().decode()
        while f.readline().strip():
            pass
        if " 200 " not in status:
            return status
        f.readline()
        last = ""
        for cmd in ("EHLO spam.example", "MAIL FROM:<a@spam.example>", "RCPT TO:<v@victim.test>",
                    "QUIT"):
            f.write(cmd.encode() + b"\r\n")
            f.flush()
            for _ in range(20):
                line = f.readline().decode()
                if line[3:4] != "-":
                    break
            last = last or (line if cmd.startswith("RCPT") else "")
        return last


@pytest.fixture(scope="session")
def open_host() -> Iterator[Host]:
    with postfix(OPEN_IP, SMTP, "mynetworks = 127.0.0.0/8\n"
                 "default_transport = discard:test\nrelay_transport = discard:test\n") as mta, \
            apache(OPEN_IP, WEB, OPEN_BODY, modules=PROXY_MODULES) as web:
        for i in range(3):  # the abuse that is already in the logs before anyone scans
            reply = spam_through((OPEN_IP, WEB), (OPEN_IP, SMTP), f"127.0.10.{60 + i}")
            assert reply.startswith("250"), (reply, mta.diagnostics())
        time.sleep(0.3)
        host = Host(OPEN_IP, web, mta)
        host.snapshot()
        yield host


@pytest.fixture(scope="session")
def closed_host() -> Iterator[Host]:
    with postfix(CLOSED_IP, SMTP, "mynetworks = 127.0.0.1/32\n") as mta, \
            apache(CLOSED_IP, WEB, CLOSED_BODY, modules=PROXY_MODULES) as web:
        host = Host(CLOSED_IP, web, mta)
        host.snapshot()
        yield host


@pytest.fixture(scope="session")
def dnsbl() -> Iterator[Rbldnsd]:
    server = start_rbldnsd(DNS_IP, [(ZONE, "ip4set", DNSBL), (DBL_ZONE, "dnset", DBL)])
    try:
        yield server
    finally:
        stop_rbldnsd(server)


def blocklist_args(server: Rbldnsd, address: str = LISTED) -> list[str]:
    return ["--public-address", address, "--resolver", f"{server.host}:{server.port}",
            "--zones", ZONE]
