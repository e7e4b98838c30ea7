"""Incremental detectors: fed one parsed line at a time, asked for a `snapshot()` at any point.

The batch `logs` command and the future `watch` share this code: state lives in small bounded
objects, `feed()` never looks back at earlier lines, and `snapshot()` does not change state (it
can be called after every line). Detectors never print and never build findings; they report
incidents, which `relayguard.logs.verdicts` turns into findings.
"""

from __future__ import annotations

import re
from bisect import bisect_left, insort
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from relayguard import PROBE_USER_AGENT
from relayguard.digits import is_digits
from relayguard.logs.apacheconf import ProxyConfig
from relayguard.logs.counting import Distinct, LruMap, Timeline, TopK, iso
from relayguard.logs.formats import AccessRecord, RecordFields, SyslogLine
from relayguard.logs.incidents import (
    GAP,
    MAX_INCIDENTS_PER_KIND,
    EventArgs,
    Incident,
    IncidentBook,
    Sample,
)
from relayguard.logs.sources import line_text

SMTP_PORTS = frozenset({25, 465, 587, 2525})
DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "ws": 80, "wss": 443}

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]{0,15})://([^/?#\s]*)([^\s]*)$")


try:  # the C fast path's module also parses request targets (built where a compiler is)
    from relayguard import _fastscan
except ImportError:
    _fastscan = None
_c_connect_shape = getattr(_fastscan, "connect_shape", None)  # see connect_shape
_c_connect_run = getattr(_fastscan, "connect_run", None)  # see feed_fields

_HOSTPORTS: dict[tuple[str, int | None], tuple[str, int | None]] = {}


