"""Launch a real Debian `apache2` on a loopback address with a config the test writes.

    with apache("127.0.4.10", 8080, body, modules=PROXY_MODULES) as httpd:
        reply = http_request(httpd.host, httpd.port, "GET http://x/ HTTP/1.0\\r\\n\\r\\n")

The main config (`httpd.config`) holds only the preamble this harness needs (ServerRoot,
PidFile, Listen, LoadModule, logs, User); the test's `body` goes verbatim into its own file
(`httpd.extra["body"]`, included last), so its line numbers are the test's own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tests.servers.base import Daemon, make_workdir, run_daemon

MODULE_DIR = Path("/usr/lib/apache2/modules")
# Enough to serve files and evaluate both access-control syntaxes.
BASE_MODULES: tuple[str, ...] = (
    "mpm_event", "authz_core", "authz_host", "access_compat", "mime", "dir", "alias",
)
# A forward / reverse proxy as Debian's `a2enmod proxy proxy_http proxy_connect` gives it.
PROXY_MODULES: tuple[str, ...] = ("proxy", "proxy_http", "proxy_connect")


def load_module_line(name: str) -> str:
    """`LoadModule X_module /usr/lib/apache2/modules/mod_X.so` for a short module name."""
    return f"LoadModule {name}_module {MODULE_DIR / f'mod_{name}.so'}"


def preamble(host: str, port: int, workdir: Path, modules: Iterable[str] = (),
             extra_listen: Sequence[tuple[str, int]] = ()) -> str:
    """The main config: everything Apache needs to run from `workdir` as an unprivileged user."""
    names: list[str] = []
    for m in (*BASE_MODULES, *modules):
        if m not in names:
            names.append(m)
    listens = [(host, port), *extra_listen]
    lines = [
        "# Written by tests/servers/apache.py",
        f'ServerRoot "{workdir}"',
        "ServerName relayguard-test.invalid",
        f'PidFile "{workdir}/apache2.pid"',
        f'DefaultRuntimeDir "{workdir}"',
        f"Mutex file:{workdir} default",
        *(f"Listen {h if ':' not in h else f'[{h}]'}:{p}" for h, p in listens),
        *(load_module_line(m) for m in names),
        "StartServers 1",
        "ServerLimit 4",
        "ThreadsPerChild 64",
        "MinSpareThreads 8",
        "MaxSpareThreads 128",
        "MaxRequestWorkers 256",
        "Timeout 10",
        "TypesConfig /etc/mime.types",
        f'ErrorLog "{workdir}/error.log"',
        "LogLevel warn",
        'LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{Referer}i\\" \\"%{User-Agent}i\\"" combined',
        f'CustomLog "{workdir}/access.log" combined',
        f'DocumentRoot "{workdir}/htdocs"',
        f'<Directory "{workdir}/htdocs">',
        "    Require all granted",
        "</Directory>",
    ]
    if os.geteuid() == 0:
        lines += ["User www-data", "Group www-data"]
    lines.append(f'Include "{workdir}/body.conf"')
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def apache(host: str, port: int, body: str = "", *, modules: Iterable[str] = (),
           workdir: Path | None = None, extra_listen: Sequence[tuple[str, int]] = (),
           index_html: str = "relayguard test origin\n",
           timeout: float = 15.0, env: dict[str, str] | None = None) -> Iterator[Daemon]:
    """Run `apache2 -DFOREGROUND` on host:port with `body` appended to a minimal config.

    `modules` are short names added to BASE_MODULES (e.g. PROXY_MODULES, "rewrite",
    "headers"). Logs: `daemon.logs["error"]`, `daemon.logs["access"]`. `htdocs/index.html`
    holds `index_html`. A workdir we create is removed afterwards; a given one is kept.
    `env` is added to the daemon's environment (e.g. libfaketime's, to set its clock).
    """
    wd, created = make_workdir(workdir, "apache")
    (wd / "htdocs").mkdir(exist_ok=True)
    os.chmod(wd / "htdocs", 0o755)
    (wd / "htdocs" / "index.html").write_text(index_html, encoding="utf-8")
    conf = wd / "httpd.conf"
    conf.write_text(preamble(host, port, wd, modules, extra_listen), encoding="utf-8")
    body_path = wd / "body.conf"
    body_path.write_text(body, encoding="utf-8")
    daemon = Daemon(
        name="apache2", host=host, port=port, workdir=wd, config=conf,
        logs={"error": wd / "error.log", "access": wd / "access.log"},
        extra={"body": body_path},
    )
    argv = ["apache2", "-f", str(conf), "-DFOREGROUND"]
    # apache2 needs APACHE_* only through envvars, which this config does not use.
    with run_daemon(daemon, argv, timeout=timeout, env=env, remove_workdir=created) as d:
        yield d
