"""Debian's stock access-log format (`%O`: bytes sent, headers and tunnel bytes included) on logs
written by real Apache: an open forward proxy tunnelling real SMTP sessions to loopback MXes,
and a plain Apache answering proxy requests itself. Then `--apache-config` on a copy of the
real Debian tree (/etc/apache2: Include/IncludeOptional, `${APACHE_LOG_DIR}` from envvars).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from relayguard.logs.analyze import LogOptions, analyse
from tests.logs.smtp_sink import smtp_sink
from tests.servers import PROXY_MODULES, apache, http_canary, http_get
from tests.servers.http import connect

pytestmark = pytest.mark.server

DEBIAN_CONF = Path("/etc/apache2/apache2.conf")
PROXY, PLAIN = "127.0.5.15", "127.0.5.16"
WEB = "127.0.5.66"
MXES = ("127.0.5.71", "127.0.5.72", "127.0.5.73")
SPAMMERS = ("127.0.5.37", "127.0.5.38")
VISITOR, BROWSER, SCANNER = "127.0.5.23", "127.0.5.44", "127.0.5.52"
INDEX = "<html>" + "a debian site " * 30 + "</html>\n"


def _debian_logformats() -> str:
    if not DEBIAN_CONF.is_file():
        pytest.skip("Debian's apache2 package config (/etc/apache2/apache2.conf) is not here")
    lines = [ln for ln in DEBIAN_CONF.read_text(encoding="utf-8").splitlines()
             if ln.startswith("LogFormat")]
    assert any("%O" in ln and ln.endswith(" combined") for ln in lines), lines
    return "\n".join(lines) + "\n"


def _spam_through_tunnel(proxy: tuple[str, int], client: str, mx: str, messages: int) -> bool:
    """CONNECT mx:25 and send `messages` mails in the tunnel; True if the MX queued them."""
    with connect(*proxy, client) as s, s.makefile("rwb") as f:
        f.write(f"CONNECT {mx}:25 HTTP/1.0\r\n\r\n".encode())
        f.flush()
        status = f.readline()
        if b" 200 " not in status:
            return False
        for _ in range(20):  # the rest of the proxy's head
            if f.readline() in (b"\r\n", b""):
                break

        def reply() -> bytes:
            for _ in range(50):
                line = f.readline()
                if line[3:4] != b"-":
                    return line
            raise AssertionError("endless SMTP reply")

        assert reply().startswith(b"220")
        f.write(b"EHLO spam.test\r\n")
        f.flush()
        reply()
        queued = 0
        for i in range(messages):
            for cmd in (b"MAIL FROM:<bulk@spam.test>", f"RCPT TO:<v{i}@victim.test>".encode(),
                        b"DATA"):
                f.write(cmd + b"\r\n")
                f.flush()
                reply()
            f.write(b"Subject: cheap\r\n\r\nbuy now\r\n.\r\n")
            f.flush()
            queued += reply().startswith(b"250")
        f.write(b"QUIT\r\n")
        f.flush()
        reply()
        return queued == messages


def _wait_lines(path: Path, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(encoding="utf-8").count("\n") >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never had {n} lines")


@pytest.fixture(scope="module")
def debian_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    formats = _debian_logformats()
    keep = tmp_path_factory.mktemp("debianlogs")
    out: dict[str, Any] = {}
    with http_canary(WEB) as web, smtp_sink(MXES[0], 25) as mx0, smtp_sink(MXES[1], 25) as mx1, \
            smtp_sink(MXES[2], 25) as mx2, \
            apache(PROXY, 18083, formats + "ProxyRequests On\nAllowCONNECT 25 443\n",
                   modules=PROXY_MODULES, index_html=INDEX) as proxy, \
            apache(PLAIN, 18084, formats, index_html=INDEX) as plain:
        for d in (proxy, plain):
            first = http_get(d.host, d.port, "/", source=VISITOR)
            assert first.status == 200
            http_get(d.host, d.port, "/index.html", source=VISITOR)
            # a browser revalidating: 304, which %b logs as "-" and %O as the header bytes
            again = http_get(d.host, d.port, "/", source=VISITOR,
                             headers={"If-None-Match": first.headers["etag"]})
            assert again.status == 304
        out["t0"] = time.time()
        # spam: one, two and three messages through three tunnels, so sizes differ
        for (i, mx), client in zip(enumerate(MXES), (*SPAMMERS, SPAMMERS[0]), strict=True):
            assert _spam_through_tunnel(proxy.address, client, mx, i + 1)
            assert not _spam_through_tunnel(plain.address, client, mx, 1)
        assert (mx0.messages, mx1.messages, mx2.messages) == (1, 2, 3)
        out["t1"] = time.time()
        assert http_get(proxy.host, proxy.port, f"http://{WEB}:{web.port}/x",
                        source=BROWSER).status == 200
        assert http_get(plain.host, plain.port, f"http://{WEB}:{web.port}/",
                        source=BROWSER).body == INDEX.encode()
        assert len(web.hits) == 1
        with connect(*proxy.address, SCANNER) as s:  # a port outside AllowCONNECT: 403
            s.sendall(f"CONNECT {MXES[0]}:22 HTTP/1.0\r\n\r\n".encode())
            assert b" 403 " in s.recv(4096)
        for name, d, n in (("proxy", proxy, 8), ("plain", plain, 7)):
            _wait_lines(d.logs["access"], n)
            dest = keep / f"{name}-access.log"
            shutil.copy(d.logs["access"], dest)
            out[name] = dest
    return out


def _by_kind(report: Any) -> dict[str, dict[str, Any]]:
    return {i["kind"]: i for i in report.stats["incidents"]}


def test_stock_debian_format_tunnels_are_relayed(debian_logs: dict[str, Any]) -> None:
    log = debian_logs["proxy"]
    text = log.read_text(encoding="utf-8")
    assert '" 304 -' not in text and '" 200 -' not in text  # %O everywhere: never "-"
    for fast in (True, False):
        report = analyse([str(log)], LogOptions(fast=fast))
        assert report.stats["by_format"] == {"combined": 8}
        inc = _by_kind(report)
        smtp = inc["proxy-smtp"]
        assert smtp["events"] == 3 and smtp["outcomes"] == {"relayed": 3}, smtp
        assert sorted(c for c, _ in smtp["clients"]) == sorted(SPAMMERS)
        assert sorted(d for d, _ in smtp["destinations"]) == sorted(f"{m}:25" for m in MXES)
        assert inc["proxy-connect"]["outcomes"] == {"refused": 1}
        rules = sorted((f.rule, f.severity.label) for f in report.findings)
        assert ("LOGS-PROXY-SMTP", "critical") in rules, rules


def test_stock_debian_format_plain_apache_is_a_scan(debian_logs: dict[str, Any]) -> None:
    report = analyse([str(debian_logs["plain"])])
    inc = _by_kind(report)
    assert inc["proxy-smtp"]["outcomes"] == {"refused": 3}
    assert inc["proxy-smtp"]["statuses"] == {"405": 3}
    assert inc["proxy-http"]["outcomes"] == {"local": 1}  # its own home page, %O and all
    assert {f.rule for f in report.findings} == {"LOGS-PROXY-SCAN"}


def _debian_tree(tmp: Path, log_dir: Path, forward_proxy: bool) -> Path:
    """A copy of the real /etc/apache2 with APACHE_LOG_DIR pointing at `log_dir`, and (like
    the running proxy) `a2enmod proxy proxy_connect proxy_http` plus ProxyRequests On."""
    tree = tmp / "apache2"
    shutil.copytree("/etc/apache2", tree, symlinks=True)
    envvars = tree / "envvars"
    envvars.write_text(envvars.read_text(encoding="utf-8").replace(
        "export APACHE_LOG_DIR=/var/log/apache2$SUFFIX", f"export APACHE_LOG_DIR={log_dir}"),
        encoding="utf-8")
    for p in (tree / "mods-enabled").iterdir():  # absolute symlinks into /etc: make them local
        if p.is_symlink():
            target = p.readlink()
            p.unlink()
            p.symlink_to(tree / "mods-available" / target.name)
    if forward_proxy:
        for mod in ("proxy", "proxy_connect", "proxy_http"):
            (tree / "mods-enabled" / f"{mod}.load").symlink_to(
                tree / "mods-available" / f"{mod}.load")
        (tree / "conf-enabled" / "forward-proxy.conf").write_text(
            "ProxyRequests On\nAllowCONNECT 25 443\n", encoding="utf-8")
    return tree / "apache2.conf"


def _cli(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "relayguard", "logs", *args, "-f", "json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def test_apache_config_follows_the_debian_tree(debian_logs: dict[str, Any],
                                                tmp_path: Path) -> None:
    _debian_logformats()
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    shutil.copy(debian_logs["proxy"], log_dir / "access.log")
    conf = _debian_tree(tmp_path / "on", log_dir, forward_proxy=True)
    doc = _cli(str(log_dir / "access.log"), "--apache-config", str(conf))
    # sites-enabled/000-default.conf: CustomLog ${APACHE_LOG_DIR}/access.log combined, with
    # apache2.conf's %O `combined`: read as the config says, not guessed
    assert doc["stats"]["by_format"] == {"custom": 8}
    smtp = next(i for i in doc["stats"]["incidents"] if i["kind"] == "proxy-smtp")
    assert smtp["outcomes"] == {"relayed": 3}
    assert "forward-proxy.conf:1: ProxyRequests On" in smtp["proxy_config"]
    # the plain server's log judged with the stock tree (no forward proxy): served locally
    shutil.copy(debian_logs["plain"], log_dir / "access.log")
    stock = _debian_tree(tmp_path / "stock", log_dir, forward_proxy=False)
    doc = _cli(str(log_dir / "access.log"), "--apache-config", str(stock))
    http = next(i for i in doc["stats"]["incidents"] if i["kind"] == "proxy-http")
    assert http["verdict"] == "probably served locally"
    assert http["proxy_config"].startswith("no forward proxy")
    assert {f["rule"] for f in doc["findings"]} == {"LOGS-PROXY-SCAN"}