def split_hostport(text: str, default: int | None = None) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port`, `host` -> (lower-cased host, port or default). In C for
    ASCII text where built (`_fastscan.split_hostport`, ~15x faster: a CONNECT's target is
    parsed once per event); else remembered for the last few thousand targets (a spam run
    asks for the same MX hosts again and again)."""
    if _fastscan is not None:
        got = _fastscan.split_hostport(text, default)
        if got is not None:
            return got  # type: ignore[no-any-return]
    key = (text, default)
    got = _HOSTPORTS.get(key)
    if got is None:
        got = _split_hostport(text, default)
        if len(_HOSTPORTS) >= 4096:
            _HOSTPORTS.clear()
        _HOSTPORTS[key] = got
    return got


def _split_hostport(text: str, default: int | None) -> tuple[str, int | None]:
    if "@" in text:
        text = text.rsplit("@", 1)[-1]
    if text.startswith("["):
        end = text.find("]")
        host = text[1:end] if end > 0 else text[1:]
        rest = text[end + 1:] if end > 0 else ""
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":", 1)
    else:
        host, port_text = text, ""
    port = int(port_text) if is_digits(port_text) and len(port_text) <= 5 else default
    return host.lower().rstrip("."), port


_STATUS_TEXT = {n: str(n) for n in range(100, 600)}  # one str() per event saved


def _join_hostport(host: str, port: int | None) -> str:
    """`host:port` as a destination is shown; an IPv6 host in brackets (`[::1]:25`), since
    `::1:25` is itself an address."""
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def status_text(status: int | None) -> str:
    """A status as an incident counts it (one str() per event saved for the usual ones)."""
    return _STATUS_TEXT.get(status) or ("-" if status is None else str(status))  # type: ignore[arg-type]


def web_outcome(status: int | None) -> str | None:
    """A web server's answer to a proxy request: settled, or None for a 2xx, which the sizes
    must judge (a server that is no proxy answers with its own page and a 200)."""
    if status is None:
        return "unknown"
    if 200 <= status < 300:
        return None
    if status in (502, 503, 504):
        return "failed"
    if status >= 400:
        return "refused"
    return "unknown"


# ConnectShape: (kind, destination, to an SMTP port, bytes, outcome, status text, size and key
# of the pending answer (None: settled), whether it votes for a body-size unit, whether its
# size is the server's own error page)
ConnectShape = tuple[str, str, bool, int, str | None, str, int | None, str | None, bool, bool]
_CONNECT_KEYS = {unit: f"CONNECT {unit}" for unit in ("body", "total", "guess")}


def connect_shape(target: str, status: int | None, size: int | None, bytes_out: int | None,
                  unit: str) -> ConnectShape:
    """What a CONNECT in a web server's log says by itself, whatever the detector has seen;
    `ProxyDetector._connect_row` does the rest. In C for an ASCII target where built
    (`_fastscan.connect_shape`: a spam run's log is little else, and this cost a fifth of
    each event in Python)."""
    if _c_connect_shape is not None:
        got = _c_connect_shape(target, status, size, bytes_out, unit)
        if got is not None:
            return got  # type: ignore[no-any-return]
    host, port = split_hostport(target)
    smtp = port in SMTP_PORTS
    outcome = web_outcome(status)
    nbytes = bytes_out if bytes_out is not None else (size or 0)
    own_error = outcome in ("refused", "failed") and unit != "body"
    psize: int | None = None
    pkey: str | None = None
    body_vote = False
    if outcome is None:
        # `CONNECT <unit>`: %b is "-" for a tunnel, %O counts its bytes
        psize = bytes_out if unit == "total" else size
        pkey = _CONNECT_KEYS.get(unit) or f"CONNECT {unit}"
        body_vote = unit == "guess" and not psize
    return ("proxy-smtp" if smtp else "proxy-connect", _join_hostport(host, port), smtp,
            nbytes, outcome, status_text(status), psize, pkey, body_vote, own_error)


def _close(a: int, b: int) -> bool:
    """Sizes equal within 2% (or 16 bytes): dynamic bits of a page move its size a little."""
    return abs(a - b) <= max(16, max(a, b) // 50)


def _distinct_sizes(sizes: list[int]) -> list[int]:
    """Sizes that are not `_close` to one another (greedy, in sorted order)."""
    out: list[int] = []
    for s in sorted(sizes):
        if not out or not _close(out[-1], s):
            out.append(s)
    return out


# How a request of relayguard's own probe ends in a combined (or vhost_combined, nginx) log
_PROBE_UA_ENDS = f'"{PROBE_USER_AGENT}"'  # (lines reach the detectors without their CR)


@dataclass
class OwnProbe:
    """Proxy requests that carried relayguard's probe User-Agent: this tool's own tests (a
    `probe` or `scan` run against the server), kept out of the incidents — a scan must not
    report its own probes of last month as abuse — but counted and told, never hidden: a
    User-Agent can be forged."""

    requests: int = 0
    clients: Distinct = field(default_factory=lambda: Distinct(64))
    first: float | None = None
    last: float | None = None

    def add(self, t: float | None, client: str | None) -> None:
        self.requests += 1
        if client:
            self.clients.add(client)
        if t is not None:
            if self.first is None or t < self.first:
                self.first = t
            if self.last is None or t > self.last:
                self.last = t

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "clients": sorted(self.clients.keys),
                "clients_approximate": self.clients.overflow,
                "first_seen": iso(self.first), "last_seen": iso(self.last)}

    def story(self) -> str:
        d = self.to_dict()
        return (f"{self.requests} proxy request(s) carried relayguard's probe User-Agent "
                f"({', '.join(d['clients'][:5]) or 'no client'}, {d['first_seen']} .. "
                f"{d['last_seen']}): left out of the incidents as this tool's own tests; if "
                "no relayguard probe ran against this server then, they are abuse disguised "
                "as one")


@dataclass
class LocalPages:
    """Sizes of the site's own 2xx pages per path (bounded), to recognise a local answer."""

    cap_paths: int = 4096
    sizes: dict[str, list[int]] = field(default_factory=dict)
    smallest: int | None = None  # the smallest answer the server wrote itself (any status)

    def note(self, path: str, size: int) -> None:
        if size <= 0:
            return
        self.note_own(size)
        known = self.sizes.get(path)
        if known is None:
            if len(self.sizes) >= self.cap_paths:
                return
            self.sizes[path] = [size]
        elif len(known) < 8 and all(not _close(s, size) for s in known):
            known.append(size)

    def matches(self, path: str, size: int) -> bool:
        """The size is one the site itself answered for this path (or `/` for the home page);
        for a page whose size varies a lot (8 sizes seen), anything within its range."""
        sizes = self.sizes.get(path, ())
        if path in ("/", "") or path.startswith("/?"):
            sizes = [*sizes, *self.sizes.get("/", ())]  # for "/" its sizes twice, as ever
        if not sizes:  # a path the site never served: most proxy requests
            return False
        if any(_close(s, size) for s in sizes):
            return True
        return len(sizes) >= 8 and min(sizes) <= size <= max(sizes)

    def note_own(self, size: int) -> None:
        """Any answer the server wrote itself (a local page, its 403/405 error page)."""
        if size > 0 and (self.smallest is None or size < self.smallest):
            self.smallest = size

    def home_matches(self, size: int) -> bool:
        return any(_close(s, size) for s in self.sizes.get("/", ()))

    def any_matches(self, size: int) -> bool:
        """The size of some local page (whatever its path)."""
        return any(_close(s, size) for sizes in self.sizes.values() for s in sizes)

    def informative(self, path: str) -> bool:
        """Known with a stable size: a different size for it is not the local page."""
        key = "/" if path in ("", "/") or path.startswith("/?") else path
        return 0 < len(self.sizes.get(key, ())) < 4


class ProxyDetector:
    """Proxy use seen in access logs: CONNECT, absolute-URI and Host-header requests.

    Refused attempts (4xx, denied) are a scan; 2xx answers are judged against the site's own
    pages, because an Apache that is not a proxy answers `GET http://other/` with its own
    page and a 200. The server's config, when given (`ProxyConfig`), settles what it can.
    """

    own_probe: OwnProbe | None = None  # requests of relayguard's own probe, set apart
    # inside `deferring()`: the events fed, per incident in order, not yet counted into it
    _deferred: dict[int, tuple[Incident, list[EventArgs]]] | None = None

    def __init__(self, server_names: frozenset[str] = frozenset(),
                 config: ProxyConfig | None = None) -> None:
        self.given_names = _own_names(server_names)
        self.learned_names = Distinct(256)
        self.local = LocalPages()
        self.book = IncidentBook()
        self.own_host_absolute = 0
        self.config = config
        # what a stock-nickname size field counts, from the log itself: a 304 has no body, so
        # `304 -` (or 0) is %b and `304 <n>` is %O (headers); a tunnel logged `200 -` is %b
        self.size_votes = {"body": 0, "total": 0}

    def note_size_evidence(self, body: int, total: int) -> None:
        """Lines that show what a guessed size field counts (fed by the fast path too)."""
        self.size_votes["body"] += body
        self.size_votes["total"] += total

    def size_unit(self, unit: str) -> str:
        """A format's size unit, with "guess" settled by the evidence when it is one-sided."""
        if unit != "guess":
            return unit
        body, total = self.size_votes["body"], self.size_votes["total"]
        if total and not body:
            return "total"
        if body and not total:
            return "body"
        return "guess"

    # -- feeding ------------------------------------------------------------------------------
    @contextmanager
    def deferring(self) -> Iterator[None]:
        """Within it, `feed` counts each event into its incident when the block ends, each
        incident's events at once (`Incident.add_many`): the fast path feeds each slice of a
        chunk's proxy requests so. Everything else `feed` decides (the incident, the pending
        answers and their judging) happens per event as ever, and nothing reads the deferred
        counts before the block ends."""
        self._deferred = {}
        try:
            yield
        finally:
            deferred = self._deferred
            del self._deferred  # back to the class's None: nothing of it is pickled
            for inc, events in deferred.values():
                inc.add_many(events)

    def names(self) -> set[str]:
        return set(self.given_names) | self.learned_names.keys

    def note_local(self, path: str, size: int) -> None:
        """A 2xx GET/HEAD of a local path and its size (fed directly by the fast path)."""
        self.local.note(path, size)

    def feed(self, rec: AccessRecord, path: str, lineno: int, line: str,
             event: bool = True) -> Incident | None:
        """Account one request; returns the incident it joined (None for ordinary traffic).
        `event=False` (a line outside --since/--until) only teaches the site's own names,
        pages and size unit, which judge the events in range: a window must not change them."""
        method, target = rec.method, rec.target
        if method == "CONNECT" and not rec.proxy_log:
            return self.feed_connect(rec.time, rec.client, target, rec.status, rec.size,
                                     rec.vhost, rec.bytes_out, rec.size_unit, path, lineno,
                                     line, event)
        self._learn(rec.vhost, rec.status, rec.size, rec.size_unit)
        if method == "CONNECT":
            host, port = split_hostport(target)
            if port not in SMTP_PORTS:
                return None  # a forward proxy tunnelling HTTPS: its job, as for GETs below
            kind, dest, req_path = "proxy-smtp", _join_hostport(host, port), ""
        else:
            m = _SCHEME.match(target)
            if m is not None:
                scheme = m.group(1).lower()
                host, port = split_hostport(m.group(2), DEFAULT_PORTS.get(scheme))
                req_path = m.group(3) or "/"
                if host in self.given_names or (not self.given_names and host in
                                                self.learned_names.keys):
                    if event:
                        self.own_host_absolute += 1
                    self._note_origin(rec, req_path)
                    return None
                if rec.proxy_log and port not in SMTP_PORTS:
                    return None  # a forward proxy's ordinary job; only SMTP targets matter
                kind = "proxy-smtp" if port in SMTP_PORTS else "proxy-http"
                dest = _join_hostport(host, None if port == DEFAULT_PORTS.get(scheme) else port)
            elif rec.host_header and self.given_names:
                host, port = split_hostport(rec.host_header)
                if host in self.given_names or host in self.learned_names.keys:
                    self._note_origin(rec, target)
                    return None
                kind, dest, req_path = "proxy-host-header", host, target
            else:
                self._note_origin(rec, target)
                return None
        if not event or self._own_probe(line, rec.time, rec.client):
            return None
        inc = self.book.current(kind, rec.time)
        nbytes = rec.bytes_out if rec.bytes_out is not None else (rec.size or 0)
        outcome = self._outcome(rec)
        self._count(inc, (rec.time, rec.client, dest, (path, lineno, line), outcome,
                          status_text(rec.status), nbytes, port in SMTP_PORTS))
        if outcome in ("refused", "failed") and rec.size_unit != "body":
            self.local.note_own(nbytes)  # the server's own error page, headers included
        if outcome is None:  # (a web server's answer: a proxy's are settled by its codes)
            self._pend(inc, rec.size if rec.size is not None else rec.bytes_out,
                       req_path or "/", dest)
        return inc

    def feed_connect(self, t: float | None, client: str, target: str, status: int | None,
                     size: int | None, vhost: str | None, bytes_out: int | None, unit: str,
                     path: str, lineno: int, line: str, event: bool = True) -> Incident | None:
        """`feed` of one CONNECT in a web server's log."""
        if not event:
            self._learn(vhost, status, size, unit)
            return None
        return self._connect_row(
            (t, client, "CONNECT", target, status, size, vhost, None, None, bytes_out, None),
            lineno, line, unit, path)

    def feed_fields(self, fields: list[RecordFields | None], cands: list[tuple[int, bytes]],
                    unit: str, path: str, base: int,
                    keep: Callable[[float | None], bool] | None = None) -> None:
        """The fast path's share of one slice of a chunk's candidate lines: (line number in
        the chunk, raw line) and their parsed fields (None: the line did not parse), fed in
        order; `keep` (--since/--until) says which times are events. Inside `deferring()`
        the C scanner's `connect_run` takes the CONNECTs that need nothing but counting into
        the latest incident of their kind (a spam run's log is little else: ~15k
        instructions an event in Python); `_connect_row`, its reference, and `feed` take
        every other line."""
        run = _c_connect_run if keep is None and self._deferred is not None else None
        i, n = 0, len(cands)
        while i < n:
            if run is not None:
                i, own_min, body = run(fields, cands, i, base, unit, path, self.book.by_kind,
                                       self._deferred, GAP, MAX_INCIDENTS_PER_KIND,
                                       _PROBE_UA_ENDS)
                if own_min is not None:
                    self.local.note_own(own_min)  # (its smallest: all note_own keeps)
                self.size_votes["body"] += body
                if i >= n:
                    break
            f, (lineno, raw) = fields[i], cands[i]
            i += 1
            if f is None or (keep is not None and not keep(f[0])):
                continue
            if f[2] == "CONNECT":  # a web server's log: straight from the fields
                self._connect_row(f, base + lineno, line_text(raw), unit, path)
            else:
                self.feed(AccessRecord(*f, size_unit=unit), path, base + lineno,
                          line_text(raw))

    def _connect_row(self, f: RecordFields, lineno: int, line: str, unit: str,
                     path: str) -> Incident | None:
        """One CONNECT in a web server's log: what the request says by itself comes from
        `connect_shape`, the rest from what the detector has seen."""
        t, client, target, status, size, vhost = f[0], f[1], f[3], f[4], f[5], f[6]
        self._learn(vhost, status, size, unit)
        if self._own_probe(line, t, client):
            return None
        kind, dest, smtp, nbytes, outcome, text, psize, pkey, body_vote, own_error = \
            connect_shape(target, status, size, f[9], unit)
        inc = self.book.current(kind, t)
        self._count(inc, (t, client, dest, (path, lineno, line), outcome, text, nbytes, smtp))
        if own_error:
            self.local.note_own(nbytes)  # the server's own error page, headers included
        if pkey is not None:
            if body_vote:
                self.size_votes["body"] += 1  # `CONNECT <unit>`: %b is "-" for a tunnel
            self._pend(inc, psize, pkey, dest)
        return inc

    def _learn(self, vhost: str | None, status: int | None, size: int | None,
               unit: str) -> None:
        """What any request teaches: the site's names, and the size unit from a 304."""
        if vhost:
            self.learned_names.add(vhost.lower())
        if status == 304 and unit == "guess":
            self.size_votes["total" if size else "body"] += 1

    def _own_probe(self, line: str, t: float | None, client: str) -> bool:
        """True (and counted apart) for a request of relayguard's own probe: its
        User-Agent ends the line."""
        if not line.endswith(_PROBE_UA_ENDS):
            return False
        if self.own_probe is None:  # (state pickled before it existed: the class's None)
            self.own_probe = OwnProbe()
        self.own_probe.add(t, client)
        return True

    def _count(self, inc: Incident, args: EventArgs) -> None:
        """Count an event into its incident, now or, inside `deferring()`, at the block's
        end (first/last now: the next `current` decides by them)."""
        deferred = self._deferred
        if deferred is None:
            inc.add_many([args])
            return
        inc.note_time(args[0])
        held = deferred.get(id(inc))  # (each incident's events in order; incidents apart:
        if held is None:  # a spam run's log interleaves its kinds line by line)
            deferred[id(inc)] = (inc, [args])
        else:
            held[1].append(args)

    def _pend(self, inc: Incident, size: int | None, key_path: str, dest: str) -> None:
        """A 2xx whose meaning the sizes decide: held in the incident, judged when asked."""
        if not inc.add_pending(size, key_path, dest):
            self._judge(inc)  # the store is full: settle what it holds
            inc.settle()
            inc.add_pending(size, key_path, dest)

    def _note_origin(self, rec: AccessRecord, target: str) -> None:
        if rec.status is not None and 200 <= rec.status < 300 and rec.size and \
                rec.method == "GET":
            self.local.note(target, rec.size)

    @staticmethod
    def _outcome(rec: AccessRecord) -> str | None:
        """Settled outcome, or None when a 2xx must be judged against the local pages."""
        status = rec.status
        if rec.proxy_log:
            hier = (rec.hier or "").upper()
            if "DENIED" in hier or (status is not None and 400 <= status < 500):
                return "refused"
            if status is not None and status >= 500:
                return "failed"
            if status is not None and 200 <= status < 400:
                return "relayed"
            return "unknown"
        return web_outcome(status)

    # -- judging ------------------------------------------------------------------------------
    def _judge(self, inc: Incident) -> None:
        """Decide the pending 2xx answers: local page, relayed, or unknown.

        Local: the size is the site's own page for that path (or the home page), or one size
        came back for several different sites. Relayed: the path is a local page with a
        stable size and this is not it; or one path came back with different sizes; or at
        least 3 sites answered with at least 3 different sizes. A local server answering from
        its DocumentRoot gives none of these; anything else stays unknown.
        """
        judged: dict[str, int] = {}
        undecided: list[tuple[int, str, int]] = []
        path_sizes: dict[str, list[int]] = {}
        hosts_all: set[str] = set(inc.seen_hosts)
        for path, size in inc.seen:
            path_sizes.setdefault(path, []).append(size)
        tunnels: list[tuple[int, str, int, set[str]]] = []
        conf_http = self.config.http if self.config is not None else None
        for (size, path), (count, hosts) in inc.pending.items():
            if path.startswith("CONNECT"):
                unit = self.size_unit(path.partition(" ")[2] or "body")
                found = self._judge_connect(size, hosts, unit)
                if found is None:
                    tunnels.append((size or 0, unit, count, hosts))
                    continue
                verdict = found
            elif conf_http is False:
                verdict = "local"  # the config has no forward proxy: it answered itself
            elif not size:
                verdict = "unknown"
            elif self.local.matches(path, size):
                verdict = "local"
            elif len(hosts) > 1 and size >= 200:
                verdict = "local"  # one size for different sites: the same local page
            elif self.local.informative(path) or conf_http:
                verdict = "relayed"
            else:
                undecided.append((size, path, count))
                path_sizes.setdefault(path, []).append(size)
                hosts_all |= hosts
                continue
            judged[verdict] = judged.get(verdict, 0) + count
        all_sizes = [s for sizes in path_sizes.values() for s in sizes]
        many = len(hosts_all) >= 3 and len(_distinct_sizes(all_sizes)) >= 3
        for _size, path, count in undecided:
            varied = many or len(_distinct_sizes(path_sizes[path])) > 1
            verdict = "relayed" if varied else "unknown"
            judged[verdict] = judged.get(verdict, 0) + count
        for verdict, count in self._judge_tunnels(tunnels):
            judged[verdict] = judged.get(verdict, 0) + count
        inc.judged.clear()
        inc.judged.update(judged)

    def _judge_connect(self, size: int | None, hosts: set[str], unit: str) -> str | None:
        """One group of 2xx CONNECT answers: relayed, local, unknown, or None (decided with
        the other groups by `_judge_tunnels`).

        The config settles it: mod_proxy_connect answers 2xx only once the tunnel is up, and
        without it Apache answers CONNECT itself. Otherwise from the size: %b is "-" for a
        tunnel (its 200 has no body), a body is the server answering like `GET /`. %O counts
        the tunnel's bytes: the size of a local page is a local answer, a size below the
        smallest answer the server wrote itself (headers alone make those bigger) can only
        be a tunnel."""
        conf = self.config.connect if self.config is not None else None
        if conf is not None:
            return "relayed" if conf else "local"
        if not size:
            return "relayed" if unit in ("body", "guess") else "unknown"
        if self.local.home_matches(size):
            return "local"
        if unit != "total" and len(hosts) > 1 and size >= 200:
            return "local"  # one body for different targets: the server's own page
        if unit == "body":
            return "unknown"
        if unit == "total":
            if self.local.any_matches(size):
                return "local"
            smallest = self.local.smallest
            if smallest is not None and size < smallest:
                return "relayed"
        return None

    @staticmethod
    def _judge_tunnels(groups: list[tuple[int, str, int, set[str]]]) -> list[tuple[str, int]]:
        """CONNECT answers whose sizes alone did not decide: sizes that differ from target to
        target are tunnels (2 targets and 2 sizes for %O; 3 and 3 when the unit is a guess,
        as for absolute-URI answers); anything else stays unknown."""
        out: list[tuple[str, int]] = []
        for unit, need in (("total", 2), ("guess", 3)):
            mine = [g for g in groups if g[1] == unit]
            if not mine:
                continue
            hosts = set().union(*(g[3] for g in mine))
            sizes = _distinct_sizes([g[0] for g in mine])
            verdict = "relayed" if len(hosts) >= need and len(sizes) >= need else "unknown"
            out += [(verdict, g[2]) for g in mine]
        return out

    def set_server_names(self, server_names: frozenset[str]) -> list[Incident]:
        """New server names mid-stream (`watch` restart or SIGHUP): they judge the requests
        read from now on. An absolute-URI or Host-header incident whose every destination is
        now one of them held only requests they would not have counted: it is retired, and
        returned (one with an approximate destination list is kept: it may hold others)."""
        self.given_names = _own_names(server_names)
        gone = []
        for kind in ("proxy-http", "proxy-host-header"):
            for inc in list(self.book.by_kind.get(kind, [])):
                dests = inc.destinations
                if dests.counts and not dests.approximate and all(
                        split_hostport(d)[0] in self.given_names for d in dests.counts):
                    self.book.retire(inc)
                    gone.append(inc)
        return gone

    def snapshot(self) -> list[Incident]:
        """Current incidents with their 2xx answers judged (state is not consumed)."""
        out = self.book.all()
        for inc in out:
            self._judge(inc)
            if self.config is not None:
                inc.extra["proxy_config"] = self.config.evidence
        return out


