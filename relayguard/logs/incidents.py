"""Incidents: events of one kind grouped in time, with the counts a person asks about.

An incident answers "since when, until when, how many, from whom, to where, did it work" for
one kind of abuse (CONNECT to SMTP ports, absolute-URI proxying, mail relayed for strangers,
bounces saying we are blocklisted…). All its fields are bounded (top-k clients and
destinations, a coarsening timeline, a few sample lines), so an incident of a billion events
costs the same memory as one of ten.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from relayguard.findings import Category
from relayguard.logs.counting import Distinct, Timeline, TopK, iso

GAP = 3600.0  # a quiet hour ends an incident
MAX_INCIDENTS_PER_KIND = 50
SAMPLES_HEAD = 3

KIND_CATEGORY: dict[str, Category | None] = {
    "proxy-smtp": Category.PROXY_ABUSE,
    "proxy-connect": Category.PROXY_ABUSE,
    "proxy-http": Category.PROXY_ABUSE,
    "proxy-host-header": Category.PROXY_ABUSE,
    "smtp-relayed": Category.RELAY_ABUSE,
    "smtp-relay-denied": Category.RELAY_ABUSE,
    "smtp-sasl-failures": Category.RELAY_ABUSE,
    "smtp-sender-volume": Category.RELAY_ABUSE,
    "smtp-blocklist-bounce": Category.BLOCKLISTED,
    "volume-spike": Category.VOLUME_ANOMALY,
    "mail-outcome-spike": Category.VOLUME_ANOMALY,
}

# Outcomes of one event: relayed (it went through), local (the server answered itself),
# refused (4xx / denied), failed (the server tried and the far side failed: 502/504),
# unknown (the log cannot tell).
OUTCOMES = ("relayed", "local", "refused", "failed", "unknown")


@dataclass(slots=True)
class Sample:
    """One evidence line and where it was read."""

    path: str
    line: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "text": self.text}


# What `Incident.add_many` takes per event: (time, client, destination, sample, outcome, status,
# bytes, to an SMTP port)
EventArgs = tuple[float | None, str | None, str | None, Sample | tuple[str, int, str],
                  str | None, str | None, int, bool]


@dataclass
class Incident:
    """Bounded aggregate of one kind of event over one stretch of time."""

    kind: str
    serial: int = 0  # its number within its book, a stable name for `watch`
    first: float | None = None
    last: float | None = None
    events: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    clients: TopK = field(default_factory=lambda: TopK(64))
    # how many clients: the top-k table holds at most 64, a botnet has hundreds
    client_count: Distinct = field(default_factory=lambda: Distinct(10000))
    destinations: TopK = field(default_factory=lambda: TopK(64))
    smtp_destinations: Distinct = field(default_factory=lambda: Distinct(10000))
    statuses: Counter[str] = field(default_factory=Counter)
    timeline: Timeline = field(default_factory=lambda: Timeline(cap=2048))
    head: list[Sample] = field(default_factory=list)
    tail: Sample | tuple[str, int, str] | None = None  # the latest: a Sample once asked for
    extra: dict[str, Any] = field(default_factory=dict)
    # 2xx answers whose meaning depends on what else is seen (size vs the site's own pages):
    # (size, path) -> [count, distinct hosts (<= 4)]; judged into `judged` by each snapshot.
    pending: dict[tuple[int | None, str], list[Any]] = field(default_factory=dict)
    judged: Counter[str] = field(default_factory=Counter)
    seen: set[tuple[str, int]] = field(default_factory=set)  # settled (path, size), <= 64
    seen_hosts: set[str] = field(default_factory=set)  # hosts of settled groups, <= 16

    def __setstate__(self, state: dict[str, Any]) -> None:
        """State pickled (`watch`) before `client_count` existed: its clients are the table's."""
        if "client_count" not in state:
            state["client_count"] = Distinct(10000)
            state["client_count"].keys.update(state["clients"].counts)
        self.__dict__.update(state)

    @property
    def category(self) -> Category | None:
        return KIND_CATEGORY[self.kind]

    def add(self, t: float | None, client: str | None, dest: str | None,
            sample: Sample | tuple[str, int, str], *, outcome: str | None = None,
            status: str | None = None, nbytes: int = 0, smtp: bool = False) -> None:
        """Count one event (outcome may be settled later through `outcomes`). The sample may
        come as a (path, line, text) tuple: most events only pass through `tail`, and a
        tuple costs a tenth of a Sample."""
        self.add_many([(t, client, dest, sample, outcome, status, nbytes, smtp)])

    def add_many(self, events: list[EventArgs]) -> None:
        """`add` of each event, in order, as (t, client, dest, sample, outcome, status, nbytes,
        smtp): each counter takes its column at once (a chunk of a spam run's log brings
        hundreds of events to one incident, and a call per counter and event cost more than
        the counting)."""
        if not events:
            return
        self.events += len(events)
        # the columns, and each filtered, in C-level passes (zip, filter, compress): a spam
        # run's slice brings hundreds of events to one incident
        times, clients, dests, _samples, outcomes, statuses, nbytes, smtp = zip(*events,
                                                                            strict=True)
        if None in times:
            times = tuple(t for t in times if t is not None)
        if times:
            self.note_time(min(times))
            self.note_time(max(times))
            self.timeline.add_many(times)
        known = list(filter(None, clients))
        self.clients.add_many(known)
        self.client_count.add_many(known)
        self.destinations.add_many(list(filter(None, dests)))
        self.smtp_destinations.add_many(list(filter(None, itertools.compress(dests, smtp))))
        self.outcomes.update(filter(None, outcomes))
        self.statuses.update(filter(None, statuses))
        self.bytes += sum(nbytes)
        head = self.head
        taken = min(len(events), SAMPLES_HEAD - len(head)) if len(head) < SAMPLES_HEAD else 0
        head += [e[3] if isinstance(e[3], Sample) else Sample(*e[3]) for e in events[:taken]]
        if len(events) > taken:
            self.tail = events[-1][3]

    def note_time(self, t: float | None) -> None:
        """Widen first/last to `t` (`add` does; `IncidentBook.current` decides by them which
        incident an event joins, so a caller that defers `add_many` calls this per event)."""
        if t is not None:
            if self.first is None or t < self.first:
                self.first = t
            if self.last is None or t > self.last:
                self.last = t

    def samples(self) -> list[Sample]:
        tail = self.tail
        if tail is not None and not isinstance(tail, Sample):
            self.tail = tail = Sample(*tail)
        return [*self.head, *([tail] if tail else [])]

    def add_pending(self, size: int | None, path: str, host: str) -> bool:
        """A 2xx whose outcome is decided at snapshot time; False when the bounded store
        (256 size groups) is full and the caller must settle it first."""
        key = (size, path)
        entry = self.pending.get(key)
        if entry is None:
            if len(self.pending) >= 256:
                return False
            entry = self.pending[key] = [0, set()]
        entry[0] += 1
        if len(entry[1]) < 4:
            entry[1].add(host)
        return True

    def settle(self) -> None:
        """Make the current judgement of the pending answers final and empty the store."""
        self.outcomes.update(self.judged)
        for (size, path), (_count, hosts) in self.pending.items():
            if size and not path.startswith("CONNECT") and len(self.seen) < 64:
                self.seen.add((path, size))
            for h in hosts:
                if len(self.seen_hosts) < 16:
                    self.seen_hosts.add(h)
        self.pending.clear()
        self.judged.clear()

    @property
    def all_outcomes(self) -> Counter[str]:
        return self.outcomes + self.judged

    @property
    def verdict(self) -> str:
        """relayed / probably served locally / refused / unknown, from the outcome counts
        (observed for incidents that are measurements, not requests)."""
        o = self.all_outcomes
        if not o:
            return "observed"  # a measurement (a volume spike), not requests with outcomes
        if o["relayed"]:
            return "relayed"
        if o["unknown"] or o["failed"]:
            return "unknown"
        if o["local"]:
            return "probably served locally"
        return "refused"

    def to_dict(self) -> dict[str, Any]:
        cat = self.category
        outcomes = self.all_outcomes
        out: dict[str, Any] = {
            "kind": self.kind,
            "category": cat.value if cat else None,
            "verdict": self.verdict,
            "first_seen": iso(self.first),
            "last_seen": iso(self.last),
            "events": self.events,
            "outcomes": {k: outcomes[k] for k in OUTCOMES if outcomes[k]},
            "successes": outcomes["relayed"],
            "bytes": self.bytes,
            "clients": self.clients.top(10),
            "clients_distinct": self.client_count.count(),
            "destinations": self.destinations.top(10),
            "smtp_destinations": self.smtp_destinations.count(),
            "statuses": dict(sorted(self.statuses.items())),
            "peak_per_minute": self.timeline.peak_per_minute(),
            "timeline": self.timeline.to_dict(),
            "samples": [s.to_dict() for s in self.samples()],
        }
        if self.clients.approximate or self.destinations.approximate or \
                self.client_count.overflow:
            out["approximate"] = True
        out.update(self.extra)
        return out


