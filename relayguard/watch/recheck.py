"""Blocklist re-checks on a schedule, alerting only when something changed.

Each run asks `relayguard.blocklist` about the configured targets; per (target, list) the state
(listed, not-listed, refused, unknown, unusable) is compared with the one saved in the state
database. Alerts go out for listed <-> not listed and for a list turning unusable or usable
again; on the very first run only listings and unusable lists are worth an alert. The states
are saved together with the alerts, in one transaction.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from typing import Any

from relayguard.errors import InputError
from relayguard.logs.counting import iso
from relayguard.watch.config import BlocklistConfig
from relayguard.watch.metrics import Metrics
from relayguard.watch.state import StateDB

log = logging.getLogger("relayguard.watch")

_INTERESTING_FIRST = {"listed", "unusable"}


def _zones(cfg: BlocklistConfig) -> tuple[Any, ...]:
    """The lists to ask: `zones` as `relayguard blocklist --zones` reads them
    (`NAME[:ip|domain]`), else the named zone set."""
    from relayguard.blocklist.zones import parse_zones, zone_set

    if cfg.zones:
        return parse_zones(cfg.zones)
    return zone_set(cfg.zone_set)


def run_check(cfg: BlocklistConfig) -> dict[tuple[str, str], tuple[str, str]]:
    """One check: (target, zone) -> (state, detail). Raises InputError on bad config."""
    from relayguard.blocklist.check import check
    from relayguard.blocklist.dnsclient import DnsClient, Nameserver
    from relayguard.blocklist.names import parse_target

    targets = [parse_target(t) for t in cfg.targets]
    if cfg.resolvers:
        servers = [Nameserver.parse(r) for r in cfg.resolvers]
    else:
        import dns.resolver

        try:
            conf = dns.resolver.Resolver(configure=True)
        except (dns.resolver.NoResolverConfiguration, OSError):
            raise InputError("[blocklist]", "no resolver configured") from None
        servers = [Nameserver.parse(str(ns)) for ns in conf.nameservers]
    client = DnsClient(servers, timeout=cfg.timeout, retries=1)
    result = check(targets, _zones(cfg), client)
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for t in result.targets:
        for res in t.lists:
            detail = ", ".join(d.value for d in res.decoded) or res.detail
            # a keyed zone's key is masked, in a query name in the detail too
            out[(t.origin, res.zone.shown)] = (str(res.state), res.zone.hide(detail))
    return out


def changes(old: dict[tuple[str, str], str],
            new: dict[tuple[str, str], tuple[str, str]]) -> list[dict[str, Any]]:
    """The changes worth an alert, as alert payloads (without ids)."""
    out = []
    zones_said: set[tuple[str, str]] = set()  # a list's health is one alert, not one per target
    for (target, zone), (state, detail) in sorted(new.items()):
        before = old.get((target, zone))
        if before == state:
            continue
        if before is None:
            if state not in _INTERESTING_FIRST:
                continue
        elif {before, state} <= {"refused", "unknown", "not-listed"}:
            continue  # transient answers are not news
        if "unusable" in (state, before):
            if (zone, state) in zones_said:
                continue
            zones_said.add((zone, state))
        if state == "listed":
            title, sev = f"{target} is listed by {zone}", "high"
        elif state == "unusable":
            title, sev = f"blocklist {zone} became unusable (answers not counted)", "medium"
        elif before == "listed":
            title, sev = f"{target} is no longer listed by {zone} ({state})", "info"
        elif before == "unusable":
            title, sev = f"blocklist {zone} is usable again", "info"
        else:
            continue
        out.append({"type": "blocklist", "event": "change", "target": target, "zone": zone,
                    "before": before, "state": state, "detail": detail, "title": title,
                    "severity": sev})
    return out


class Rechecker(threading.Thread):
    """Runs `run_check` every `interval` seconds in its own thread."""

    def __init__(self, cfg: BlocklistConfig, state_path: str, channels: list[str],
                 metrics: Metrics, on_alert: Any) -> None:
        super().__init__(name="blocklist", daemon=True)
        self.cfg, self.state_path, self.channels = cfg, state_path, channels
        self.metrics, self.on_alert = metrics, on_alert
        self.stopping = threading.Event()

    def run(self) -> None:
        db = StateDB(self.state_path)
        try:
            while not self.stopping.is_set():
                self.once(db)
                self.stopping.wait(self.cfg.interval)
        finally:
            db.close()

    def once(self, db: StateDB) -> int:
        """One re-check; returns the number of alerts queued."""
        try:
            new = run_check(self.cfg)
        except (InputError, OSError) as exc:
            log.error("blocklist re-check failed: %s", exc)
            return 0
        self.metrics.inc("blocklist_checks")
        now = time.time()
        alerts = []
        for p in changes(db.blocklist_states(), new):
            p["host"], p["time"] = socket.gethostname(), iso(now)
            key = f"{p['target']}|{p['zone']}|{p['before']}|{p['state']}|{int(now)}"
            p["id"] = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:20]
            alerts.append((p["id"], p))
        db.save_blocklist_states({k: v[0] for k, v in new.items()}, alerts, self.channels)
        if alerts:
            self.metrics.inc("alerts_created", len(alerts))
            self.on_alert()
        return len(alerts)