# ---------------------------------------------------------------------------------------------
# mail

_PF_CLIENT = re.compile(
    r"^(?P<qid>\w+): client=(?P<host>[^\[\s]*)\[(?P<ip>[^\]]*)\](?::\d+)?"
    r"(?:, sasl_method=[^,]*, sasl_username=(?P<user>[^,\s]*))?")
_PF_FROM = re.compile(r"^(?P<qid>\w+): from=<(?P<from>[^>]*)>, size=\d+, nrcpt=")
_PF_DELIVERY = re.compile(
    r"^(?P<qid>\w+): to=<(?P<to>[^>]*)>,(?: orig_to=<[^>]*>,)? relay=(?P<relay>[^,]+),"
    r".*? status=(?P<status>\w+)(?: \((?P<text>.*)\))?$")
_PF_REJECT = re.compile(
    r"^(?:NOQUEUE|\w+): (?P<action>reject|reject_warning|defer): (?P<stage>[A-Z]+) from "
    r"(?P<host>[^\[\s]*)\[(?P<ip>[^\]]*)\](?::\d+)?: (?P<text>.*?)"
    r"(?:; from=<(?P<from>[^>]*)> to=<(?P<to>[^>]*)>.*)?$")
_PF_SASL = re.compile(
    r"^warning: (?P<host>[^\[\s]*)\[(?P<ip>[^\]]*)\](?::\d+)?: SASL \S+ authentication failed")