class IncidentBook:
    """Open and closed incidents per kind; a new incident starts after a quiet `GAP`.

    At most MAX_INCIDENTS_PER_KIND are kept per kind (later events join the last one); a
    long-running `watch` retires incidents once they are closed, so new bursts keep opening
    new incidents."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[Incident]] = {}
        self.serial = 0

    def current(self, kind: str, t: float | None) -> Incident:
        """The incident an event of `kind` at time `t` belongs to (opening one if needed)."""
        items = self.by_kind.get(kind)  # not setdefault: that makes a list every call
        if items is None:
            items = self.by_kind[kind] = []
        if items:
            cur = items[-1]
            if t is None or cur.last is None or len(items) >= MAX_INCIDENTS_PER_KIND:
                return cur
            if t - cur.last <= GAP and (cur.first is None or t >= cur.first - GAP):
                return cur  # a busy log's disorder steps back seconds, not hours
            # outside the latest incident: after a quiet hour a new one, unless the time is
            # an earlier incident's (another server's log read after this one, a clock set
            # back), which it joins
            for inc in itertools.islice(reversed(items), 1, None):  # no copy per event
                if inc.first is not None and inc.last is not None and \
                        inc.first - GAP <= t <= inc.last + GAP:
                    return inc
        serial = getattr(self, "serial", len(items))  # state pickled before serials existed
        inc = Incident(kind, serial=serial)
        self.serial = serial + 1
        items.append(inc)
        return inc

    def retire(self, inc: Incident) -> bool:
        """Forget a closed incident (True if it was in this book)."""
        items = self.by_kind.get(inc.kind, [])
        for i, cur in enumerate(items):
            if cur is inc:
                del items[i]
                return True
        return False

    def all(self) -> list[Incident]:
        out = [i for items in self.by_kind.values() for i in items]
        return sorted(out, key=lambda i: (i.first if i.first is not None else 0.0, i.kind))
