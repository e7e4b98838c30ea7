"""Launch a real Debian microsocks (SOCKS5 only) on host:port, optionally with user/password.

    with microsocks("127.0.4.26", 1080) as socks: ...                    # open
    with microsocks("127.0.4.27", 1080, user="u", password="p") as s: ... # auth required

microsocks logs to stderr ("log" = the captured stderr file).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.servers.base import Daemon, make_workdir, run_daemon


@contextlib.contextmanager
def microsocks(host: str, port: int, *, user: str | None = None, password: str | None = None,
               bind: str | None = None, workdir: Path | None = None,
               timeout: float = 10.0) -> Iterator[Daemon]:
    """Run `microsocks -i host -p port [-u user -P password] [-b bind]`; always stopped."""
    wd, created = make_workdir(workdir, "microsocks")
    argv = ["microsocks", "-i", host, "-p", str(port)]
    if user is not None:
        argv += ["-u", user, "-P", password or ""]
    if bind is not None:
        argv += ["-b", bind]
    daemon = Daemon(name="microsocks", host=host, port=port, workdir=wd, config=wd,
                    logs={"log": wd / "microsocks.stderr"})
    with run_daemon(daemon, argv, timeout=timeout, remove_workdir=created) as d:
        yield d
