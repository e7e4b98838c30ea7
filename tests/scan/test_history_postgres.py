"""History in a team's shared store: a real PostgreSQL (Debian's package) started on loopback
for this module as an unprivileged user, reached through the `postgres` extra (psycopg 3).
Two real scans with the hole fixed in between; `relayguard history` reads them back."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import ENV

pytestmark = pytest.mark.server

PG_HOST = "127.0.10.50"
HOST = "127.0.10.51"  # the scanned host: audit only, nothing has to listen
OPEN = """\
LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so
LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so
LoadModule proxy_connect_module /usr/lib/apache2/modules/mod_proxy_connect.so
Listen 127.0.10.51:8080
ProxyRequests {state}
<Proxy "*">
    Require all granted
</Proxy>
"""


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        pytest.fail("PostgreSQL is not installed (scripts/install-test-deps installs it)")
    return found[-1].parent


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throw-away cluster on PG_HOST, trust auth, always stopped and removed."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("psycopg is not installed: pip install -e '.[postgres]' "
                    "(scripts/install-test-deps does)")
    bindir = _bindir()
    tmp = Path(tempfile.mkdtemp(prefix="rg-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(tmp, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = tmp / "data"
    with socket.socket() as s:
        s.bind((PG_HOST, 0))
        port = s.getsockname()[1]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_user, *argv], capture_output=True, text=True, timeout=90,
                              check=False)

    done = run(str(bindir / "initdb"), "-D", str(data), "-U", "relayguard", "--auth=trust",
               "-E", "UTF8", "--no-sync")
    assert done.returncode == 0, done.stdout + done.stderr
    options = f"-c listen_addresses={PG_HOST} -p {port} -k {tmp} -c fsync=off"
    done = run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
               str(tmp / "server.log"), "-w", "-t", "60", "start")
    try:
        assert done.returncode == 0, done.stdout + done.stderr + (
            (tmp / "server.log").read_text() if (tmp / "server.log").exists() else "")
        yield f"postgresql+psycopg://relayguard@{PG_HOST}:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30",
            "stop")
        shutil.rmtree(tmp, ignore_errors=True)


def rg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relayguard", *args], capture_output=True,
                          text=True, timeout=120, env=ENV)


def test_history_in_postgresql(postgres_url: str, tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    scan = ["scan", HOST, "--no-probe", "--no-logs", "--no-blocklist", "--config", str(conf),
            "--db", postgres_url, "--format", "json"]
    conf.write_text(OPEN.format(state="On"))
    first = rg(*scan)
    assert first.returncode == 1, first.stderr
    assert "not stored in the history" not in first.stderr
    conf.write_text(OPEN.format(state="Off"))
    second = rg(*scan)
    assert second.returncode == 0, second.stderr + second.stdout
    assert "not stored in the history" not in second.stderr

    # plain `postgresql://`, as a team writes it: psycopg 3 drives it, not psycopg2
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    shown = rg("history", HOST, "--db", plain, "--json")
    assert shown.returncode in (0, 1), shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["before"]["verdict"] == "OPEN" and doc["after"]["verdict"] == "CLEAN"
    assert {d["rule"] for d in doc["fixed"]} == {
        "APACHE-OPEN-CONNECT-PROXY", "APACHE-OPEN-FORWARD-PROXY", "APACHE-PROXY-HTTP-TO-SMTP"}
    # the rows really are in PostgreSQL, not in a SQLite file somewhere
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            hosts = conn.execute(sa.text("SELECT host, verdict FROM relayguard_scans "
                                         "ORDER BY id")).all()
            version = conn.execute(sa.text("SELECT version()")).scalar_one()
    finally:
        engine.dispose()
    assert [tuple(h) for h in hosts] == [(HOST, "OPEN"), (HOST, "CLEAN")]
    assert str(version).startswith("PostgreSQL")


def test_a_postgresql_store_that_is_down_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind((PG_HOST, 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    done = rg("history", HOST, "--db", f"postgresql://relayguard@{PG_HOST}:{port}/postgres")
    assert done.returncode == 2
    assert "cannot open history store postgresql+psycopg://relayguard@" in done.stderr
    assert "psycopg2" not in done.stderr
    assert "Traceback" not in done.stderr
