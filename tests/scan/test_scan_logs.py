"""`scan` finds the logs a Debian Apache layout names, and tells what followed the relaying.

A real Apache (Debian's own LogFormats, its forward proxy left open) runs on a clock the test
sets (libfaketime): twelve quiet minutes of a visitor, then spammers tunnelling SMTP through it,
then a flood of requests, the founding incident's "the server slowed down". Its log goes into a
config backup laid out as Debian installs Apache (the real /etc/apache2 samples), whose envvars
moves `${APACHE_LOG_DIR}`. `scan --root` must find the log by following the config, read it in
the config's own format, judge it with the config's proxy setup, and tell the flood as what
followed the relaying. Spikes far from any relaying (a real public log's scanner bursts) are
told as their own story, never as the relay's.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.audit.apache.test_stock import REAL, debian_tree_from_samples, enable_proxy
from tests.cli.test_cli import ENV
from tests.logs.smtp_sink import smtp_sink
from tests.scan.conftest import Host, spam_through
from tests.servers import PROXY_MODULES, apache
from tests.servers.clock import fake_clock

pytestmark = pytest.mark.server

WEB, MX = "127.0.10.130", "127.0.10.131"
VISITOR, FLOODER = "127.0.10.140", "127.0.10.141"
SPAMMERS = ("127.0.10.150", "127.0.10.151", "127.0.10.152")
BASE = 1772359200  # 2026-03-01T10:00:00Z on the server's clock
QUIET_MINUTES, PER_MINUTE, FLOOD = 12, 3, 400
LOG_DIR = "/srv/weblogs/apache2"  # the backup's envvars moves APACHE_LOG_DIR here
SECREPO = Path(__file__).resolve().parents[2].parent / \
    "shared/data/real-logs/apache-secrepo-2018/access-2018-12-15.log.gz"


def _browse(address: tuple[str, int], source: str, requests: int) -> None:
    """`requests` keep-alive GETs of the home page (at most 50 per connection)."""
    for start in range(0, requests, 50):
        with socket.create_connection(address, timeout=10, source_address=(source, 0)) as s, \
                s.makefile("rwb") as f:
            for _ in range(min(50, requests - start)):
                f.write(b"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
                f.flush()
                assert b" 200 " in f.readline()
                length = 0
                for _ in range(50):
                    header = f.readline().strip()
                    if not header:
                        break
                    name, _, value = header.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                f.read(length)


def _wait_lines(path: Path, n: int, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        if len(lines) >= n:
            return lines
        time.sleep(0.1)
    raise AssertionError(f"{path} never had {n} lines")


@pytest.fixture(scope="module")
def incident_log() -> Iterator[list[str]]:
    """The access log real Apache wrote through the quiet minutes, the relaying and the flood
    (Debian's `combined`, which logs %O)."""
    formats = "\n".join(ln for ln in (REAL / "apache2.conf").read_text().splitlines()
                        if ln.startswith("LogFormat")) + "\n"
    with fake_clock() as clock, smtp_sink(MX, 25) as sink:
        clock.at(BASE)
        with apache(WEB, 8080, formats + "ProxyRequests On\nAllowCONNECT 25 443\n",
                   modules=PROXY_MODULES, env=clock.env()) as web:
            for minute in range(QUIET_MINUTES):
                clock.at(BASE + 60 * minute + 5)
                _browse(web.address, VISITOR, PER_MINUTE)
            clock.at(BASE + 60 * QUIET_MINUTES + 5)
            for spammer in SPAMMERS:
                assert spam_through(web.address, (MX, 25), spammer).startswith("250")
            assert len(sink.rcpts) == len(SPAMMERS)
            clock.at(BASE + 60 * (QUIET_MINUTES + 1) + 5)
            _browse(web.address, FLOODER, FLOOD)
            yield _wait_lines(web.logs["access"], QUIET_MINUTES * PER_MINUTE + 3 + FLOOD)


@pytest.fixture
def backup(tmp_path: Path, incident_log: list[str]) -> Path:
    """A config backup as Debian lays Apache out, with the proxy enabled as on the server that
    wrote the log (ProxyRequests On, AllowCONNECT 25 443), APACHE_LOG_DIR moved by envvars,
    and the log rotated once (the quiet minutes in .1)."""
    root = tmp_path / "backup"
    tree = debian_tree_from_samples(root / "etc/apache2")
    enable_proxy(tree)
    (tree / "conf-enabled/forward-proxy.conf").write_text("AllowCONNECT 25 443\n",
                                                          encoding="utf-8")
    envvars = tree / "envvars"
    text = envvars.read_text(encoding="utf-8")
    assert "export APACHE_LOG_DIR=/var/log/apache2$SUFFIX" in text
    envvars.write_text(text.replace("/var/log/apache2$SUFFIX", LOG_DIR + "$SUFFIX"),
                       encoding="utf-8")
    logs = root / LOG_DIR.lstrip("/")
    logs.mkdir(parents=True)
    quiet = QUIET_MINUTES * PER_MINUTE
    (logs / "access.log.1").write_text("\n".join(incident_log[:quiet]) + "\n", encoding="utf-8")
    (logs / "access.log").write_text("\n".join(incident_log[quiet:]) + "\n", encoding="utf-8")
    return root


def scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relayguard", "scan", *args, "--no-probe",
                           "--no-blocklist", "--no-history"],
                          capture_output=True, text=True, timeout=120, env=ENV)


