"""History across two real scans with one hole fixed in between: new / fixed / unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import ENV
from tests.scan.conftest import OPEN_IP, SMTP, WEB, Host, spam_through
from tests.servers.apache import PROXY_MODULES, apache
from tests.servers.base import make_workdir

pytestmark = pytest.mark.server

HOST, PORT = "127.0.10.30", 8080
OPEN = "ProxyRequests On\n<Proxy \"*\">\n    Require all granted\n</Proxy>\n"
FIXED = "ProxyRequests Off\n<Proxy \"*\">\n    Require all granted\n</Proxy>\n"


def rg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relayguard", *args], capture_output=True,
                          text=True, timeout=120, env=ENV)


def test_history_shows_the_fixed_hole(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/history.sqlite"
    workdir, _ = make_workdir(tmp_path / "apache", "apache")
    scan = ["scan", HOST, "--ports", str(PORT), "--config", str(workdir / "httpd.conf"),
            "--no-logs", "--no-blocklist", "--db", db, "--format", "json"]
    with apache(HOST, PORT, OPEN, modules=PROXY_MODULES, workdir=workdir):
        first = rg(*scan)
    assert first.returncode == 1, first.stderr
    before = {f["rule"] for f in json.loads(first.stdout)["findings"]}
    assert {"APACHE-OPEN-FORWARD-PROXY", "PROBE-HTTP-ABSOLUTE-URI", "PROBE-CONNECT"} <= before

    with apache(HOST, PORT, FIXED, modules=PROXY_MODULES, workdir=workdir):
        second = rg(*scan)
    assert second.returncode == 0, second.stderr + second.stdout
    after = {f["rule"] for f in json.loads(second.stdout)["findings"]}
    assert after == {"APACHE-PROXY-MODULES-UNUSED"}

    shown = rg("history", HOST, "--db", db, "--json")
    assert shown.returncode == 1, shown.stderr  # something is new (the hardening note)
    doc = json.loads(shown.stdout)
    assert doc["before"]["verdict"] == "OPEN" and doc["after"]["verdict"] == "CLEAN"
    assert {d["rule"] for d in doc["fixed"]} == before - after
    assert [d["rule"] for d in doc["new"]] == ["APACHE-PROXY-MODULES-UNUSED"]
    assert doc["unchanged"] == []
    # A third scan with nothing changed: probe nonces do not make findings "new".
    with apache(HOST, PORT, FIXED, modules=PROXY_MODULES, workdir=workdir):
        assert rg(*scan).returncode == 0
    again = json.loads(rg("history", HOST, "--db", db, "--json").stdout)
    assert again["new"] == [] and again["fixed"] == []
    assert [d["rule"] for d in again["unchanged"]] == ["APACHE-PROXY-MODULES-UNUSED"]

    text = rg("history", HOST, "--db", db)
    lines = text.stdout.splitlines()
    assert text.returncode == 0
    assert lines[0].startswith(f"{HOST}: scan ") and "(CLEAN) vs " in lines[0]
    assert lines[1:4] == ["NEW: 0", "FIXED: 0", "UNCHANGED: 1"]

    listing = rg("history", "--db", db)
    assert listing.stdout.startswith(HOST) and listing.stdout.rstrip().endswith("CLEAN")


def test_history_of_an_unknown_host_exits_2(tmp_path: Path) -> None:
    done = rg("history", "nosuch.example", "--db", f"sqlite:///{tmp_path}/h.sqlite")
    assert done.returncode == 2
    assert "no scan of 'nosuch.example' in the history store" in done.stderr


def test_ongoing_abuse_in_the_logs_stays_unchanged_as_counts_grow(
        open_host: Host, tmp_path: Path) -> None:
    """Log finding titles carry counts ("3 of 3 request(s) relayed"); the nightly scan of a
    host still being abused must not show the same abuse as NEW and FIXED every night, also
    across a log rotation (the first sample moves to access.log.1)."""
    db = f"sqlite:///{tmp_path}/history.sqlite"
    logs = tmp_path / "logs"
    logs.mkdir()
    live = open_host.web.logs["access"]
    first_text = live.read_text()
    (logs / "access.log").write_text(first_text)
    scan = ["scan", OPEN_IP, "--ports", f"{SMTP},{WEB}", "--no-probe", "--no-blocklist",
            "--log", str(logs / "access.log"), "--db", db, "--format", "json",
            *(a for c in open_host.configs for a in ("--config", str(c)))]
    first = rg(*scan)
    assert first.returncode == 1, first.stderr

    for i in range(2):  # the abuse goes on between the two scans
        spam_through((OPEN_IP, WEB), (OPEN_IP, SMTP), f"127.0.10.{70 + i}")
    deadline = time.monotonic() + 5
    while live.read_text().count("CONNECT") < first_text.count("CONNECT") + 2:
        assert time.monotonic() < deadline, "the proxy did not log the new CONNECTs"
        time.sleep(0.05)
    (logs / "access.log").rename(logs / "access.log.1")  # logrotate, then the new lines
    (logs / "access.log").write_text(live.read_text()[len(first_text):])
    second = rg(*scan)
    assert second.returncode == 1, second.stderr

    def smtp(doc: dict[str, Any]) -> dict[str, Any]:
        return next(f for f in doc["findings"] if f["rule"] == "LOGS-PROXY-SMTP")

    before, after = smtp(json.loads(first.stdout)), smtp(json.loads(second.stdout))
    assert before["title"] != after["title"]  # the counts grew...
    assert before["location"]["path"] != after["location"]["path"]  # ...and the log rotated
    doc = json.loads(rg("history", OPEN_IP, "--db", db, "--json").stdout)
    assert doc["new"] == [] and doc["fixed"] == [], doc
    unchanged = {d["rule"]: d for d in doc["unchanged"]}
    assert unchanged["LOGS-PROXY-SMTP"]["title"] == after["title"]  # told with today's counts
