"""Alert channels and the outbox workers that deliver to them.

Alerts are first committed to the state database's outbox (with the log positions that caused
them), then delivered by one worker thread per channel: gathered for `batch_window` seconds
into one delivery, retried with exponential backoff (`retry_min` doubling up to `retry_max`)
while the receiver is down, and marked sent only after it accepted them. Nothing is dropped:
a failing alert stays in the outbox across restarts. Delivery is at-least-once; each alert
carries an `id` receivers can deduplicate on.

Channels: JSON lines on stdout, syslog (RFC 3164 over a unix socket or UDP), e-mail (smtplib,
optional implicit TLS / STARTTLS / AUTH), a webhook (HTTP POST of JSON through httpx) and a
command that gets each alert's JSON on stdin.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, TextIO

from relayguard.watch.config import AlertConfig, EmailConfig, SyslogConfig, WebhookConfig
from relayguard.watch.metrics import Metrics
from relayguard.watch.state import OutboxRow, StateDB

log = logging.getLogger("relayguard.watch")

FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5,
              "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
              "local5": 21, "local6": 22, "local7": 23}
SEVERITY_PRI = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}


class DeliveryError(Exception):
    """A channel could not deliver; the alerts stay in the outbox."""


def _line(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=True, sort_keys=True, default=str)


def summary(payload: dict[str, Any]) -> str:
    """One human line per alert (e-mail bodies, syslog)."""
    if payload.get("type") == "incident":
        inc = payload.get("incident", {})
        clients = ", ".join(f"{c} ({n})" for c, n in inc.get("clients", [])[:3])
        return (f"[{payload.get('event')}] {payload.get('severity')}: {payload.get('title')} "
                f"- {inc.get('events')} event(s), verdict {inc.get('verdict')}, "
                f"clients {clients or '-'}")
    return f"[{payload.get('event', payload.get('type'))}] {payload.get('title', '')}"


# ---------------------------------------------------------------------------------------------
# channels: each delivers a batch or raises DeliveryError

def deliver_stdout(stream: TextIO) -> Callable[[list[dict[str, Any]]], None]:
    def send(batch: list[dict[str, Any]]) -> None:
        try:
            stream.write("".join(_line(p) + "\n" for p in batch))
            stream.flush()
        except (OSError, ValueError) as exc:
            raise DeliveryError(f"stdout: {exc}") from None
    return send


def deliver_syslog(cfg: SyslogConfig) -> Callable[[list[dict[str, Any]]], None]:
    facility = FACILITIES.get(cfg.facility, 3)

    def send(batch: list[dict[str, Any]]) -> None:
        try:
            if cfg.address.startswith("/"):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                target: Any = cfg.address
            else:
                host, _, port = cfg.address.rpartition(":")
                family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_DGRAM)
                target = (host.strip("[]"), int(port or 514))
            with sock:
                for p in batch:
                    pri = facility * 8 + SEVERITY_PRI.get(str(p.get("severity")), 5)
                    stamp = time.strftime("%b %d %H:%M:%S")
                    msg = f"<{pri}>{stamp} relayguard[{os.getpid()}]: {_line(p)}"
                    sock.sendto(msg.encode("utf-8", "replace")[:60000], target)
        except (OSError, ValueError) as exc:
            raise DeliveryError(f"syslog {cfg.address}: {exc}") from None
    return send


def deliver_email(cfg: EmailConfig) -> Callable[[list[dict[str, Any]]], None]:
    def send(batch: list[dict[str, Any]]) -> None:
        msg = EmailMessage()
        first = batch[0]
        more = f" (+{len(batch) - 1} more)" if len(batch) > 1 else ""
        msg["Subject"] = f"[relayguard] {first.get('severity', '')}: {first.get('title', '')}" \
                         f"{more}"[:250]
        msg["From"] = cfg.sender
        msg["To"] = ", ".join(cfg.to)
        body = "\n".join(summary(p) for p in batch)
        body += "\n\nFull alerts (JSON, one per line):\n" + "\n".join(_line(p) for p in batch)
        msg.set_content(body + "\n")
        try:
            ctx = ssl.create_default_context(cafile=cfg.ca_file)
            if cfg.ssl:
                client: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout,
                                                        context=ctx)
            else:
                client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            with client:
                client.ehlo()
                if cfg.starttls and not cfg.ssl:
                    client.starttls(context=ctx)
                    client.ehlo()
                if cfg.username:
                    client.login(cfg.username, cfg.password or "")
                client.send_message(msg)
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            raise DeliveryError(f"smtp {cfg.host}:{cfg.port}: {exc}") from None
    return send


def deliver_webhook(cfg: WebhookConfig) -> Callable[[list[dict[str, Any]]], None]:
    import httpx

    def send(batch: list[dict[str, Any]]) -> None:
        body = {"source": "relayguard", "host": socket.gethostname(), "alerts": batch}
        try:
            with httpx.Client(timeout=cfg.timeout, follow_redirects=False) as client:
                resp = client.post(cfg.url, json=body, headers=dict(cfg.headers))
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook {cfg.url}: {exc}") from None
        if not 200 <= resp.status_code < 300:
            raise DeliveryError(f"webhook {cfg.url}: HTTP {resp.status_code}")
    return send


def deliver_command(argv: tuple[str, ...]) -> Callable[[list[dict[str, Any]]], None]:
    def send(batch: list[dict[str, Any]]) -> None:
        for p in batch:
            try:
                proc = subprocess.run(list(argv), input=_line(p).encode() + b"\n",
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      timeout=60, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise DeliveryError(f"command {argv[0]}: {exc}") from None
            if proc.returncode != 0:
                err = proc.stderr.decode("utf-8", "replace").strip()[:200]
                raise DeliveryError(f"command {argv[0]} exited {proc.returncode}: {err}")
    return send


def build_channels(cfg: AlertConfig,
                   stdout: TextIO) -> dict[str, Callable[[list[dict[str, Any]]], None]]:
    out: dict[str, Callable[[list[dict[str, Any]]], None]] = {}
    if cfg.stdout:
        out["stdout"] = deliver_stdout(stdout)
    if cfg.syslog:
        out["syslog"] = deliver_syslog(cfg.syslog)
    if cfg.email:
        out["email"] = deliver_email(cfg.email)
    if cfg.webhook:
        out["webhook"] = deliver_webhook(cfg.webhook)
    if cfg.command:
        out["command"] = deliver_command(cfg.command)
    return out


# ---------------------------------------------------------------------------------------------
# outbox workers

def backoff(attempts: int, lo: float, hi: float) -> float:
    """Seconds before the next try after `attempts` failures: lo, 2lo, 4lo, … capped at hi."""
    return min(hi, lo * (2 ** min(attempts, 30)))


class ChannelWorker(threading.Thread):
    """Delivers one channel's due outbox rows until stopped."""

    def __init__(self, name: str, send: Callable[[list[dict[str, Any]]], None], state_path: str,
                 cfg: AlertConfig, metrics: Metrics) -> None:
        super().__init__(name=f"alerts-{name}", daemon=True)
        self.channel, self.send, self.state_path = name, send, state_path
        self.cfg, self.metrics = cfg, metrics
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        db = StateDB(self.state_path)
        try:
            while not self.stopping.is_set():
                self.deliver_due(db)
                nxt = db.next_due(self.channel)
                wait = 5.0 if nxt is None else max(0.0, min(5.0, nxt - time.time()))
                self.wake.wait(wait)
                self.wake.clear()
                if not self.stopping.is_set() and self.cfg.batch_window > 0:
                    self.stopping.wait(self.cfg.batch_window)
            self.deliver_due(db)  # one last try on shutdown (bounded by the channel timeout)
        finally:
            db.close()

    def deliver_due(self, db: StateDB) -> None:
        for _ in range(100):  # bounded: at most 100 batches per wake-up
            rows = db.due(self.channel, time.time())
            if not rows:
                return
            try:
                self.send([r.payload for r in rows])
            except DeliveryError as exc:
                self._failed(db, rows, str(exc))
                return
            except Exception as exc:  # a channel bug must not kill the worker
                self._failed(db, rows, f"{type(exc).__name__}: {exc}")
                return
            db.mark_sent(rows)
            self.metrics.inc("alerts_sent", len(rows), channel=self.channel)

    def _failed(self, db: StateDB, rows: list[OutboxRow], error: str) -> None:
        attempts = max(r.attempts for r in rows)
        delay = backoff(attempts, self.cfg.retry_min, self.cfg.retry_max)
        db.mark_failed(rows, error, time.time() + delay)
        self.metrics.inc("alerts_failed", len(rows), channel=self.channel)
        log.warning("alert delivery failed (%s, %d alert(s)); retry in %.0fs: %s",
                    self.channel, len(rows), delay, error)


class Dispatcher:
    """All channel workers; `notify()` after a checkpoint that added alerts."""

    def __init__(self, cfg: AlertConfig, state_path: str, metrics: Metrics,
                 stdout: TextIO) -> None:
        self.workers = [ChannelWorker(name, send, state_path, cfg, metrics)
                        for name, send in build_channels(cfg, stdout).items()]

    @property
    def channels(self) -> list[str]:
        return [w.channel for w in self.workers]

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def notify(self) -> None:
        for w in self.workers:
            w.wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        for w in self.workers:
            w.stopping.set()
            w.wake.set()
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.join(max(0.1, deadline - time.monotonic()))
