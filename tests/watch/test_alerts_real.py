"""Alerts through every channel to real local receivers; receivers down for a while (and the
watcher kill -9ed meanwhile) and the alerts still arrive once they are back; metrics; SIGHUP."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port
from tests.watch.helpers import state, wait_until, watcher
from tests.watch.receivers import (
    PASSWORD,
    USER,
    SmtpReceiver,
    SyslogReceiver,
    WebhookReceiver,
    self_signed,
)

pytestmark = pytest.mark.server

SMTP_HOST = "127.0.9.20"
HOOK_HOST = "127.0.9.21"
SYSLOG_HOST = "127.0.9.22"
METRICS_HOST = "127.0.9.23"

CONNECT_LINE = ('127.0.9.66 - - [25/Nov/2026:08:39:00 +0000] "CONNECT mx.victim.example:25 '
                'HTTP/1.1" 200 - "-" "-"\n')
HTTP_PROXY_LINE = ('127.0.9.67 - - [25/Nov/2026:08:40:00 +0000] "GET http://shop.example/x '
                   'HTTP/1.1" 502 310 "-" "-"\n')
SMTP_RELAY_LINE = ('Nov 25 08:41:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from '
                   'unknown[203.0.113.9]: 554 5.7.1 <a@b.example>: Relay access denied; '
                   'from=<x@y.example> to=<a@b.example> proto=ESMTP helo=<x>\n')
ORDINARY = '127.0.9.5 - - [25/Nov/2026:08:38:00 +0000] "GET /p{} HTTP/1.1" 200 12 "-" "c"\n'


def _config(tmp: Path, cert: Path, smtp_port: int, hook_port: int, syslog_port: int,
            out: Path, command: bool) -> str:
    cmd = (f'[alerts.command]\nargv = ["sh", "-c", "cat >> {out}"]\n' if command else "")
    return f"""
