"""Launch a real Debian `nginx` on a loopback address with a config the test writes.

    with nginx("127.0.5.97", 8080, "location / { root html; }") as web:
        reply = http_get(web.host, web.port, "/")

The test's `body` goes verbatim into the one `server { }` block of a minimal config (pid,
temp paths, logs in the workdir; Debian's mime.types). Logs: "access" (nginx's stock
`combined`), "error" (level info, so connection notices land there too).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.servers.base import Daemon, make_workdir, run_daemon

NGINX = "/usr/sbin/nginx"


def config(host: str, port: int, workdir: Path, body: str) -> str:
    """The whole nginx.conf: one server on host:port, everything writable in `workdir`."""
    temps = "\n".join(f"    {name}_temp_path {workdir}/{name}_temp;"
                      for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# Written by tests/servers/nginx.py
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    access_log {workdir}/access.log combined;
{temps}
    server {{
        listen {host}:{port};
        server_name www.relayguard.test;
{body}
    }}
}}
"""


@contextlib.contextmanager
def nginx(host: str, port: int, body: str = "", *, workdir: Path | None = None,
          timeout: float = 15.0) -> Iterator[Daemon]:
    """Run nginx in the foreground (`daemon off`) on host:port; always stopped."""
    wd, created = make_workdir(workdir, "nginx")
    conf = wd / "nginx.conf"
    conf.write_text(config(host, port, wd, body), encoding="utf-8")
    daemon = Daemon(name="nginx", host=host, port=port, workdir=wd, config=conf,
                    logs={"access": wd / "access.log", "error": wd / "error.log"})
    argv = [NGINX, "-p", str(wd), "-c", str(conf), "-g", "daemon off;"]
    with run_daemon(daemon, argv, timeout=timeout, remove_workdir=created) as d:
        yield d