_PF_REMOVED = re.compile(r"^(?P<qid>\w+): removed$")
# A remote server's own reply in a delivery status: after a command (`said:`), or at the
# greeting (`refused to talk to me:`, what Spamhaus-using MXes answer a listed IP with).
_REMOTE_REPLY = re.compile(r"^host (?P<host>\S+) (?:said|refused to talk to me): (?P<reply>.*)$",
                           re.S)

# `H=host [ip]` for mail from the network; a local submission (`U=www-data P=local`, what
# PHP's mail() makes through sendmail) has none: no client, a trusted local sender
_EXIM_ARRIVAL = re.compile(
    r"^(?P<id>[\w-]{16,23}) <= (?P<from>\S+)(?: .*?H=(?:\S+ )?(?:\([^)]*\) )?"
    r"\[(?P<ip>[^\]]+)\])?")
_EXIM_DELIVERY = re.compile(
    r"^(?P<id>[\w-]{16,23}) (?P<flag>=>|->|\*\*|==) (?P<to>\S+)(?P<rest>.*)$")
_EXIM_RELAY_DENIED = re.compile(
    r"H=(?:\S+ )?(?:\([^)]*\) )?\[(?P<ip>[^\]]+)\].*?rejected RCPT <?(?P<to>[^>\s:]*)>?: "
    r"relay not permitted")
