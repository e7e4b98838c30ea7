"""Launch a real Debian Privoxy (`privoxy --no-daemon`) on host:port.

    with privoxy("127.0.4.24", 8118, "") as proxy: ...   # no permit-access: open to all

The preamble uses Debian's stock action/filter files from /etc/privoxy and logs to the
workdir ("log"); `body` adds directives (permit-access, deny-access, forward…).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.servers.base import Daemon, make_workdir, run_daemon


@contextlib.contextmanager
def privoxy(host: str, port: int, body: str = "", *, workdir: Path | None = None,
            timeout: float = 15.0) -> Iterator[Daemon]:
    """Run privoxy with `body` after a stock-like preamble; always stopped."""
    wd, created = make_workdir(workdir, "privoxy")
    conf = wd / "config"
    conf.write_text(
        "# Written by tests/servers/privoxy.py\n"
        "confdir /etc/privoxy\n"
        f"logdir {wd}\nlogfile privoxy.log\n"
        "actionsfile match-all.action\nactionsfile default.action\nactionsfile user.action\n"
        "filterfile default.filter\nfilterfile user.filter\n"
        "debug 1\ndebug 1024\ndebug 4096\ndebug 8192\n"
        f"listen-address {host}:{port}\n"
        "toggle 1\nenable-remote-toggle 0\nenable-remote-http-toggle 0\n"
        "enable-edit-actions 0\nforwarded-connect-retries 0\n"
        "socket-timeout 10\n"
        f"{body}", encoding="utf-8")
    daemon = Daemon(name="privoxy", host=host, port=port, workdir=wd, config=conf,
                    logs={"log": wd / "privoxy.log"})
    with run_daemon(daemon, ["privoxy", "--no-daemon", str(conf)], timeout=timeout,
                    remove_workdir=created) as d:
        yield d
