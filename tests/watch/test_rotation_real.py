"""Real Apache under real traffic, real logrotate in both modes, the watcher kill -9ed and
restarted in the middle: every line read exactly once (counted and check-summed)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.servers import apache, free_port, http_request
from tests.watch.helpers import ground_truth, proxy_events, state, wait_until, watcher

pytestmark = pytest.mark.server

HOST = "127.0.9.10"
CLIENT = "127.0.9.99"
ABUSER = "127.0.9.66"


class Traffic(threading.Thread):
    """Sequential requests with unique paths; every 10th is a CONNECT to an SMTP port."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(daemon=True)
        self.host, self.port = host, port
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.idle = threading.Event()
        self.sent = 0
        self.errors = 0

    def run(self) -> None:
        i = 0
        deadline = time.monotonic() + 60  # bounded whatever the test does
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.paused.is_set():
                self.idle.set()
                time.sleep(0.02)
                continue
            self.idle.clear()
            i += 1
            if i % 10 == 0:
                raw, src = f"CONNECT mx{i}.victim.example:25 HTTP/1.1\r\nHost: x\r\n\r\n", ABUSER
            else:
                raw, src = f"GET /page/{i} HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n", \
                    CLIENT
            try:
                http_request(self.host, self.port, raw, source=src, timeout=3)
                self.sent += 1
            except OSError:
                self.errors += 1
            time.sleep(0.002)
        self.idle.set()


def _logrotate_conf(path: Path, log: Path, mode: str, pidfile: Path) -> Path:
    if mode == "create":
        body = (f"    create 0644 root root\n    postrotate\n"
                f"        kill -USR1 $(cat {pidfile})\n    endscript\n")
    else:
        body = "    copytruncate\n"
    path.write_text(f"{log} {{\n    rotate 20\n    missingok\n    nocompress\n{body}}}\n")
    os.chmod(path, 0o644)
    return path


def _rotate(conf: Path, statefile: Path) -> None:
    res = subprocess.run(["logrotate", "-f", "-s", str(statefile), str(conf)],
                         capture_output=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr.decode(errors="replace")


def test_rotation_both_modes_and_kill9_lose_and_repeat_nothing(tmp_path: Path) -> None:
    port = free_port(HOST)
    with apache(HOST, port, "") as httpd:
        wd = httpd.workdir
        log = wd / "access.log"
        pidfile = wd / "apache2.pid"
        create = _logrotate_conf(wd / "rotate-create.conf", log, "create", pidfile)
        copytrunc = _logrotate_conf(wd / "rotate-copytruncate.conf", log, "copytruncate",
                                    pidfile)
        lr_state = wd / "logrotate.state"
        db = tmp_path / "watch.sqlite"
        cfg = tmp_path / "watch.toml"
        cfg.write_text(
            "[watch]\npoll_interval = 0.1\nlinger = 3\ncheckpoint_interval = 0.2\n"
            "line_digest = true\nstart = \"beginning\"\n"
            "[alerts]\nstdout = true\n")
        args = [str(log), "--config", str(cfg), "--state", str(db)]
        traffic = Traffic(HOST, port)
        traffic.start()
        try:
            with watcher(tmp_path, args, "first") as w1:
                wait_until(lambda: state(db).get("lines", 0) > 50, 15)
                _rotate(create, lr_state)  # rename + create, Apache reopens on USR1
                time.sleep(1.0)
                assert state(db).get("lines", 0) > 0, w1.stderr()
                w1.kill9()  # mid-traffic, mid-linger of the renamed file
            time.sleep(0.3)
            traffic.paused.set()  # logrotate's own copy->truncate gap loses lines: keep it empty
            assert traffic.idle.wait(10)
            _rotate(copytrunc, lr_state)  # ... while the watcher is down
            traffic.paused.clear()
            time.sleep(0.5)
            with watcher(tmp_path, args, "second") as w2:
                time.sleep(1.0)
                _rotate(create, lr_state)
                time.sleep(0.7)
                traffic.paused.set()
                assert traffic.idle.wait(10)
                _rotate(copytrunc, lr_state)  # while the watcher runs
                traffic.paused.clear()
                time.sleep(1.0)
                traffic.stop.set()
                traffic.join(15)
                files = sorted(wd.glob("access.log*"))
                truth = ground_truth(files)
                doc = wait_until(lambda: (d := state(db)).get("lines") == truth[0] and d, 20) \
                    or state(db)
                assert w2.terminate() == 0, w2.stderr()
                doc = state(db)
        finally:
            traffic.stop.set()
            traffic.join(15)
        lines, connects, digest = truth
        assert len(files) == 5, files  # access.log + four rotations
        assert traffic.sent > 200 and lines == traffic.sent, (traffic.sent, traffic.errors)
        assert doc["lines"] == lines, (doc["lines"], lines, w2.stderr())
        assert doc["line_digest"] == digest  # the same lines, none twice, none missing
        assert proxy_events(doc, "proxy-smtp") == connects == traffic.sent // 10
        assert "rotated while stopped" in (tmp_path / "second.stderr").read_text() or \
            "truncated" in (tmp_path / "second.stderr").read_text()
        # alerts: the proxy-smtp incident opened once, in the first run
        alerts = (tmp_path / "first.stdout").read_text().splitlines()
        assert any('"event": "open"' in a and '"kind": "proxy-smtp"' in a for a in alerts)
