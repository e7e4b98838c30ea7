"""The `watch` main loop: follow, feed, review incidents, checkpoint, alert, respond.

One thread reads and decides; alert channels, the metrics server and blocklist re-checks run
in their own threads and talk to the main loop only through the state database (outbox) and
a wake-up event. A checkpoint (positions + detector state + new alerts, one transaction) is
taken at once when a batch produced alerts — so an alert is never sent for lines a crash could
make the watcher count again — and otherwise every `checkpoint_interval` seconds while lines
flow; a backlog's blocks are scanned on a second core meanwhile (pipeline.py), and what is in
flight is fed before any checkpoint. SIGTERM finishes the current batch, checkpoints and gives
channels a last try; SIGHUP re-reads the config (alerts, response, pacing, files, formats and
every detector option). The detector options (server_names, mail_domains, trusted_clients,
tz) always come from the current config and CLI, never from the state file: the state keeps
only what was learned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import replace
from typing import Any, TextIO

from relayguard.errors import InputError
from relayguard.logs.analyze import LogOptions
from relayguard.logs.follow import FileFollower, Waker, keep_read_blocks
from relayguard.logs.formats import LocalTime, zone
from relayguard.watch.alerts import Dispatcher
from relayguard.watch.config import WatchConfig, load_config
from relayguard.watch.engine import Alert, Engine
from relayguard.watch.metrics import Metrics, MetricsServer
from relayguard.watch.pipeline import Pipeline
from relayguard.watch.recheck import Rechecker
from relayguard.watch.respond import Responder, ResponseError
from relayguard.watch.state import StateDB, StateLock

log = logging.getLogger("relayguard.watch")

IDLE_REVIEW = 1.0  # review incidents (updates, closes) at least this often when idle
# while a backlog is read (blocks in flight), at most this often: a review of every 4 MiB
# block cost a tenth of the reading, and alerts from a backlog are late by the backlog anyway
BACKLOG_REVIEW = 0.05
PURGE_INTERVAL = 3600.0  # delivered alerts are removed from the outbox this often …
SENT_KEPT = 86400.0  # … once they are this old (kept that long for deduplication)


def options_of(cfg: WatchConfig) -> LogOptions:
    return LogOptions(server_names=cfg.server_names, mail_domains=cfg.mail_domains,
                      trusted_clients=cfg.trusted_clients,
                      tz=zone(cfg.tz) if cfg.tz else None)


def configure(engine: Engine, cfg: WatchConfig) -> list[str]:
    """Set the current config on an engine restored or running (restart, SIGHUP): forced
    formats (`Engine.set_forced`), the digest and every detector option
    (`Engine.reconfigure`). Returns what changed in the formats and options, in words."""
    changes = engine.set_forced(cfg.formats)
    engine.line_digest = cfg.line_digest
    return changes + engine.reconfigure(options_of(cfg), time.time())


def load_engine(db: StateDB, cfg: WatchConfig) -> tuple[Engine, list[str]]:
    """The saved engine under the current config (and what that changed), or a new one."""
    saved = db.load_detectors()
    engine = saved if isinstance(saved, Engine) else Engine(options_of(cfg))
    return engine, configure(engine, cfg)


class Watcher:
    """Everything one `relayguard watch` process runs."""

    def __init__(self, cfg: WatchConfig, *, config_path: str | None = None,
                 cli_files: tuple[str, ...] = (), cli_overrides: dict[str, Any] | None = None,
                 stdout: TextIO | None = None) -> None:
        self.config_path = config_path
        self.cli_files = cli_files
        self.cli_overrides = dict(cli_overrides or {})
        self.cfg = self._effective(cfg)
        if not self.cfg.files:
            raise InputError("watch", "no file to follow (give FILE arguments or "
                                      "[watch] files)")
        self.stdout = stdout or sys.stdout
        self.metrics = Metrics()
        self.db = StateDB(self.cfg.state)
        try:
            self.lock = StateLock(self.cfg.state)
        except InputError:
            self.db.close()
            raise
        self.engine, changes = load_engine(self.db, self.cfg)
        self.pipeline = Pipeline(self.engine)
        self.followers: dict[str, FileFollower] = {}
        self.dispatcher = Dispatcher(self.cfg.alerts, self.cfg.state, self.metrics, self.stdout)
        self.responder = Responder(self.cfg.respond, self.db, self.metrics)
        self._options_changed("options changed since the state was saved", changes)
        self.rechecker: Rechecker | None = None
        self.server: MetricsServer | None = None
        self.waker: Waker | None = None
        self.stopping = False
        self.reload_requested = False
        self.pending: list[Alert] = []
        self.dirty = False
        self.last_checkpoint = 0.0
        self.last_review = 0.0
        self.reviewed_lines = -1
        self.last_purge = 0.0
        self.saved_at: float | None = None  # when the state we resumed from was written
        self.undelivered = 0  # alerts still in the outbox at shutdown
        self.caught_up_at = time.time()

    def _effective(self, cfg: WatchConfig) -> WatchConfig:
        if self.cli_files:
            cfg = replace(cfg, files=self.cli_files)
        if self.cli_overrides:
            cfg = replace(cfg, **self.cli_overrides)
        for path in cfg.files:  # a typo a sysadmin makes: the log directory, not its logs
            if os.path.isdir(path):
                raise InputError(path, "is a directory: name the log files in it, e.g. "
                                       f"{os.path.join(path, 'access.log')}")
        return replace(cfg, files=tuple(dict.fromkeys(cfg.files)))

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        keep_read_blocks()  # a backlog is read in blocks: the same memory for each
        saved = self.db.load_positions()
        at = self.db.get_meta("checkpoint_at")
        self.saved_at = float(at) if at else None
        for path in self.cfg.files:
            self._follow(path, saved.get(path, []))
        self.waker = Waker(list(self.cfg.files), self.cfg.inotify)
        log.info("following %d file(s) (%s); state %s; syslog (mail) stamps read as %s",
                 len(self.followers), self.waker.kind, self.cfg.state,
                 LocalTime(self.engine.analysis.opt.tz).name())
        self.checkpoint()  # positions exist from the first moment: a crash loses nothing
        self._retry_queued("queued from an earlier run")
        self.dispatcher.start()
        if self.cfg.metrics:
            self.server = MetricsServer(self.metrics, self.cfg.metrics)
            self.server.start()
        self._start_rechecker()
        if self.responder.active and not self.cfg.respond.dry_run:
            try:
                self.responder.ensure()
            except ResponseError as exc:
                log.error("response disabled until nft works: %s", exc)
        self.responder.release_exempt(self.cfg.trusted_clients)

    def _retry_queued(self, why: str) -> None:
        """Undelivered alerts are tried again at once, not after their backoff: a restart or
        new alert settings are when a fixed receiver is expected to work."""
        waiting = self.db.retry_now(time.time())
        if waiting:
            log.info("%d alert(s) %s: delivering now", waiting, why)

    def _follow(self, path: str, saved: list[Any]) -> None:
        f = FileFollower(path, start_at_end=self.cfg.start == "end", linger=self.cfg.linger)
        f.resume(saved, self.saved_at)
        self.followers[path] = f

    def _start_rechecker(self) -> None:
        if self.cfg.blocklist.targets:
            self.rechecker = Rechecker(self.cfg.blocklist, self.cfg.state,
                                       self.dispatcher.channels, self.metrics,
                                       self.dispatcher.notify)
            self.rechecker.start()

    def stop(self) -> None:
        """Ask the loop to finish (signal-safe: only sets a flag)."""
        self.stopping = True

    def request_reload(self) -> None:
        self.reload_requested = True

    def _options_changed(self, why: str, changes: list[str]) -> None:
        """Log what the new config changed in the forced formats and detector options."""
        for change in changes:
            log.info("%s: %s", why, change)

    def run(self, once: bool = False) -> None:
        """Follow until stopped (or, with `once`, until every file is read to its end)."""
        self.start()
        try:
            while not self.stopping:
                if self.reload_requested:
                    self.reload()
                fed = self.step()
                if once and not fed:
                    break
                if not fed and self.waker is not None:
                    self.waker.wait(self.cfg.poll_interval)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self.pipeline.close()  # every line read is fed before the last review
        with contextlib.suppress(Exception):
            self.review(time.time(), force=True)
        self.checkpoint()
        self.dispatcher.notify()
        self.dispatcher.stop()
        if self.rechecker is not None:
            self.rechecker.stopping.set()
        if self.server is not None:
            self.server.stop()
        for f in self.followers.values():
            f.close()
        if self.waker is not None:
            self.waker.close()
        pending = self.db.pending_count()
        orphans = {ch: n for ch, n in pending.items() if ch not in self.dispatcher.channels}
        if orphans:  # kept: sent if that channel is configured again
            log.info("%d alert(s) queued for channels no longer configured (%s): not sent",
                     sum(orphans.values()), ", ".join(sorted(orphans)))
        pending = {ch: n for ch, n in pending.items() if ch not in orphans}
        self.undelivered = sum(pending.values())
        if self.undelivered:
            log.warning("%d alert(s) not delivered yet (%s): kept in %s, retried with "
                        "backoff and at once at the next start", self.undelivered,
                        ", ".join(f"{ch}: {n}" for ch, n in sorted(pending.items())),
                        self.cfg.state)
        self.db.close()
        self.lock.release()
        log.info("stopped after %d line(s)", self.engine.counters.lines)

    def reload(self) -> None:
        self.reload_requested = False
        if self.config_path is None:
            log.info("SIGHUP: no --config file to re-read")
            return
        try:
            new = self._effective(load_config(self.config_path))
        except InputError as exc:
            log.error("SIGHUP: keeping the old configuration: %s", exc)
            return
        self.checkpoint()
        old = self.cfg
        self.cfg = replace(new, state=old.state)
        if new.alerts != old.alerts:
            self.dispatcher.stop()
            self.dispatcher = Dispatcher(self.cfg.alerts, self.cfg.state, self.metrics,
                                         self.stdout)
            self._retry_queued("queued before SIGHUP")
            self.dispatcher.start()
        self.responder = Responder(self.cfg.respond, self.db, self.metrics)
        if new.blocklist != old.blocklist or new.alerts != old.alerts:
            if self.rechecker is not None:
                self.rechecker.stopping.set()
                self.rechecker = None
            self._start_rechecker()
        saved = self.db.load_positions()
        for path in self.cfg.files:
            if path not in self.followers:
                self._follow(path, saved.get(path, []))
        for path in list(self.followers):
            if path not in self.cfg.files:
                self.followers.pop(path).close()
        if self.waker is not None:
            self.waker.close()
        self.waker = Waker(list(self.cfg.files), self.cfg.inotify)
        self._options_changed("SIGHUP", configure(self.engine, self.cfg))
        self.responder.release_exempt(self.cfg.trusted_clients)
        log.info("SIGHUP: configuration reloaded (%d file(s), channels: %s)",
                 len(self.followers), ", ".join(self.dispatcher.channels) or "none")

    # -- the loop body -----------------------------------------------------------------------
    def step(self) -> int:
        """Read what is there, feed it (through the pipeline: a backlog's blocks may still be
        in flight afterwards), review incidents. Returns the lines read, else the lines of
        earlier reads fed now; 0 means idle with nothing in flight."""
        read = 0
        for path, f in self.followers.items():
            # a big block of a fast-path log is read straight into a scan worker's slot
            for batch in f.poll(into=self.pipeline.reader(self.engine.formats.get(path))):
                fmt = self.engine.format_for(batch)
                if fmt is None:
                    if batch.buffer is not None:
                        batch.buffer.release()
                    f.rewind(batch)
                    continue
                self.pipeline.feed(batch, fmt)
                read += batch.lines
                self.dirty = True
            for event in f.events:
                log.info("%s", event)
            f.events.clear()
        # caught up: wait for what is in flight; else feed only what is finished
        fed = self.pipeline.collect() if read else self.pipeline.drain()
        for err in self.engine.errors:
            log.error("%s", err)
        self.engine.errors.clear()
        now = time.time()
        if not read:
            self.caught_up_at = now
        since = now - self.last_review
        if since >= IDLE_REVIEW or (self.engine.counters.lines != self.reviewed_lines and
                                    (not self.pipeline.busy or since >= BACKLOG_REVIEW)):
            self.review(now)
        if self.pending or (self.dirty and now - self.last_checkpoint
                            >= self.cfg.checkpoint_interval):
            self.checkpoint()
        if now - self.last_purge >= PURGE_INTERVAL:
            self.last_purge = now
            self.db.purge_sent(now - SENT_KEPT)  # else the outbox grows for ever
        self._metrics(now)
        return read or fed

    def review(self, now: float, force: bool = False) -> None:
        self.last_review = now
        self.reviewed_lines = self.engine.counters.lines  # fed lines, wherever fed
        alerts, changed = self.engine.review(now, self.cfg.update_interval, self.cfg.quiet,
                                             self.cfg.alerts.min_severity)
        if alerts:
            self.pending += alerts
            self.dirty = True
            for a in alerts:
                log.info("%s %s: %s", a.payload["type"], a.payload["event"], a.payload["title"])
            self.checkpoint()  # alerts leave only after the lines behind them are committed
        for inc, finding in changed:
            self.responder.consider(inc, finding)
        self.responder.expire()

    def checkpoint(self) -> None:
        """Positions, detector state and new alerts in one transaction; the batches in flight
        are fed first, so the positions cover only lines the detectors have seen."""
        self.pipeline.drain()
        positions = {p: f.positions() for p, f in self.followers.items()}
        alerts = [(a.id, a.payload) for a in self.pending]
        self.db.checkpoint(positions, self.engine, alerts, self.dispatcher.channels,
                           {"checkpoint_at": repr(time.time())})
        self.pending = []
        self.dirty = False
        self.last_checkpoint = time.time()
        if alerts:
            self.metrics.inc("alerts_created", len(alerts))
            self.dispatcher.notify()

    def _metrics(self, now: float) -> None:
        c = self.engine.counters
        m = self.metrics
        m.set("lines_read", c.lines)
        m.set("parse_errors", c.unparsed)
        m.set("unparsable_files", len(self.engine.unparsable))
        m.set("incidents", c.incidents_opened)
        m.set("lag_seconds", round(now - self.caught_up_at, 3))
        if self.server is not None:
            m.set("lag_bytes", sum(f.lag_bytes() for f in self.followers.values()))


def status(state_path: str) -> dict[str, Any]:
    """What a state file holds: counters, incidents, positions, outbox, blocks, actions."""
    db = StateDB(state_path)
    try:
        engine = db.load_detectors()
        out: dict[str, Any] = engine.status() if isinstance(engine, Engine) else {}
        out.pop("pid", None)
        out["positions"] = {p: [vars(x) for x in items]
                            for p, items in db.load_positions().items()}
        out["alerts_pending"] = db.pending_count()
        out["blocks"] = db.blocks()
        out["actions"] = db.actions()
        return out
    finally:
        db.close()
