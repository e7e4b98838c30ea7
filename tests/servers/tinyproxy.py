"""Launch a real Debian tinyproxy (`tinyproxy -d`, foreground) on host:port.

    with tinyproxy("127.0.4.22", 8888, "") as proxy: ...            # no Allow: open to all
    with tinyproxy("127.0.4.23", 8888, "Allow 127.0.0.1\\n") as p: ...  # Debian's stock ACL

`body` is appended to a preamble (Port, Listen, PidFile, LogFile, User); STOCK_BODY is the
access part of Debian's stock tinyproxy.conf. Log: "log".
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tests.servers.base import Daemon, make_workdir, run_daemon

STOCK_BODY = 'Allow 127.0.0.1\nAllow ::1\nViaProxyName "tinyproxy"\n'


@contextlib.contextmanager
def tinyproxy(host: str, port: int, body: str = STOCK_BODY, *, workdir: Path | None = None,
              timeout: float = 15.0) -> Iterator[Daemon]:
    """Run tinyproxy with `body` after a minimal preamble; always stopped."""
    wd, created = make_workdir(workdir, "tinyproxy")
    log = wd / "tinyproxy.log"
    log.touch()
    user = ""
    if os.geteuid() == 0:
        user = "User tinyproxy\nGroup tinyproxy\n"
        shutil.chown(log, "tinyproxy", "tinyproxy")
    conf = wd / "tinyproxy.conf"
    conf.write_text(
        "# Written by tests/servers/tinyproxy.py\n"
        f"{user}Port {port}\nListen {host}\nTimeout 10\n"
        f'PidFile "{wd}/tinyproxy.pid"\nLogFile "{log}"\nLogLevel Info\nMaxClients 100\n'
        f"{body}", encoding="utf-8")
    daemon = Daemon(name="tinyproxy", host=host, port=port, workdir=wd, config=conf,
                    logs={"log": log})
    with run_daemon(daemon, ["tinyproxy", "-d", "-c", str(conf)], timeout=timeout,
                    remove_workdir=created) as d:
        yield d