_SENDMAIL_RELAY_DENIED = re.compile(
    r"ruleset=check_rcpt, arg1=<?(?P<to>[^>,\s]*)>?, relay=(?:\S+ )?\[(?:IPv6:)?"
    r"(?P<ip>[^\]]+)\].*?reject=\d{3} [\d.]+ .*?Relaying denied")
_EXIM_REMOTE_ERROR = re.compile(
    r"H=(?P<host>\S+) \[(?P<ip>[^\]]+)\].*?: SMTP error from remote (?:mail|MTA) server "
    r"after .*?: (?P<reply>\d{3}[ -].*)$")
_EXIM_SYSLOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [+-]\d{4})?"
                                 r"(?: \[\d+\])? ")
_EXIM_AUTH_FAIL = re.compile(
    r"authenticator failed for .*?\[(?P<ip>[^\]]+)\].*?: 535 Incorrect authentication data")

# "our IP is listed" in a remote server's reply — Sisimai's Blocked reason list as seed.
BLOCKLIST_REPLY = re.compile(
    r"blocked using|listed (?:in|at|on|by)|block ?list|black ?list|deny ?list|spamhaus|spamcop|"
    r"barracuda|sorbs|abuseat|S3150|psbl|uceprotect|part of their network is on our block"
    r"|not currently accepting mail from your ip|too many spams from your ip"
    r"|rejecting open proxy|poor (?:ip )?reputation|ip reputation|mail from ip banned"
    r"|client host \S+ blocked|on our block list", re.I)
_LIST_NAME = re.compile(
    r"blocked using ([\w.-]+)|listed (?:in|at|on|by) (?:the )?([\w.-]+)|"
    r"(spamhaus|spamcop|barracuda|sorbs|abuseat|psbl|uceprotect)|(S3150)", re.I)
_KNOWN_LISTS = {"spamhaus": "Spamhaus", "spamcop": "SpamCop", "barracuda": "Barracuda",
                "sorbs": "SORBS", "abuseat": "CBL (abuseat.org)", "psbl": "PSBL",
                "uceprotect": "UCEPROTECT", "s3150": "Microsoft (S3150)"}

TRUSTED_CLIENTS = frozenset({"127.0.0.1", "::1"})
LOCAL_TRANSPORTS = frozenset({"local", "virtual", "lmtp", "pipe", "maildrop", "dovecot"})
OUTBOUND_TRANSPORTS = frozenset({"smtp", "relay"})
RELAY_MIN_DOMAINS = 3  # foreign recipient domains before an unauthenticated client is a relay
MAIL_SPIKE_FLOOR = 30.0  # deferred+bounced per minute before a jump counts as a spike
SASL_BURST = 10  # failures …
SASL_WINDOW = 600.0  # … within this many seconds from one client
# envelope senders counted exactly up to this many distinct ones: spam brings one-off senders
# by the thousand, and a full top-k table credits each newcomer with its victim's count (a
# 64-entry table named one-message spammers the top senders, with 30 each, on a real log)
SENDER_KEYS = 4096


def blocklist_name(text: str) -> str:
    """The list a remote reply names (`zen.spamhaus.org`, `Spamhaus`, …) or 'unnamed'."""
    m = _LIST_NAME.search(text)
    if m is None:
        return "unnamed"
    name = next(g for g in m.groups() if g)
    return _KNOWN_LISTS.get(name.lower(), name.rstrip(".;,").lower())


def _own_names(names: frozenset[str]) -> frozenset[str]:
    """Server names as requests are compared with them: lower case, no trailing dot."""
    return frozenset(n.lower().rstrip(".") for n in names)


def _own_domains(domains: frozenset[str]) -> frozenset[str]:
    """Mail domains as recipients are compared with them: lower case."""
    return frozenset(d.lower() for d in domains)


def _domain(addr: str) -> str:
    return addr.rsplit("@", 1)[-1].lower() if "@" in addr else ""


@dataclass(slots=True)
class _Msg:
    client_ip: str | None = None
    client_host: str | None = None
    user: str | None = None
    sender: str | None = None
    seen_rcpts: set[str] = field(default_factory=set)  # <= 100: retries are not new mail
    relay_counted: bool = False


@dataclass
class _ClientRelay:
    """Outbound deliveries of mail an unauthenticated client handed in (bounded)."""

    incident: Incident
    domains: Distinct = field(default_factory=lambda: Distinct(1000))
    messages: int = 0

    def expendable(self) -> bool:
        """Not (yet) a relayer: may make room for a new client."""
        return self.domains.count() < RELAY_MIN_DOMAINS


SENDER_WINDOW = 3600.0  # a sender's activity is judged per hour of it, against its own
SENDER_HISTORY = 3  # earlier hours (at least this many known); an hour is suspicious with
SENDER_SPIKE = 10  # this many times its usual foreign domains or deliveries, and at least
SENDER_MIN_DOMAINS = 20  # this many foreign domains, or
SENDER_MIN_VOLUME = 100  # this many deliveries. With no history (a log of the burst alone):
SENDER_NEW_DOMAINS = 100  # this many foreign domains ("hundreds"; an application's bulk
SENDER_NEW_VOLUME = 1000  # notices reach ~50), or this many deliveries, within the hour


