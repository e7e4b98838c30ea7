"""The watcher's persistent state in one SQLite file (standard library only).

What must survive a `kill -9` is written in ONE transaction: file positions, the detectors'
state (a versioned pickle blob) and the alerts those lines produced (into the outbox). So after
a crash the watcher resumes exactly where the last commit stood: every line after it is read
again and counted once, none before it twice. Alert delivery is at-least-once from the outbox;
rows are keyed by (alert id, channel), which is the deduplication. Block actions, the current
blocks and blocklist verdicts live here too, so they are remembered across restarts.

The pickle is trusted data: the file must be writable only by the watcher's user (it is created
0600).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from relayguard.errors import InputError
from relayguard.logs.follow import Position

SCHEMA_VERSION = 1
PICKLE_TAG = "relayguard-watch-state-1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS positions (
    path TEXT, dev INTEGER, ino INTEGER, offset INTEGER, head TEXT, head_len INTEGER,
    lineno INTEGER, retired_at REAL, PRIMARY KEY (path, dev, ino));
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT, channel TEXT, payload TEXT, created REAL, attempts INTEGER DEFAULT 0,
    next_try REAL, last_error TEXT, sent_at REAL, PRIMARY KEY (id, channel));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sent_at, next_try);
CREATE TABLE IF NOT EXISTS actions (
    time REAL, action TEXT, address TEXT, until REAL, reason TEXT, dry_run INTEGER);
CREATE TABLE IF NOT EXISTS blocks (address TEXT PRIMARY KEY, until REAL, reason TEXT,
    dry_run INTEGER);
CREATE TABLE IF NOT EXISTS blocklist_state (target TEXT, zone TEXT, state TEXT,
    PRIMARY KEY (target, zone));
"""


@dataclass(frozen=True)
class OutboxRow:
    """One alert waiting for (or done with) one channel."""

    id: str
    channel: str
    payload: dict[str, Any]
    attempts: int
    next_try: float
    last_error: str | None


