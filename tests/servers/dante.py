"""Launch a real Debian Dante SOCKS server (`danted -f CONF -p PID`) on host:port.

    with danted("127.0.4.25", 1080, OPEN_RULES) as socks: ...

The preamble sets internal host:port, external 127.0.0.1 (outgoing connections), no auth
(`socksmethod: none`) and the log ("log"); `rules` are the `client pass/block` and
`socks pass/block` blocks, verbatim. OPEN_RULES lets anyone anywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.servers.base import Daemon, make_workdir, run_daemon

OPEN_RULES = """\
client pass {
    from: 0.0.0.0/0 to: 0.0.0.0/0
}
socks pass {
    from: 0.0.0.0/0 to: 0.0.0.0/0
    command: connect
}
"""


def restricted_rules(client_net: str) -> str:
    """Rules that let only `client_net` (e.g. 127.0.0.1/32) use the proxy."""
    return (
        f"client pass {{\n    from: {client_net} to: 0.0.0.0/0\n}}\n"
        "client block {\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n}\n"
        f"socks pass {{\n    from: {client_net} to: 0.0.0.0/0\n    command: connect\n}}\n"
        "socks block {\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n}\n"
    )


@contextlib.contextmanager
def danted(host: str, port: int, rules: str = OPEN_RULES, *, external: str = "127.0.0.1",
           workdir: Path | None = None, timeout: float = 15.0) -> Iterator[Daemon]:
    """Run danted with `rules` after a minimal preamble; always stopped."""
    wd, created = make_workdir(workdir, "danted")
    conf = wd / "danted.conf"
    conf.write_text(
        "# Written by tests/servers/dante.py\n"
        f"logoutput: {wd}/danted.log\n"
        f"internal: {host} port = {port}\n"
        f"external: {external}\n"
        "clientmethod: none\nsocksmethod: none\n"
        "user.privileged: root\nuser.unprivileged: nobody\n"
        f"{rules}", encoding="utf-8")
    daemon = Daemon(name="danted", host=host, port=port, workdir=wd, config=conf,
                    logs={"log": wd / "danted.log"})
    argv = ["danted", "-f", str(conf), "-p", str(wd / "danted.pid"), "-N", "1"]
    with run_daemon(daemon, argv, timeout=timeout, remove_workdir=created) as d:
        yield d
