"""The one result type every capability emits, and the vocabulary it is written in.

Audit rules, probes, log detectors and blocklist checks all answer "what can a stranger make
this host relay?" from different evidence, so they all produce `Finding`s in the same
categories; reporters and exit codes only ever see these values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any


class Severity(IntEnum):
    """How bad it is if the finding is true; ordered so thresholds compare with `>=`."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Read a severity name as users type it (`high`, `HIGH`)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (one of: {names})") from None


class Confidence(IntEnum):
    """How sure the evidence makes us: `confirmed` only with proof (canary hit, real relay)."""

    POSSIBLE = 1
    LIKELY = 2
    CONFIRMED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class Category(StrEnum):
    """Stable vocabulary users script against; add members, never repurpose one."""

    OPEN_HTTP_PROXY = "open-http-proxy"
    OPEN_CONNECT_PROXY = "open-connect-proxy"
    SMTP_VIA_PROXY = "smtp-via-proxy"
    OPEN_SOCKS_PROXY = "open-socks-proxy"
    OPEN_SMTP_RELAY = "open-smtp-relay"
    PROXY_ABUSE = "proxy-abuse"
    RELAY_ABUSE = "relay-abuse"
    BLOCKLISTED = "blocklisted"
    # Not a relay path by itself, but it weakens the defence or hides relaying
    # (a proxy that strips Via, modules loaded for nothing). Kept apart so that
    # scripts counting relay paths never count these.
    HARDENING = "hardening"
    # Traffic far above its own baseline in the logs (requests per minute, deferred/bounced
    # mail): what relaying does to a server, seen even where no line names the relay.
    VOLUME_ANOMALY = "volume-anomaly"


CATEGORY_MEANINGS: dict[Category, str] = {
    Category.OPEN_HTTP_PROXY: "an outside client gets absolute-URI or Host-header HTTP requests "
    "forwarded to third-party hosts",
    Category.OPEN_CONNECT_PROXY: "an outside client gets a CONNECT tunnel to third-party hosts",
    Category.SMTP_VIA_PROXY: "through a proxy path an outside client reaches a third-party SMTP "
    "port (25, 465, 587): the spam vector",
    Category.OPEN_SOCKS_PROXY: "SOCKS 4/4a/5 tunnels for an outside client without credentials",
    Category.OPEN_SMTP_RELAY: "the MTA accepts mail from an outside, unauthenticated client for "
    "foreign domains",
    Category.PROXY_ABUSE: "logs show proxy relaying that actually happened",
    Category.RELAY_ABUSE: "logs show mail relaying that actually happened",
    Category.BLOCKLISTED: "a blocklist lists the host or domain",
    Category.HARDENING: "not a relay path by itself, but weakens the defence or hides relaying",
    Category.VOLUME_ANOMALY: "logs show traffic far above its own baseline (requests, "
    "deferred or bounced mail): a symptom relaying causes, not proof of it",
}


@dataclass(frozen=True, slots=True)
class Location:
    """Where a finding lives: a file and line (audit, logs) or a network target (probe, DNS)."""

    path: str | None = None
    line: int | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"{self.path}:{self.line}" if self.line is not None else self.path
        if self.host is not None:
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"{host}:{self.port}" if self.port is not None else host
        return "-"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("path", self.path), ("line", self.line),
                                  ("host", self.host), ("port", self.port)) if v is not None}


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a person needs to believe a finding: config lines, a transcript, log lines, DNS."""

    kind: str  # "config" | "transcript" | "log" | "dns" | "note"
    text: str
    location: Location | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "text": self.text}
        if self.location is not None:
            out["location"] = self.location.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class Edit:
    """One minimal change to a config file that closes a hole (`--fix` turns these into diffs).

    Lines `line .. line+len(old)-1` (1-based) must currently read `old`; they are replaced by
    `new`. An empty `old` inserts `new` before `line` (use last line + 1 to append).
    """

    path: str
    line: int
    old: tuple[str, ...]
    new: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "old": list(self.old), "new": list(self.new)}


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a stranger can make the host relay (or a fact that weakens the defence)."""

    rule: str
    category: Category
    severity: Severity
    confidence: Confidence
    title: str
    location: Location = field(default_factory=Location)
    evidence: tuple[Evidence, ...] = ()
    fix: str | None = None
    edits: tuple[Edit, ...] = ()
    # Further categories the same hole belongs to: a chain (a proxy into the local MTA that
    # trusts it) is one hole that is both `smtp-via-proxy` and `open-smtp-relay`, reported
    # once. `category` stays the primary one; `categories` lists all, primary first.
    also: tuple[Category, ...] = ()

    @property
    def categories(self) -> tuple[Category, ...]:
        """Every category this finding counts in, its primary `category` first."""
        return (self.category, *(c for c in self.also if c != self.category))

    @property
    def target(self) -> str | None:
        """`host:port` for network findings, None for file findings."""
        return str(self.location) if self.location.host is not None else None

    def fingerprint(self) -> str:
        """Stable identity across runs: same rule, place and title give the same hash."""
        import hashlib  # here: OpenSSL's start is ~3 ms of every command's, and few need it

        key = "\x00".join((self.rule, str(self.location), self.category.value, self.title))
        return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "category": self.category.value,
            "categories": [c.value for c in self.categories],
            "severity": self.severity.label,
            "confidence": self.confidence.label,
            "title": self.title,
            "location": self.location.to_dict(),
            "target": self.target,
            "evidence": [e.to_dict() for e in self.evidence],
            "fix": self.fix,
            "edits": [e.to_dict() for e in self.edits],
            "fingerprint": self.fingerprint(),
        }


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """A check that could not be completed: never silently counted as clean."""

    source: str  # file path, host:port, zone…
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out


@dataclass(frozen=True, slots=True)
class Report:
    """Everything one command found: what reporters render and exit codes are computed from."""

    command: str
    findings: tuple[Finding, ...] = ()
    errors: tuple[ErrorEntry, ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def sorted_findings(self) -> list[Finding]:
        """Worst first, then by place, so every reporter tells the story in the same order."""
        return sorted(
            self.findings,
            key=lambda f: (-f.severity, -f.confidence, str(f.location), f.rule),
        )