@dataclass
class _SenderVolume:
    """Outbound deliveries of one authenticated user or trusted local sender, per hour of its
    activity: the busiest hour (deliveries, foreign domains) against its usual hour."""

    incident: Incident
    window_start: float | None = None
    window_count: int = 0
    window_domains: Distinct = field(default_factory=lambda: Distinct(1000))
    domains: Distinct = field(default_factory=lambda: Distinct(500))  # all recipient domains
    history: list[tuple[int, int]] = field(default_factory=list)  # earlier hours' (deliveries,
    # foreign domains), the last 48
    worst: dict[str, Any] = field(default_factory=dict)  # the most suspicious hour so far

    def add(self, t: float | None, domain: str, own: bool) -> None:
        if t is not None and self.window_start is not None and \
                t - self.window_start > SENDER_WINDOW:
            self._close()
        if self.window_start is None:
            self.window_start = t
        self.window_count += 1
        self.domains.add(domain)
        if domain and not own:
            self.window_domains.add(domain)

    def _close(self) -> None:
        self.worst = self.judge()
        self.history = [*self.history, (self.window_count, self.window_domains.count())][-48:]
        self.window_start, self.window_count = None, 0
        self.window_domains = Distinct(1000)

    def judge(self) -> dict[str, Any]:
        """The worse of the stored worst hour and the current one (reason empty if fine)."""
        from statistics import median  # here: mail logs only, and its import costs ~5 ms

        known = len(self.history) >= SENDER_HISTORY
        base_n = median(h[0] for h in self.history) if known else None
        base_d = median(h[1] for h in self.history) if known else None
        n, doms = self.window_count, self.window_domains.count()
        reasons = []
        if base_d is None and doms >= SENDER_NEW_DOMAINS:
            reasons.append(f"{self.window_domains.describe()} foreign domains within an hour")
        elif base_d is not None and doms >= max(SENDER_MIN_DOMAINS, SENDER_SPIKE * base_d):
            reasons.append(f"{self.window_domains.describe()} foreign domains within an hour, "
                           f"usually {base_d:g}")
        if base_n is None and n >= SENDER_NEW_VOLUME:
            reasons.append(f"{n} deliveries within an hour")
        elif base_n is not None and n >= max(SENDER_MIN_VOLUME, SENDER_SPIKE * base_n):
            reasons.append(f"{n} deliveries within an hour, usually {base_n:g}")
        now = {"hour_start": iso(self.window_start), "deliveries": n, "foreign_domains": doms,
               "usual_per_hour": None if base_n is None else {"deliveries": base_n,
                                                              "foreign_domains": base_d},
               "reasons": reasons}
        worst = self.worst
        if worst and (bool(worst["reasons"]), worst["foreign_domains"], worst["deliveries"]) \
                >= (bool(reasons), doms, n):
            return worst
        return now

    def expendable(self) -> bool:
        return not self.judge()["reasons"]

    def retire(self) -> None:
        """Its incident was closed: start a new one, the hour so far part of the history."""
        if self.window_count:
            self._close()
        self.worst = {}
        self.incident = Incident(self.incident.kind, timeline=Timeline(cap=256))