class StateLock:
    """The one watcher a state file may have: two would read the same lines and overwrite
    each other's positions and detector state. An flock on the file itself (apart from
    SQLite's own locks, so `--status` and the watcher's threads still read and write it);
    the kernel drops it when the process ends, even by `kill -9`."""

    def __init__(self, path: str) -> None:
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise InputError(path, f"cannot open the state database: {exc}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise InputError(path, "in use by another `relayguard watch` (one watcher per "
                                   "state file; give this one its own --state)") from None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class StateDB:
    """A connection to the state file; one per thread (SQLite connections are not shared)."""

    def __init__(self, path: str) -> None:
        self.path = path
        new = not os.path.exists(path)
        try:
            if new:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            self.db = sqlite3.connect(path, timeout=30.0, isolation_level=None,
                                      check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise InputError(path, f"cannot open the state database: {exc}") from None
        version = self.get_meta("schema")
        if version is None:
            self.set_meta("schema", str(SCHEMA_VERSION))
        elif version != str(SCHEMA_VERSION):
            raise InputError(path, f"state schema {version}, this relayguard needs "
                                   f"{SCHEMA_VERSION}; move the file away to start afresh")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta ------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- the atomic checkpoint ---------------------------------------------------------------
    def checkpoint(self, positions: dict[str, list[Position]], detectors: Any,
                   alerts: Iterable[tuple[str, dict[str, Any]]], channels: Iterable[str],
                   extra_meta: dict[str, str] | None = None) -> None:
        """Positions + detector state + new alerts, all or nothing."""
        blob = pickle.dumps((PICKLE_TAG, detectors), protocol=pickle.HIGHEST_PROTOCOL)
        now = time.time()
        chans = list(channels)
        with self.transaction() as db:
            for path, items in positions.items():
                db.execute("DELETE FROM positions WHERE path=?", (path,))
                db.executemany(
                    "INSERT OR REPLACE INTO positions VALUES (?,?,?,?,?,?,?,?)",
                    [(p.path, p.dev, p.ino, p.offset, p.head, p.head_len, p.lineno,
                      p.retired_at) for p in items])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('detectors', ?)", (blob,))
            for key, value in (extra_meta or {}).items():
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            for alert_id, payload in alerts:
                text = json.dumps(payload, ensure_ascii=True, default=str)
                db.executemany(
                    "INSERT OR IGNORE INTO outbox (id, channel, payload, created, next_try) "
                    "VALUES (?,?,?,?,?)", [(alert_id, c, text, now, now) for c in chans])

    def load_positions(self) -> dict[str, list[Position]]:
        out: dict[str, list[Position]] = {}
        for row in self.db.execute("SELECT path, dev, ino, offset, head, head_len, lineno, "
                                   "retired_at FROM positions ORDER BY retired_at IS NULL"):
            out.setdefault(row[0], []).append(Position(*row))
        return out

    def load_detectors(self) -> Any:
        blob = self.get_meta("detectors")
        if blob is None:
            return None
        try:
            tag, value = pickle.loads(blob)
        except Exception as exc:  # a damaged blob must not crash-loop the daemon
            raise InputError(self.path, f"detector state unreadable ({exc}); move the file "
                                        f"away to start afresh") from None
        if tag != PICKLE_TAG:
            raise InputError(self.path, f"detector state of another version ({tag})")
        return value

    # -- outbox ----------------------------------------------------------------------------
    def add_alerts(self, alerts: Iterable[tuple[str, dict[str, Any]]],
                   channels: Iterable[str]) -> None:
        """Alerts that do not come from log lines (blocklist changes)."""
        self.checkpoint_alerts_only(alerts, channels)

    def checkpoint_alerts_only(self, alerts: Iterable[tuple[str, dict[str, Any]]],
                               channels: Iterable[str]) -> None:
        now = time.time()
        chans = list(channels)
        with self.transaction() as db:
            for alert_id, payload in alerts:
                text = json.dumps(payload, ensure_ascii=True, default=str)
                db.executemany(
                    "INSERT OR IGNORE INTO outbox (id, channel, payload, created, next_try) "
                    "VALUES (?,?,?,?,?)", [(alert_id, c, text, now, now) for c in chans])

    def due(self, channel: str, now: float, limit: int = 100) -> list[OutboxRow]:
        rows = self.db.execute(
            "SELECT id, channel, payload, attempts, next_try, last_error FROM outbox "
            "WHERE channel=? AND sent_at IS NULL AND next_try<=? ORDER BY created, id LIMIT ?",
            (channel, now, limit)).fetchall()
        return [OutboxRow(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    def next_due(self, channel: str) -> float | None:
        row = self.db.execute("SELECT MIN(next_try) FROM outbox WHERE channel=? AND "
                              "sent_at IS NULL", (channel,)).fetchone()
        return row[0] if row else None

    def mark_sent(self, rows: list[OutboxRow]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany("UPDATE outbox SET sent_at=?, attempts=attempts+1 WHERE id=? AND "
                           "channel=?", [(now, r.id, r.channel) for r in rows])

    def mark_failed(self, rows: list[OutboxRow], error: str, next_try: float) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE outbox SET attempts=attempts+1, last_error=?, next_try=? "
                           "WHERE id=? AND channel=?",
                           [(error[:500], next_try, r.id, r.channel) for r in rows])

    def retry_now(self, now: float) -> int:
        """Make every undelivered alert due at once (a start, or alerts reconfigured: the
        receiver may have been fixed meanwhile); returns how many are waiting."""
        with self.transaction() as db:
            db.execute("UPDATE outbox SET next_try=? WHERE sent_at IS NULL AND next_try>?",
                       (now, now))
        return sum(self.pending_count().values())

    def pending_count(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT channel, COUNT(*) FROM outbox WHERE sent_at IS NULL "
                                    "GROUP BY channel").fetchall())

    def purge_sent(self, older_than: float) -> None:
        """Delivered rows are kept a day for deduplication, then removed."""
        with self.transaction() as db:
            db.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at<?",
                       (older_than,))

    # -- response --------------------------------------------------------------------------
    def record_action(self, action: str, address: str, until: float | None, reason: str,
                      dry_run: bool) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO actions VALUES (?,?,?,?,?,?)",
                       (time.time(), action, address, until, reason, int(dry_run)))
            if action == "block":
                db.execute("INSERT OR REPLACE INTO blocks VALUES (?,?,?,?)",
                           (address, until, reason, int(dry_run)))
            elif action == "unblock":
                db.execute("DELETE FROM blocks WHERE address=?", (address,))

    def blocks(self) -> dict[str, float]:
        return dict(self.db.execute("SELECT address, until FROM blocks").fetchall())

    def actions(self) -> list[dict[str, Any]]:
        cols = ("time", "action", "address", "until", "reason", "dry_run")
        return [dict(zip(cols, r, strict=True))
                for r in self.db.execute("SELECT * FROM actions ORDER BY time")]

    # -- blocklist -------------------------------------------------------------------------
    def blocklist_states(self) -> dict[tuple[str, str], str]:
        return {(t, z): s for t, z, s in
                self.db.execute("SELECT target, zone, state FROM blocklist_state")}

    def save_blocklist_states(self, states: dict[tuple[str, str], str],
                              alerts: list[tuple[str, dict[str, Any]]],
                              channels: Iterable[str]) -> None:
        now = time.time()
        chans = list(channels)
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO blocklist_state VALUES (?,?,?)",
                           [(t, z, s) for (t, z), s in states.items()])
            for alert_id, payload in alerts:
                text = json.dumps(payload, ensure_ascii=True, default=str)
                db.executemany(
                    "INSERT OR IGNORE INTO outbox (id, channel, payload, created, next_try) "
                    "VALUES (?,?,?,?,?)", [(alert_id, c, text, now, now) for c in chans])
