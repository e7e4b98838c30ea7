"""What a watcher running for months runs into: more clients than the per-client table holds,
more bursts than an incident book keeps, and an outbox of delivered alerts."""

from __future__ import annotations

import io
import sqlite3
import time
from pathlib import Path

from relayguard.findings import Severity
from relayguard.logs.analyze import LogOptions
from relayguard.logs.follow import Batch, Position
from relayguard.logs.incidents import MAX_INCIDENTS_PER_KIND
from relayguard.watch.config import parse_config
from relayguard.watch.daemon import Watcher
from relayguard.watch.engine import Engine
from relayguard.watch.state import StateDB

LINE = '{ip} - - [{day:02d}/Nov/2026:{h:02d}:{m:02d}:00 +0000] "{req}" {status} {size} "-" "-"\n'
MAIL = ("Nov  1 10:{m:02d}:{s:02d} mx postfix/smtpd[7]: {qid}: client=x[{ip}]\n"
        "Nov  1 10:{m:02d}:{s:02d} mx postfix/qmgr[8]: {qid}: from=<a@b.example>, size=1, "
        "nrcpt=1\n")
DELIVERY = ("Nov  1 10:{m:02d}:{s:02d} mx postfix/smtp[9]: {qid}: to=<u@{dom}>, "
            "relay=m[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)\n")


def _feed(engine: Engine, name: str, lines: list[str], start: int) -> int:
    data = "".join(lines).encode()
    b = Batch(name, name, data, start, len(lines), Position(name, 1, 1))
    fmt = engine.format_for(b)
    assert fmt is not None
    engine.feed(b, fmt)
    return start + len(lines)


def test_a_new_relayer_after_a_thousand_clients_is_still_seen() -> None:
    """The per-client table was capped at 1000 and then ignored every new client; now the
    least recently active client that is not relaying makes room."""
    e = Engine(LogOptions())
    lines: list[str] = []
    for i in range(1200):  # 1200 clients, one ordinary delivery each
        qid = f"A{i:05d}"
        ip = f"10.{i // 250}.{i % 250}.1"
        lines += [MAIL.format(m=i // 60 % 60, s=i % 60, qid=qid, ip=ip),
                  DELIVERY.format(m=i // 60 % 60, s=i % 60, qid=qid, dom=f"d{i}.example")]
    nxt = _feed(e, "mail.log", lines, 1)
    spam = [MAIL.format(m=59, s=0, qid="SPAM1", ip="198.51.100.66")]
    spam += [DELIVERY.format(m=59, s=i, qid="SPAM1", dom=f"victim{i}.example") for i in range(5)]
    _feed(e, "mail.log", spam, nxt)
    relayed = [i for i in e.analysis.incidents() if i.kind == "smtp-relayed"]
    assert [(i.extra["client"], i.events) for i in relayed] == [("198.51.100.66", 5)]
    assert len(e.analysis.mail.relay_clients) == 1000
    assert e.analysis.mail.volume()["clients_dropped"] == 201


def test_bursts_beyond_the_book_each_open_their_own_incident() -> None:
    """60 bursts of refused scans a day apart (below the alert threshold) and then relaying:
    closed incidents are retired, so the relaying is its own incident with its own count,
    not merged into the 50th scan."""
    e = Engine(LogOptions())
    nxt, now = 1, 0.0
    assert MAX_INCIDENTS_PER_KIND < 60
    for day in range(1, 31):
        for h in (1, 13):
            scan = [LINE.format(ip="203.0.113.5", day=day, h=h, m=m,
                                req="CONNECT mx.example:25 HTTP/1.1", status=405, size=230)
                    for m in range(3)]
            nxt = _feed(e, "access.log", scan, nxt)
            now += 10
            assert e.review(now, 60, 300, Severity.HIGH)[0] == []  # low: followed silently
            now += 400
            assert e.review(now, 60, 300, Severity.HIGH)[0] == []  # closed, retired
    assert sum(len(v) for v in e.analysis.proxy.book.by_kind.values()) == 0
    relay = [LINE.format(ip="198.51.100.7", day=30, h=20, m=m,
                         req="CONNECT mx.example:25 HTTP/1.1", status=200, size="-")
             for m in range(4)]
    _feed(e, "access.log", relay, nxt)
    alerts = e.review(now + 1, 60, 300, Severity.HIGH)[0]
    assert [(a.payload["event"], a.payload["incident"]["events"],
             a.payload["incident"]["verdict"]) for a in alerts] == [("open", 4, "relayed")]
    assert alerts[0].payload["key"] == "proxy-smtp#60"
    assert len(e.tracker.items) == 1  # closed, retired incidents are forgotten by the tracker


def test_delivered_alerts_leave_the_outbox(tmp_path: Path) -> None:
    db_path = tmp_path / "w.sqlite"
    db = StateDB(str(db_path))
    db.checkpoint_alerts_only([("old", {"x": 1}), ("new", {"x": 2}), ("unsent", {"x": 3})],
                              ["stdout"])
    rows = {r.id: r for r in db.due("stdout", time.time() + 1)}
    db.mark_sent([rows["old"], rows["new"]])
    db.db.execute("UPDATE outbox SET sent_at=? WHERE id='old'", (time.time() - 2 * 86400,))
    db.close()
    log = tmp_path / "access.log"
    log.write_text(LINE.format(ip="10.0.0.1", day=1, h=1, m=1, req="GET / HTTP/1.1",
                               status=200, size=5))
    cfg = parse_config(f'[watch]\nfiles = ["{log}"]\nstart = "beginning"\n'
                       f'state = "{db_path}"\n[alerts]\nstdout = true\n')
    Watcher(cfg, stdout=io.StringIO()).run(once=True)
    with sqlite3.connect(db_path) as conn:
        left = {r[0]: r[1] for r in conn.execute("SELECT id, sent_at FROM outbox")}
    # a day-old delivered row is gone; the recent one stays (dedup); the unsent one was
    # delivered by this run and stays too
    assert set(left) == {"new", "unsent"}