class MailDetector:
    """Postfix and Exim: relayed mail, refused relay attempts, SASL bursts, blocklist bounces."""

    def __init__(self, own_domains: frozenset[str] = frozenset(),
                 trusted_clients: frozenset[str] = TRUSTED_CLIENTS) -> None:
        self.given_domains = _own_domains(own_domains)
        self.local_domains = Distinct(1000)
        self.relay_domains = Distinct(1000)  # seen through the relay transport (relay_domains)
        self.trusted = trusted_clients
        self.book = IncidentBook()
        self.msgs: OrderedDict[str, _Msg] = OrderedDict()
        self.max_msgs = 100_000
        self.relay_clients: LruMap[_ClientRelay] = LruMap(1000)
        self.sender_volumes: LruMap[_SenderVolume] = LruMap(1000)
        self.sasl_windows: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.sasl_burst_clients: set[str] = set()
        self.counts: dict[str, int] = {"inbound_blocklist_rejects": 0, "rejects": 0,
                                       "reject_warnings": 0, "sent": 0, "deferred": 0,
                                       "bounced": 0}
        self.senders = TopK(SENDER_KEYS)
        self.outbound_senders = TopK(SENDER_KEYS)  # outbound deliveries per envelope sender
        self.outcome_timeline = Timeline(cap=2048)  # deferred+bounced per minute

    def __setstate__(self, state: dict[str, Any]) -> None:
        """State `watch` pickled before reject warnings were counted apart."""
        state["counts"].setdefault("reject_warnings", 0)
        self.__dict__.update(state)

    def _msg(self, qid: str, create: bool = True) -> _Msg | None:
        m = self.msgs.get(qid)
        if m is None and create:
            m = self.msgs[qid] = _Msg()
            if len(self.msgs) > self.max_msgs:
                self.msgs.popitem(last=False)
        return m

    def feed(self, rec: SyslogLine, path: str, lineno: int, line: str,
             event: bool = True) -> None:
        """Account one syslog line (non-mail programs are ignored). `event=False` (a line
        outside --since/--until) only records what later lines need: a message's client and
        sender, and the domains delivered here; queued mail may leave hours after it came."""
        prog = rec.program
        if prog == "exim" or prog.startswith("exim"):
            self._feed_exim(rec, path, lineno, line, event)
            return
        if prog.startswith("sendmail") or prog.startswith("sm-mta"):
            m = _SENDMAIL_RELAY_DENIED.search(rec.message)
            if m is not None and event:
                self._refused(rec, m["ip"], "relay not permitted", m["to"],
                              Sample(path, lineno, line))
            return
        if "postfix" not in prog and "/" not in prog:
            return
        tail = prog.rsplit("/", 1)[-1]
        msg = rec.message
        sample = Sample(path, lineno, line)
        if tail == "postscreen":  # rejects before smtpd: inbound, like smtpd's
            m = _PF_REJECT.match(msg)
            if m is not None and event:
                self._reject(rec, m, sample)
            return
        if tail == "smtpd":
            m = _PF_CLIENT.match(msg)
            if m is not None:
                st = self._msg(m["qid"])
                assert st is not None
                st.client_ip, st.client_host, st.user = m["ip"], m["host"], m["user"] or None
                return
            if not event:
                return
            m = _PF_REJECT.match(msg)
            if m is not None:
                self._reject(rec, m, sample)
                return
            m = _PF_SASL.match(msg)
            if m is not None:
                self._sasl_failure(rec, m["ip"], sample)
            return
        if tail == "qmgr":
            m = _PF_FROM.match(msg)
            if m is not None:
                st = self._msg(m["qid"])
                assert st is not None
                st.sender = m["from"]
                if event:
                    self.senders.add(m["from"] or "<>")
                return
            m = _PF_REMOVED.match(msg)
            if m is not None:
                self.msgs.pop(m["qid"], None)
            return
        if tail == "pickup":
            return
        m = _PF_DELIVERY.match(msg)
        if m is not None:
            relay = m["relay"]
            relay_ip = relay[relay.find("[") + 1: relay.find("]")] if "[" in relay else relay
            outbound = tail in OUTBOUND_TRANSPORTS and relay_ip not in TRUSTED_CLIENTS
            # `postfix/relay/smtp` (or `postfix/relay`): the relay transport, which carries
            # mail for relay_domains — a backup MX or gateway doing its job
            intended = "relay" in prog.split("/")[1:]
            self._delivery(rec, m["qid"], m["to"], outbound, tail in LOCAL_TRANSPORTS,
                           m["status"], m["text"] or "", sample, intended=intended, event=event)

    # -- shared mail logic ---------------------------------------------------------------------
    def _reject(self, rec: SyslogLine, m: re.Match[str], sample: Sample) -> None:
        """A Postfix `reject:` line, or a `reject_warning:` (warn_if_reject: a restriction
        tried out, the mail accepted all the same), which refused nothing."""
        if m["action"] == "reject_warning":
            self.counts["reject_warnings"] += 1
            return
        self._refused(rec, m["ip"], m["text"], m["to"] or "", sample)

    def _refused(self, rec: SyslogLine, ip: str, text: str, to: str, sample: Sample) -> None:
        self.counts["rejects"] += 1
        lowered = text.lower()
        if "relay access denied" in lowered or "relay not permitted" in lowered:
            inc = self.book.current("smtp-relay-denied", rec.time)
            inc.add(rec.time, ip, _domain(to) or None, sample, outcome="refused",
                    status=text.split(" ", 1)[0])
        elif "blocked using" in lowered or ("client host" in lowered and "blocked" in lowered):
            # our server refusing someone listed: inbound, never "we are blocklisted"
            self.counts["inbound_blocklist_rejects"] += 1

    def _sasl_failure(self, rec: SyslogLine, ip: str, sample: Sample) -> None:
        inc = self.book.current("smtp-sasl-failures", rec.time)
        inc.add(rec.time, ip, None, sample, outcome="refused")
        t = rec.time or 0.0
        start, n = self.sasl_windows.pop(ip, (t, 0))
        if t - start > SASL_WINDOW:
            start, n = t, 0
        n += 1
        self.sasl_windows[ip] = (start, n)
        if len(self.sasl_windows) > 10000:
            self.sasl_windows.popitem(last=False)
        if n >= SASL_BURST and len(self.sasl_burst_clients) < 1000:
            self.sasl_burst_clients.add(ip)

    def _delivery(self, rec: SyslogLine, qid: str, to: str, outbound: bool, local: bool,
                  status: str, text: str, sample: Sample, intended: bool = False,
                  event: bool = True) -> None:
        """One delivery attempt. `local`: delivered here (its domain is ours); `intended`:
        through Postfix's relay transport, i.e. for a domain this server relays for."""
        domain = _domain(to)
        if local and domain:
            self.local_domains.add(domain)
        if intended and domain:
            self.relay_domains.add(domain)
        if not event:
            return
        if status in self.counts:
            self.counts[status] += 1
        if status in ("deferred", "bounced") and rec.time is not None:
            self.outcome_timeline.add(rec.time)
        if not outbound:
            return
        reply = _REMOTE_REPLY.match(text) if status in ("bounced", "deferred") else None
        if reply is not None and BLOCKLIST_REPLY.search(reply["reply"]):
            inc = self.book.current("smtp-blocklist-bounce", rec.time)
            lists = inc.extra.setdefault("lists", {})
            name = blocklist_name(reply["reply"])
            if name in lists or len(lists) < 32:
                lists[name] = lists.get(name, 0) + 1
            inc.add(rec.time, None, reply["host"], sample, outcome="refused", status=status)
        st = self._msg(qid, create=False)
        if st is not None and status != "deferred":
            self.outbound_senders.add(st.sender or "<>" if st.sender is not None else "?")
        if st is None or intended:
            return
        if to in st.seen_rcpts:
            return  # a retry of the same recipient is not a new message
        if len(st.seen_rcpts) < 100:
            st.seen_rcpts.add(to)
        outcome = "relayed" if status == "sent" else ("refused" if status == "bounced"
                                                      else "unknown")
        if st.user or st.client_ip is None or st.client_ip in self.trusted:
            # allowed to send anywhere: judged by its own volume (a stolen password, a
            # hacked web form posting through localhost)
            key = f"user {st.user}" if st.user else f"sender {st.sender or '<>'}"
            sv = self.sender_volumes.get(key)
            if sv is None:
                sv = _SenderVolume(Incident("smtp-sender-volume", timeline=Timeline(cap=256)))
                self.sender_volumes.put(key, sv, _SenderVolume.expendable)
            sv.add(rec.time, domain, self.is_own(domain))
            sv.incident.add(rec.time, st.client_ip or "local", domain or None, sample,
                            outcome=outcome, status=status)
            return
        cr = self.relay_clients.get(st.client_ip)
        if cr is None:
            cr = _ClientRelay(Incident("smtp-relayed", timeline=Timeline(cap=256)))
            self.relay_clients.put(st.client_ip, cr, _ClientRelay.expendable)
        cr.domains.add(domain)
        if not st.relay_counted:
            st.relay_counted = True
            cr.messages += 1
        cr.incident.add(rec.time, st.client_ip, domain or None, sample, outcome=outcome,
                        status=status)

    # -- Exim ----------------------------------------------------------------------------------
    def _feed_exim(self, rec: SyslogLine, path: str, lineno: int, line: str,
                   event: bool = True) -> None:
        msg = rec.message
        if rec.program != "exim" or msg[:2].isdigit():  # via syslog: drop Exim's own stamp
            msg = _EXIM_SYSLOG_PREFIX.sub("", msg, count=1)
        sample = Sample(path, lineno, line)
        m = _EXIM_ARRIVAL.match(msg)
        if m is not None:
            st = self._msg(m["id"])
            assert st is not None
            st.client_ip, st.sender = m["ip"], m["from"]
            auth = re.search(r" A=(?:[^:\s]+:)?(\S+)", msg)  # A=dovecot_plain:alice
            st.user = auth.group(1) if auth else None
            if event:
                self.senders.add(m["from"])
            return
        m = _EXIM_DELIVERY.match(msg)
        if m is not None:
            rest = m["rest"]
            transport = re.search(r" T=(\S+)", rest)
            tname = transport.group(1) if transport else ""
            outbound = "smtp" in tname or " H=" in rest
            flag = m["flag"]
            status = {"=>": "sent", "->": "sent", "**": "bounced", "==": "deferred"}[flag]
            err = _EXIM_REMOTE_ERROR.search(rest)
            # in Postfix's words, so one rule reads both: `host H[ip] said: 5xx …`
            text = f"host {err['host']}[{err['ip']}] said: {err['reply']}" if err else rest
            self._delivery(rec, m["id"], m["to"].strip("<>"), outbound,
                           not outbound and flag == "=>", status, text, sample, event=event)
            return
        if not event:
            return
        m = _EXIM_RELAY_DENIED.search(msg)
        if m is not None:
            self._refused(rec, m["ip"], "relay not permitted", m["to"], sample)
            return
        m = _EXIM_AUTH_FAIL.search(msg)
        if m is not None:
            self._sasl_failure(rec, m["ip"], sample)

    # -- snapshot ------------------------------------------------------------------------------
    def volume(self) -> dict[str, Any]:
        """Messages per envelope sender (queued, delivered out), volume per authenticated
        user, and bounce/defer spikes."""
        users = sorted(((k[5:], sv.incident.events, sv.domains.describe())
                        for k, sv in self.sender_volumes.items.items() if k.startswith("user ")),
                       key=lambda x: (-x[1], x[0]))[:10]
        bursts = spikes(self.outcome_timeline, floor=MAIL_SPIKE_FLOOR)
        return {"top_senders": self.senders.top(10),
                # beyond SENDER_KEYS distinct senders the counts are upper bounds
                "top_senders_approximate": self.senders.approximate,
                "outbound_by_sender": self.outbound_senders.top(10),
                "outbound_by_sender_approximate": self.outbound_senders.approximate,
                "authenticated_users": [{"user": u, "deliveries": n, "domains": d}
                                        for u, n, d in users],
                "deferred_bounced_spikes": bursts,
                "clients_dropped": self.relay_clients.evicted,
                "senders_dropped": self.sender_volumes.evicted}

    def retire(self, inc: Incident) -> None:
        """Forget a closed incident (`watch`): its client's or sender's entry goes too, a
        sender keeping its hourly history (its baseline)."""
        if self.book.retire(inc):
            return
        for ip, cr in list(self.relay_clients.items.items()):
            if cr.incident is inc:
                del self.relay_clients.items[ip]
                return
        for sv in self.sender_volumes.items.values():
            if sv.incident is inc:
                sv.retire()
                return

    def set_options(self, own_domains: frozenset[str], trusted: frozenset[str]) -> list[str]:
        """New mail domains and trusted clients mid-stream (`watch` restart or SIGHUP). Own
        domains are judged when incidents are reported, so they apply to what was already
        seen too; a client trusted now loses its relay record (what it sent was allowed
        after all). Returns the clients whose record was dropped."""
        self.given_domains = _own_domains(own_domains)
        newly = trusted - self.trusted
        self.trusted = trusted
        dropped = [ip for ip in self.relay_clients.items if ip in newly]
        for ip in dropped:
            del self.relay_clients.items[ip]
        return dropped

    def is_own(self, domain: str) -> bool:
        return domain in self.given_domains or domain in self.local_domains.keys or \
            domain in self.relay_domains.keys

    def own_domains(self) -> set[str]:
        """Domains mail is meant to reach here: given, delivered locally, relayed for."""
        return set(self.given_domains) | self.local_domains.keys | self.relay_domains.keys

    def snapshot(self) -> list[Incident]:
        """Incidents so far; relayed mail only for clients that reached foreign domains."""
        out = [i for i in self.book.all() if i.kind != "smtp-sasl-failures"]
        sasl = [i for i in self.book.all() if i.kind == "smtp-sasl-failures"]
        for inc in sasl:
            inc.extra["burst_clients"] = sorted(self.sasl_burst_clients)[:20]
            out.append(inc)
        for key, sv in self.sender_volumes.items.items():
            worst = sv.judge()
            if worst["reasons"]:
                inc = sv.incident
                inc.extra.update({"sender": key.split(" ", 1)[1],
                                  "authenticated": key.startswith("user "), **worst})
                out.append(inc)
        out += spike_incidents(self.outcome_timeline, "mail-outcome-spike", MAIL_SPIKE_FLOOR)
        own = self.own_domains()
        for ip, cr in self.relay_clients.items.items():
            foreign = {d for d in cr.domains.keys if d and d not in own}
            enough = len(foreign) >= RELAY_MIN_DOMAINS or (self.given_domains and foreign)
            if not enough:
                continue
            inc = cr.incident
            inc.extra["client"] = ip
            inc.extra["messages"] = cr.messages
            inc.extra["foreign_domains"] = len(foreign)
            out.append(inc)
        return sorted(out, key=lambda i: (i.first or 0.0, i.kind))