def scan_json(*args: str) -> dict[str, Any]:
    done = scan(*args, "--format", "json")
    assert done.returncode == 1, done.stderr
    return json.loads(done.stdout)


def test_the_logs_the_debian_layout_names_are_found_and_read_its_way(backup: Path) -> None:
    doc = scan_json("--root", str(backup))
    logs = backup / LOG_DIR.lstrip("/")
    # found through sites-enabled/000-default.conf's `CustomLog ${APACHE_LOG_DIR}/access.log
    # combined` and envvars, read with apache2.conf's own `combined` (%O), oldest first
    assert [(f["path"], f["format"], f["lines"]) for f in doc["stats"]["log_files"]] == [
        (str(logs / "access.log.1"), "custom", QUIET_MINUTES * PER_MINUTE),
        (str(logs / "access.log"), "custom", 3 + FLOOD)]
    assert doc["errors"] == []
    smtp = next(i for i in doc["stats"]["incidents"] if i["kind"] == "proxy-smtp")
    assert smtp["outcomes"] == {"relayed": 3}
    assert sorted(c for c, _n in smtp["clients"]) == sorted(SPAMMERS)
    # judged with the backup's own proxy setup (the ProxyRequests On of the incident)
    assert smtp["proxy_config"].startswith("forward proxying is on: ")
    assert "mods-enabled/proxy.conf" in smtp["proxy_config"]
    assert "ProxyRequests On" in smtp["proxy_config"]


def test_the_flood_is_told_as_what_followed_the_relaying(backup: Path) -> None:
    doc = scan_json("--root", str(backup))
    assert doc["stats"]["verdict"] == "OPEN"
    stories = [s for s in doc["stats"]["stories"] if s["key"] != "hardening"]
    assert [s["key"] for s in stories] == ["proxy"]
    (story,) = stories
    assert {"LOGS-PROXY-SMTP", "LOGS-VOLUME-SPIKE"} <= set(story["rules"])
    assert story["followed"] == [
        "the server slowed down under a flood of requests: 400 requests/min at the peak, "
        "usually 3/min: 400 in 1 minute(s), 2026-03-01T10:13:00Z .. 2026-03-01T10:13:59Z"]
    assert story["headline"].endswith("the server's traffic spiked while it happened")
    # the spike is what followed, not evidence: the story's confidence is the relay's own
    relay = [f for f in doc["findings"] if f["rule"] in story["rules"]
             and f["category"] != "volume-anomaly"]
    assert story["confidence"] == max((f["confidence"] for f in relay),
                                      key=["possible", "likely", "confirmed"].index)
    text = scan("--root", str(backup)).stdout
    assert "   what followed: the server slowed down under a flood of requests: 400 " \
           "requests/min at the peak" in text
    html = scan("--root", str(backup), "--format", "html").stdout
    assert '<div class="followed"><b>What followed</b> the server slowed down' in html


def test_spikes_far_from_any_relaying_are_their_own_story(open_host: Host) -> None:
    """The real secrepo log's scanner bursts (2018) beside the open host's relaying (now)."""
    doc = scan_json(*open_host.cli_args(), "--log", str(SECREPO))
    by_key = {s["key"]: s for s in doc["stats"]["stories"]}
    assert by_key["proxy"]["followed"] == []
    assert "LOGS-VOLUME-SPIKE" not in by_key["proxy"]["rules"]
    volume = by_key["volume"]
    assert volume["rules"] == ["LOGS-VOLUME-SPIKE"] and len(volume["findings"]) == 2
    assert volume["headline"] == ("Traffic far above its usual rate (requests, logs): no "
                                  "relaying was seen at the same time; see what the spike's "
                                  "minutes hold")
    assert volume["severity"] == "medium" and volume["followed"] == []
    assert doc["stats"]["verdict"] == "OPEN"
    # the open host's Apache config says nothing about a log it did not write
    assert any(n.startswith("Apache's proxy setup was not used to judge the logs: they include "
                            "logs it does not write (") and str(SECREPO) in n
               for n in doc["notes"])


def test_a_log_named_with_log_that_cannot_be_read_is_an_error() -> None:
    """A mistyped --log must not vanish: the scan says it could not read it (exit 2) and
    lists only the logs it did read."""
    missing = "/nonexistent/var/log/mail.log"
    done = scan("127.0.10.99", "--no-audit", "--log", str(SECREPO), "--log", missing,
                "--format", "json")
    assert done.returncode == 2, done.stderr
    doc = json.loads(done.stdout)
    assert [(e["source"], e["message"]) for e in doc["errors"]] == [
        (missing, "cannot read: No such file or directory")]
    assert f"127.0.10.99: logs read: {SECREPO}" in doc["notes"]
