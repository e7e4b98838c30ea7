"""Launch a real Debian Squid (`squid -N`, foreground, no disk cache) on host:port.

    with squid("127.0.4.20", 3128, STOCK_ACCESS) as proxy: ...
    with squid("127.0.4.21", 3128, "http_access allow all\\n") as proxy: ...

`access` is the ACL / http_access section, written verbatim; STOCK_ACCESS is Debian's stock
squid.conf rules (Safe_ports, SSL_ports, `localhost` = 127.0.0.1 only, deny all). Logs:
"access" and "cache". `shutdown_lifetime 0` makes the stop immediate.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tests.servers.base import Daemon, make_workdir, run_daemon

# Debian 12's /etc/squid/squid.conf access rules, minus the conf.d include.
STOCK_ACCESS = """\
acl localnet src 0.0.0.1-0.255.255.255
acl localnet src 10.0.0.0/8
acl localnet src 100.64.0.0/10
acl localnet src 169.254.0.0/16
acl localnet src 172.16.0.0/12
acl localnet src 192.168.0.0/16
acl localnet src fc00::/7
acl localnet src fe80::/10
acl SSL_ports port 443
acl Safe_ports port 80
acl Safe_ports port 21
acl Safe_ports port 443
acl Safe_ports port 70
acl Safe_ports port 210
acl Safe_ports port 1025-65535
acl Safe_ports port 280
acl Safe_ports port 488
acl Safe_ports port 591
acl Safe_ports port 777
http_access deny !Safe_ports
http_access deny CONNECT !SSL_ports
http_access allow localhost manager
http_access deny manager
http_access allow localhost
http_access deny all
"""


def squid_conf(host: str, port: int, workdir: Path, access: str) -> str:
    """Preamble (port, pid, logs, no cache) + the test's access rules."""
    user = "cache_effective_user proxy\n" if os.geteuid() == 0 else ""
    return (
        "# Written by tests/servers/squid.py\n"
        f"http_port {host}:{port}\n"
        f"pid_filename {workdir}/squid.pid\n"
        f"access_log stdio:{workdir}/access.log squid\n"
        f"cache_log {workdir}/cache.log\n"
        "cache_store_log none\n"
        "cache deny all\n"
        f"coredump_dir {workdir}\n"
        "shutdown_lifetime 0 seconds\n"
        "visible_hostname squid.relayguard.test\n"
        "dns_nameservers 127.0.0.1\n"
        "connect_timeout 5 seconds\n"
        f"{user}"
        f"{access}"
    )


@contextlib.contextmanager
def squid(host: str, port: int, access: str = STOCK_ACCESS, *, workdir: Path | None = None,
          timeout: float = 20.0) -> Iterator[Daemon]:
    """Run `squid -N -f CONF` with `access` as its ACL section; always stopped."""
    wd, created = make_workdir(workdir, "squid")
    if os.geteuid() == 0:
        shutil.chown(wd, "proxy")
    conf = wd / "squid.conf"
    conf.write_text(squid_conf(host, port, wd, access), encoding="utf-8")
    daemon = Daemon(name="squid", host=host, port=port, workdir=wd, config=conf,
                    logs={"access": wd / "access.log", "cache": wd / "cache.log"})
    with run_daemon(daemon, ["squid", "-N", "-d", "1", "-f", str(conf)], timeout=timeout,
                    remove_workdir=created) as d:
        yield d