# ---------------------------------------------------------------------------------------------
# volume

class VolumeDetector:
    """Requests per minute against a rolling baseline: the "server slowed down" symptom."""

    def __init__(self) -> None:
        self.timeline = Timeline(cap=8192)

    def feed_time(self, t: float | None) -> None:
        if t is not None:
            self.timeline.add(t)

    def feed_minutes(self, counts: dict[int, int]) -> None:
        self.timeline.add_minutes(counts)

    def snapshot(self) -> list[dict[str, Any]]:
        """Request-rate spikes so far (see `spike_buckets`)."""
        return spikes(self.timeline)

    def incidents(self) -> list[Incident]:
        """The spikes as incidents a person sees and `watch` alerts on."""
        return spike_incidents(self.timeline, "volume-spike")


def spike_buckets(timeline: Timeline, window: int = 60, factor: float = 10.0,
                  floor: float = 300.0) -> list[tuple[int, int, float]]:
    """(bucket start, events, baseline per minute) of buckets whose rate is >= factor x the
    median of the previous `window` buckets that had events, and >= `floor` per minute.

    Empty buckets are left out of the baseline: a gap in a log (downtime, a missing rotation)
    is no quiet period to compare with, and an idle night does not make the morning a spike.
    Kept on the timeline until it changes: a report asks twice (stats, incidents)."""
    key = (window, factor, floor)
    derived = getattr(timeline, "derived", None)  # None in state saved before it existed
    if derived is not None and derived[0] == key:
        return derived[1]
    width = timeline.width
    out: list[tuple[int, int, float]] = []
    recent: deque[int] = deque()  # the last `window` buckets, and the same values sorted:
    ordered: list[int] = []  # the median is read off the middle, no sort per bucket
    for i, (t, n) in enumerate(timeline.series()):
        if i >= 10:
            k = len(ordered)
            base = ordered[k // 2] if k % 2 else (ordered[k // 2 - 1] + ordered[k // 2]) / 2
            if n * 60.0 / width >= floor and n >= factor * max(base, 1.0):
                out.append((t, n, base * 60.0 / width))
        recent.append(n)
        insort(ordered, n)
        if len(recent) > window:
            del ordered[bisect_left(ordered, recent.popleft())]
    out = out[-100:]  # the latest: a watcher running for months still sees new ones
    timeline.derived = (key, out)
    return out


def spikes(timeline: Timeline, floor: float = 300.0) -> list[dict[str, Any]]:
    """`spike_buckets` for the JSON stats."""
    width = timeline.width
    return [{"start": iso(t), "per_minute": n * 60.0 / width, "baseline_per_minute": base}
            for t, n, base in spike_buckets(timeline, floor=floor)]


def spike_incidents(timeline: Timeline, kind: str, floor: float = 300.0) -> list[Incident]:
    """Spike buckets grouped into incidents: buckets at most 10 apart make one."""
    width = timeline.width
    out: list[Incident] = []
    for t, n, base in spike_buckets(timeline, floor=floor):
        cur = out[-1] if out else None
        if cur is None or cur.last is None or t - cur.last > 10 * width:
            cur = Incident(kind, timeline=Timeline(cap=256, width=width))
            cur.extra = {"baseline_per_minute": base, "spike_minutes": 0}
            out.append(cur)
        cur.events += n
        cur.first = t if cur.first is None else cur.first
        cur.last = t + width - 1
        cur.timeline.add(t, n)
        cur.extra["spike_minutes"] += width // 60
        cur.extra["baseline_per_minute"] = max(cur.extra["baseline_per_minute"], base)
    return out