[watch]
poll_interval = 0.1
start = "beginning"
[incidents]
update_interval = 600
quiet = 600
[alerts]
stdout = true
batch_window = 0.1
retry_min = 0.3
retry_max = 1.0
[alerts.email]
host = "{SMTP_HOST}"
port = {smtp_port}
from = "watch@relayguard.test"
to = ["ops@relayguard.test"]
starttls = true
username = "{USER}"
password = "{PASSWORD}"
ca_file = "{cert}"
timeout = 5
[alerts.webhook]
url = "http://{HOOK_HOST}:{hook_port}/hook"
headers = {{ "X-Token" = "abc" }}
timeout = 3
[alerts.syslog]
address = "{SYSLOG_HOST}:{syslog_port}"
facility = "local3"
{cmd}"""


def _titles(alerts: list[dict]) -> list[str]:
    return [f"{a['event']}:{a['incident']['kind']}" for a in alerts]


def _metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_every_channel_delivers_and_nothing_is_dropped_while_receivers_are_down(
        tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, SMTP_HOST)
    smtp = SmtpReceiver(SMTP_HOST, free_port(SMTP_HOST), cert, key)
    hook = WebhookReceiver(HOOK_HOST, free_port(HOOK_HOST))
    syslog = SyslogReceiver(SYSLOG_HOST)
    cmd_out = tmp_path / "command.out"
    access, mail = tmp_path / "access.log", tmp_path / "mail.log"
    access.write_text("".join(ORDINARY.format(i) for i in range(10)))
    mail.write_text("")
    cfg = tmp_path / "watch.toml"
    cfg.write_text(_config(tmp_path, cert, smtp.port, hook.port, syslog.port, cmd_out, False))
    db = tmp_path / "w.sqlite"
    mport = free_port(METRICS_HOST)
    murl = f"http://{METRICS_HOST}:{mport}/metrics"
    args = [str(access), str(mail), "-c", str(cfg), "--state", str(db),
            "--metrics", f"{METRICS_HOST}:{mport}"]
    smtp.start()
    hook.start()
    try:
        with watcher(tmp_path, args, "w1") as w1:
            wait_until(lambda: state(db).get("lines") == 10, 15)
            with open(access, "a") as fh:
                fh.write(CONNECT_LINE)
            assert wait_until(lambda: len(smtp.messages) >= 1 and len(hook.alerts()) >= 1
                              and syslog.messages, 10), w1.stderr()
            assert _titles(hook.alerts()) == ["open:proxy-smtp"]
            msg = smtp.messages[0]
            assert msg["tls"] and msg["auth"] and msg["to"] == ["ops@relayguard.test"]
            assert "proxy-smtp" in msg["data"] and "mx.victim.example:25" in msg["data"]
            assert hook.posts[0]["headers"].get("X-Token") == "abc"
            assert syslog.messages[0].startswith("<154>")  # local3 (19) * 8 + critical (2)
            assert '"kind": "proxy-smtp"' in syslog.messages[0]
            assert wait_until(lambda: _metric(murl, "relayguard_watch_lines_read_total") == 11,
                              5)
            assert _metric(murl, 'relayguard_watch_alerts_sent_total{channel="webhook"}') == 1

            # receivers down: the next incident waits in the outbox, retried, not dropped
            smtp.stop()
            hook.stop()
            with open(access, "a") as fh:
                fh.write(HTTP_PROXY_LINE)
            assert wait_until(lambda: state(db).get("alerts_pending", {}).get("webhook"), 5)
            time.sleep(1.5)  # a few failed retries
            assert _metric(murl, 'relayguard_watch_alerts_failed_total{channel="webhook"}') >= 2
            assert len(hook.alerts()) == 1 and len(smtp.messages) == 1
            # ... and it stays there across a kill -9 (and one more alert while it is down)
            with open(mail, "a") as fh:
                fh.write(SMTP_RELAY_LINE)
            assert wait_until(lambda: state(db).get("alerts_pending", {}).get("webhook") == 2,
                              5)
            # delivery is at-least-once: a kill between printing an alert and marking it sent
            # would replay it, so the kill comes once stdout (always up) has marked its own
            assert wait_until(lambda: not state(db).get("alerts_pending", {}).get("stdout"), 5)
            w1.kill9()
        smtp.start()
        hook.start()
        cfg.write_text(_config(tmp_path, cert, smtp.port, hook.port, syslog.port, cmd_out,
                               False))
        with watcher(tmp_path, args, "w2") as w2:
            assert wait_until(lambda: len(hook.alerts()) == 3 and len(smtp.messages) >= 2, 10), \
                w2.stderr()
            assert sorted(_titles(hook.alerts())) == [
                "open:proxy-http", "open:proxy-smtp", "open:smtp-relay-denied"]
            body = "".join(m["data"] for m in smtp.messages)
            assert "smtp-relay-denied" in body and "proxy-http" in body
            assert wait_until(lambda: not state(db)["alerts_pending"], 5)
            # SIGHUP: a command channel appears without a restart
            cfg.write_text(_config(tmp_path, cert, smtp.port, hook.port, syslog.port, cmd_out,
                                   True))
            w2.signal(signal.SIGHUP)
            assert wait_until(lambda: "configuration reloaded" in w2.stderr(), 5)
            with open(access, "a") as fh:
                fh.write(CONNECT_LINE.replace("mx.victim.example:25", "bank.example:443"))
            assert wait_until(lambda: cmd_out.exists() and cmd_out.read_text().strip(), 10), \
                w2.stderr()
            got = [json.loads(x) for x in cmd_out.read_text().splitlines()]
            assert [(g["event"], g["incident"]["kind"]) for g in got] == [
                ("open", "proxy-connect")]
            assert w2.terminate() == 0
        # alerts on stdout: each (id) exactly once per process that created it
        ids = [json.loads(x)["id"] for name in ("w1", "w2")
               for x in (tmp_path / f"{name}.stdout").read_text().splitlines()]
        assert len(ids) == len(set(ids)) == 4, ids
    finally:
        smtp.stop()
        hook.stop()
        syslog.stop()
