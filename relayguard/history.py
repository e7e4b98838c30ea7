"""Scan history: every scan stored, and what changed since the last scan of the same host.

SQLite in the user's data directory by default; any SQLAlchemy URL (`postgresql://…`, driven
by psycopg 3 from the `postgres` extra) gives a team a shared store. Findings are compared by
a stable identity (`history_key`): rule, category and place, never the title, which carries
counts ("3 of 12 requests relayed") and per-run nonces. So ongoing abuse stays UNCHANGED night
after night while its counts grow, and "fixed" means that hole is gone, not merely that a
number moved.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from relayguard.errors import InputError
from relayguard.findings import Finding, Report

# A log finding's place is its first sample (`access.log.1:17` after a rotation, a new line
# number as the log grows): its identity is the log it comes from, rotation suffix dropped.
_LINE = re.compile(r":\d+$")
_ROTATED = re.compile(r"(\.\d+|-\d{8})(\.(gz|bz2|xz|zst))?$")


def identity(rule: str, category: str, location: str, title: str) -> str:
    """The identity of a finding across scans, from what the store keeps of it.

    Audit and probe findings: rule, category and place (file:line, host:port). Log findings:
    rule, category and the log file (no line, no rotation suffix). Blocklist findings: also
    which list (from the title's "ADDR is listed on ZONE" head; the rest is the meaning).
    Titles otherwise never count: they carry counts and nonces that change every run.
    """
    from relayguard.scan.correlate import rule_source

    source = rule_source(rule)
    place, subject = location, ""
    if source == "logs":
        place = _ROTATED.sub("", _LINE.sub("", location))
    elif source == "blocklist":
        subject = title.split(": ", 1)[0]
    key = "\x00".join((rule, category, place, subject))
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def history_key(f: Finding) -> str:
    """`identity` of a finding: the same hole keeps it from one scan to the next."""
    return identity(f.rule, f.category.value, str(f.location), f.title)

_META = sa.MetaData()
SCANS = sa.Table(
    "relayguard_scans", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(255), nullable=False, index=True),
    sa.Column("site", sa.String(255), nullable=False),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("verdict", sa.String(32), nullable=False),
    sa.Column("errors", sa.Integer, nullable=False),
    sa.Column("report", sa.Text, nullable=False),  # the JSON document of the output contract
)
FINDINGS = sa.Table(
    "relayguard_findings", _META,
    sa.Column("scan_id", sa.Integer, sa.ForeignKey("relayguard_scans.id"), nullable=False,
              index=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("rule", sa.String(100), nullable=False),
    sa.Column("category", sa.String(40), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("location", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
)


def default_url() -> str:
    """`$RELAYGUARD_DB`, else SQLite under `$XDG_DATA_HOME/relayguard` (~/.local/share)."""
    if os.environ.get("RELAYGUARD_DB"):
        return os.environ["RELAYGUARD_DB"]
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'relayguard' / 'history.sqlite'}"


@dataclass(frozen=True, slots=True)
class StoredScan:
    """One stored scan's summary."""

    id: int
    host: str
    site: str
    started: float
    verdict: str
    errors: int

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))


@dataclass(frozen=True, slots=True)
class Change:
    """New / fixed / unchanged findings between two scans of one host."""

    host: str
    before: StoredScan | None
    after: StoredScan
    new: tuple[dict[str, Any], ...]
    fixed: tuple[dict[str, Any], ...]
    unchanged: tuple[dict[str, Any], ...]


def with_driver(url: str) -> str:
    """`postgresql://` / `postgres://` mean psycopg 3 (the `postgres` extra), not SQLAlchemy's
    default psycopg2, which the extra does not install; explicit drivers are kept."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


class History:
    """A scan store at a SQLAlchemy URL; tables are created on first use."""

    def __init__(self, url: str | None = None) -> None:
        self.url = with_driver(url or default_url())
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = sa.create_engine(self.url)
            _META.create_all(self.engine)
        except (sa.exc.SQLAlchemyError, ImportError, ValueError, OSError) as exc:
            raise InputError("--db", f"cannot open history store {self._safe_url()}: "
                             f"{str(exc).splitlines()[0]}") from None

    def _safe_url(self) -> str:
        try:
            return sa.engine.make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return "(unparsable URL)"

    def record(self, report: Report, started: float | None = None) -> int:
        """Store one site's scan report; returns its id."""
        from relayguard.report.jsondoc import report_dict

        stats = report.stats if isinstance(report.stats, dict) else {}
        row = {"host": str(stats.get("host") or "?"), "site": str(stats.get("site") or "?"),
               "started": started if started is not None else time.time(),
               "verdict": str(stats.get("verdict") or "?"), "errors": len(report.errors),
               "report": json.dumps(report_dict(report), default=str)}
        with self.engine.begin() as conn:
            scan_id = int(conn.execute(SCANS.insert().values(**row)).inserted_primary_key[0])
            rows = [{"scan_id": scan_id, "fingerprint": key, "rule": f.rule,
                     "category": f.category.value, "severity": f.severity.label,
                     "location": str(f.location), "title": f.title}
                    for key, f in {history_key(f): f for f in report.findings}.items()]
            if rows:
                conn.execute(FINDINGS.insert(), rows)
        return scan_id

    def scans(self, host: str | None = None, limit: int = 50) -> list[StoredScan]:
        """Most recent first."""
        q = sa.select(SCANS.c.id, SCANS.c.host, SCANS.c.site, SCANS.c.started, SCANS.c.verdict,
                      SCANS.c.errors).order_by(SCANS.c.started.desc(), SCANS.c.id.desc())
        if host is not None:
            q = q.where(SCANS.c.host == host)
        with self.engine.connect() as conn:
            return [StoredScan(*r) for r in conn.execute(q.limit(limit))]

    def hosts(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.select(SCANS.c.host).distinct()))

    def _findings(self, scan_id: int) -> dict[str, dict[str, Any]]:
        q = sa.select(FINDINGS).where(FINDINGS.c.scan_id == scan_id)
        with self.engine.connect() as conn:
            # The key is recomputed, so scans stored under an older identity still compare.
            return {identity(r.rule, r.category, r.location, r.title): {
                k: getattr(r, k) for k in ("fingerprint", "rule", "category", "severity",
                                           "location", "title")} for r in conn.execute(q)}

    def changes(self, host: str) -> Change | None:
        """The latest scan of `host` against the one before it (None: never scanned)."""
        recent = self.scans(host, limit=2)
        if not recent:
            return None
        after = recent[0]
        before = recent[1] if len(recent) > 1 else None
        now = self._findings(after.id)
        then = self._findings(before.id) if before else {}
        order = ("critical", "high", "medium", "low", "info")

        def pick(keys: set[str], src: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], ...]:
            return tuple(sorted((src[k] for k in keys),
                                key=lambda d: (order.index(d["severity"]) if d["severity"] in
                                               order else 9, d["rule"], d["location"])))

        return Change(host, before, after, pick(now.keys() - then.keys(), now),
                      pick(then.keys() - now.keys(), then), pick(now.keys() & then.keys(), now))
