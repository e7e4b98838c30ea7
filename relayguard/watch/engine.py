"""Feeding followed lines to the `relayguard logs` detectors, and turning incidents into alerts.

The detectors are the batch command's own (`LogAnalysis` holds ProxyDetector, MailDetector,
VolumeDetector and the line counters); this module only decides per file which format it holds
and hands it whole-line batches — access logs through the same byte-level fast path as `logs`.
`IncidentTracker` watches the detectors' incidents between batches: an incident *opens* (alert
at once), *updates* (at most every `update_interval`, at once when its verdict or severity
changes) and *closes* after `quiet` seconds without new events. Everything here is pickled
into the state database with the file positions, so a restart continues the same incidents;
the detector options, though, always come from the current config (`Engine.reconfigure`).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import zlib
from dataclasses import dataclass, field, fields
from typing import Any

from relayguard.findings import Finding, Severity
from relayguard.logs.analyze import LogAnalysis, LogOptions, incident_finding, parsed_too_little
from relayguard.logs.counting import iso
from relayguard.logs.fastpath import ChunkResult, scan_chunk
from relayguard.logs.follow import Batch
from relayguard.logs.formats import (
    SNIFF_BYTES,
    SNIFF_LIMIT,
    SNIFF_MIN_LINES,
    AccessFormat,
    FormatError,
    LocalTime,
    SquidFormat,
    YearGuesser,
    detect_format,
    format_by_name,
    sniff_lines,
)
from relayguard.logs.incidents import Incident

SNIFF_WAIT = 5.0


@dataclass
class FileFormat:
    """What one followed path holds, decided once (kept across rotation and restarts)."""

    kind: str  # access | mail | unknown
    name: str

    def access(self) -> AccessFormat | SquidFormat | None:
        if self.kind != "access":
            return None
        return format_by_name(self.name)


@dataclass
class Counters:
    """Monotonic counters for metrics and `--status` (persisted with the detectors)."""

    lines: int = 0
    parsed: int = 0
    unparsed: int = 0
    digest: int = 0  # sum of crc32 of every line read, mod 2**64 (with line_digest)
    incidents_opened: int = 0
    alerts_created: int = 0
    by_path: dict[str, int] = field(default_factory=dict)


@dataclass
class ParseWindow:
    """Lines read and parsed from one file since its format was last judged: judged again
    every SNIFF_MIN_LINES lines or more, so a file that stops parsing later is noticed too."""

    lines: int = 0
    parsed: int = 0
    failing: bool = False  # the last judgement: (nearly) nothing parsed


@dataclass
class _Tracked:
    events: int
    alerted_events: int
    verdict: str
    severity: int
    last_alert: float
    last_change: float
    closed: bool = False
    silent: bool = False  # below the alert threshold: followed, closed and retired unheard


@dataclass
class Alert:
    """One alert: an incident event or a blocklist change; `id` deduplicates it."""

    id: str
    payload: dict[str, Any]


def finding_dict(f: Finding) -> dict[str, Any]:
    return f.to_dict()


class IncidentTracker:
    """Open / update / close decisions over the detectors' incidents (see module docstring)."""

    def __init__(self) -> None:
        self.items: dict[str, _Tracked] = {}

    def review(self, analysis: LogAnalysis, now: float, update_interval: float, quiet: float,
               min_severity: Severity) -> tuple[list[Alert], list[tuple[Incident, Finding]]]:
        """Alerts due now, and the (incident, finding) pairs that changed (for responses).

        Every incident is followed, also those below `min_severity` (silently): once closed
        it is retired from the detectors, so a watcher running for months keeps opening new
        incidents instead of piling later bursts into old ones, and its memory stays flat."""
        alerts: list[Alert] = []
        changed: list[tuple[Incident, Finding]] = []
        seen: set[str] = set()
        for key, inc in keyed_incidents(analysis):
            finding = incident_finding(inc, analysis)
            silent = finding is None or finding.severity < min_severity
            seen.add(key)
            verdict = inc.verdict
            sev = int(finding.severity) if finding is not None else -1
            tr = self.items.get(key)
            event = None
            if tr is None:
                tr = self.items[key] = _Tracked(inc.events, inc.events, verdict, sev, now, now,
                                                silent=silent)
                event = "open"
                if finding is not None and not silent:
                    changed.append((inc, finding))
            elif inc.events != tr.events or verdict != tr.verdict or sev != tr.severity:
                if finding is not None and not silent:
                    changed.append((inc, finding))
                escalated = verdict != tr.verdict or sev != tr.severity
                if inc.events != tr.events:
                    tr.last_change = now
                tr.events, tr.verdict, tr.severity = inc.events, verdict, sev
                if tr.closed or (tr.silent and not silent):
                    tr.closed, event = False, "open"
                elif escalated or now - tr.last_alert >= update_interval:
                    event = "update"
            elif not tr.closed and tr.alerted_events != tr.events and \
                    now - tr.last_alert >= update_interval:
                event = "update"
            elif not tr.closed and now - tr.last_change >= quiet:
                tr.closed, event = True, "close"
            was_silent, tr.silent = tr.silent, silent
            if event is None:
                continue
            if event == "close":
                analysis.retire(inc)
            if silent or finding is None or (was_silent and event != "open"):
                continue
            tr.last_alert, tr.alerted_events = now, inc.events
            alerts.append(incident_alert(key, event, inc, finding, now))
        for key in [k for k, tr in self.items.items() if tr.closed and k not in seen]:
            del self.items[key]  # retired, or aged out of the volume timeline
        return alerts, changed

    def drop_missing(self, present: set[str], alerted: dict[str, tuple[Incident, Finding]],
                     reason: str, now: float) -> list[Alert]:
        """Forget open incidents that are no longer reported (new options ended them); those
        that were alerted get their "close" now, with `reason`, not never."""
        alerts = []
        for key in [k for k, tr in self.items.items() if not tr.closed and k not in present]:
            del self.items[key]
            if key in alerted:
                inc, finding = alerted[key]
                alert = incident_alert(key, "close", inc, finding, now)
                alert.payload["reason"] = reason
                alerts.append(alert)
        return alerts


def keyed_incidents(analysis: LogAnalysis) -> list[tuple[str, Incident]]:
    """The detectors' current incidents, each with its stable name (`incident_keys`)."""
    keys = incident_keys(analysis)
    return [(keys.get(id(inc), f"{inc.kind}@{inc.first}"), inc) for inc in analysis.incidents()]


def option_changes(old: LogOptions, new: LogOptions) -> list[str]:
    """What differs between two sets of detector options, in words (for the log)."""
    out = []
    for f in fields(LogOptions):
        was, now = getattr(old, f.name), getattr(new, f.name)
        if was == now:
            continue
        if isinstance(was, frozenset) and isinstance(now, frozenset):
            out.append(" ".join([f.name, *(f"+{x}" for x in sorted(now - was)),
                                 *(f"-{x}" for x in sorted(was - now))]))
        elif f.name == "tz":
            out.append(f"tz {LocalTime(was).name()} -> {LocalTime(now).name()}")
        else:
            out.append(f"{f.name} {was!r} -> {now!r}")
    return out


def incident_keys(analysis: LogAnalysis) -> dict[int, str]:
    """Stable names for the detectors' incident objects: kind#index, or kind@client."""
    keys: dict[int, str] = {}
    for det in (analysis.proxy, analysis.mail):
        for kind, items in det.book.by_kind.items():
            for inc in items:
                keys[id(inc)] = f"{kind}#{getattr(inc, 'serial', 0)}"
    for ip, cr in analysis.mail.relay_clients.items.items():
        keys[id(cr.incident)] = f"smtp-relayed@{ip}"
    for sender, sv in analysis.mail.sender_volumes.items.items():
        keys[id(sv.incident)] = f"smtp-sender-volume@{sender}"
    return keys


def incident_alert(key: str, event: str, inc: Incident, finding: Finding, now: float) -> Alert:
    """The alert document: the incident exactly as `logs` prints it, plus its finding."""
    alert_id = hashlib.sha1(f"{key}|{event}|{inc.events}".encode(),
                            usedforsecurity=False).hexdigest()[:20]
    payload = {
        "type": "incident",
        "event": event,
        "id": alert_id,
        "key": key,
        "host": socket.gethostname(),
        "time": iso(now),
        "severity": finding.severity.label,
        "title": finding.title,
        "incident": inc.to_dict(),
        "finding": finding_dict(finding),
    }
    return Alert(alert_id, payload)


def format_alert(path: str, name: str, window: ParseWindow, title: str) -> Alert:
    """The alert for a followed file its format does not parse (see Engine._judge_parsing)."""
    now = time.time()
    alert_id = hashlib.sha1(f"unparsed|{path}|{name}|{now}".encode(),
                            usedforsecurity=False).hexdigest()[:20]
    return Alert(alert_id, {
        "type": "format", "event": "unparsed", "id": alert_id, "host": socket.gethostname(),
        "time": iso(now), "severity": "medium", "title": title, "path": path, "format": name,
        "lines": window.lines, "parsed": window.parsed})


def split_lines(data: bytes) -> list[bytes]:
    """A batch's lines split at b"\\n" only, as `logs` and the follower count them:
    `bytes.splitlines()` also breaks at a lone CR inside a line, which shifted every later
    line number and counted one line twice."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def fast_only(access: AccessFormat | SquidFormat | None) -> AccessFormat | None:
    """The access format when the bytes-level fast path (`scan_chunk`) can read it."""
    return access if isinstance(access, AccessFormat) and access.fast_ok else None


class Engine:
    """The detectors plus per-file formats and counters: everything persisted as one blob."""

    def __init__(self, options: LogOptions, forced: dict[str, str] | None = None,
                 line_digest: bool = False) -> None:
        self.analysis = LogAnalysis(options)
        self.formats: dict[str, FileFormat] = {}
        self.forced = dict(forced or {})
        self.counters = Counters()
        self.tracker = IncidentTracker()
        self.line_digest = line_digest
        self.errors: list[str] = []
        self.parse_windows: dict[str, ParseWindow] = {}
        self.queued_alerts: list[Alert] = []  # raised between reviews (formats, options)
        self._compiled: dict[str, AccessFormat | SquidFormat | None] = {}
        self._undecided: dict[str, float] = {}
        self._junk: dict[str, int] = {}  # bytes of junk before any line to judge a path by

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_compiled"] = {}  # compiled regexes are rebuilt from names
        state["_undecided"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # state saved before parse windows existed (or with alerts not yet handed out, under
        # their old name)
        queued = state.pop("format_alerts", [])
        self.__dict__.update({"parse_windows": {}, "queued_alerts": queued, "_junk": {},
                              **state})

    def set_forced(self, forced: dict[str, str]) -> list[str]:
        """Forced formats from the current config (restart, SIGHUP). A file whose forced
        format changed has its decided format and parse window forgotten, so the next lines
        decide it again (a corrected format applies at once). Returns what changed, in words."""
        old, self.forced = self.forced, dict(forced)
        changes = []
        for path in sorted(set(old) | set(self.forced)):
            if old.get(path) == self.forced.get(path):
                continue
            fmt = self.formats.pop(path, None)
            self.parse_windows.pop(path, None)
            self._undecided.pop(path, None)
            self._junk.pop(path, None)
            if fmt is not None:
                now = self.forced.get(path, "detected")
                changes.append(f"format of {path}: {fmt.name} -> {now} (decided again)")
        return changes

    def reconfigure(self, options: LogOptions, now: float) -> list[str]:
        """Detector options from the current config on restored state (restart, SIGHUP):
        the detectors keep what they learned and drop what only the old options made
        (`LogAnalysis.reconfigure`); an alerted incident that thereby ends is closed with an
        alert saying why. Returns the changes and what was dropped, in words."""
        changes = option_changes(self.analysis.opt, options)
        if not changes:
            self.analysis.opt = options
            return []
        alerted: dict[str, tuple[Incident, Finding]] = {}
        for key, inc in keyed_incidents(self.analysis):
            tr = self.tracker.items.get(key)
            if tr is None or tr.closed or tr.silent:
                continue
            finding = incident_finding(inc, self.analysis)
            if finding is not None:
                alerted[key] = (inc, finding)
        notes = self.analysis.reconfigure(options)
        present = {key for key, _inc in keyed_incidents(self.analysis)}
        reason = f"no longer an incident with the new options ({'; '.join(changes)})"
        self.queued_alerts += self.tracker.drop_missing(present, alerted, reason, now)
        return changes + notes

    @property
    def unparsable(self) -> list[str]:
        """Followed files whose format parses (nearly) none of their lines right now."""
        return sorted(p for p, w in self.parse_windows.items() if w.failing)

    # -- formats ---------------------------------------------------------------------------
    def format_for(self, batch: Batch) -> FileFormat | None:
        """The path's format; None while too few lines exist to tell."""
        fmt = self.formats.get(batch.path)
        if fmt is not None:
            return fmt
        spec = self.forced.get(batch.path)
        if spec:
            if spec in ("syslog", "postfix", "exim", "mail"):
                fmt = FileFormat("mail", "syslog")
            else:
                try:
                    format_by_name(spec)
                    fmt = FileFormat("access", spec)
                except FormatError as exc:
                    self.errors.append(f"{batch.path}: {exc}")
                    fmt = FileFormat("unknown", "unknown")
        else:
            lines = sniff_lines(batch.data[:SNIFF_BYTES], complete=len(batch.data) <= SNIFF_BYTES)
            if len(lines) < SNIFF_MIN_LINES and len(batch.data) > SNIFF_BYTES:
                # a long run of NULs or junk first: judge by the whole batch (at most a read)
                lines = sniff_lines(batch.data, complete=True)
            det = detect_format(lines)
            junk = self._junk.get(batch.path, 0) + len(batch.data)
            if det is None and not lines and junk < SNIFF_LIMIT:
                # nothing but junk so far: those lines are counted as unparsed and the next
                # batch is judged afresh (deciding "unknown" here would leave a log that
                # starts with a run of NULs unwatched for good)
                self._junk[batch.path] = junk
                return FileFormat("unknown", "undecided")
            self._junk.pop(batch.path, None)
            if det is None and len(lines) < SNIFF_MIN_LINES and len(batch.data) < SNIFF_BYTES:
                waited = self._undecided.setdefault(batch.path, time.monotonic())
                if time.monotonic() - waited < SNIFF_WAIT:
                    return None  # nothing recognisable yet: wait a little for more lines
            self._undecided.pop(batch.path, None)
            if det is None:
                fmt = FileFormat("unknown", "unknown")
                self.errors.append(f"{batch.path}: not a log format relayguard knows "
                                   f"(set [watch.formats])")
            else:
                fmt = FileFormat(det.kind, det.name)
        self.formats[batch.path] = fmt
        return fmt

    def _access(self, fmt: FileFormat) -> AccessFormat | SquidFormat | None:
        if fmt.kind != "access":
            return None
        if fmt.name not in self._compiled:
            try:
                self._compiled[fmt.name] = fmt.access()
            except FormatError:
                self._compiled[fmt.name] = None
        return self._compiled[fmt.name]

    # -- feeding ---------------------------------------------------------------------------
    def fast_access(self, fmt: FileFormat) -> AccessFormat | None:
        """The access format when the bytes-level fast path (`scan_chunk`) reads this file."""
        return fast_only(self._access(fmt))

    def feed(self, batch: Batch, fmt: FileFormat, scanned: ChunkResult | None = None) -> None:
        """Account one batch of whole lines (the same calls `logs` makes per chunk), then
        judge whether the file's format still parses it. `scanned` is the batch's
        `scan_chunk` result when a worker made it (pipeline.py); else it is scanned here."""
        parsed = self.counters.parsed
        self._feed(batch, fmt, scanned)
        if fmt.kind in ("access", "mail"):
            self._judge_parsing(batch.path, fmt, batch.lines, self.counters.parsed - parsed)

    def _judge_parsing(self, path: str, fmt: FileFormat, lines: int, parsed: int) -> None:
        """`logs`' rule (`parsed_too_little`) over the lines since the last judgement: a file
        whose format parses (nearly) nothing is not being watched at all, which is an alert,
        never silence; once it parses again that is logged and the alert can fire again."""
        window = self.parse_windows.setdefault(path, ParseWindow())
        window.lines += lines
        window.parsed += parsed
        if window.lines < SNIFF_MIN_LINES:
            return
        failing = parsed_too_little(window.lines, window.parsed)
        if failing and not window.failing:
            how = "the format set in [watch] formats" if path in self.forced else \
                "the format detected for it"
            title = (f"{path}: only {window.parsed} of {window.lines} line(s) parse as "
                     f"{fmt.name} ({how}); the rest is not being watched")
            self.errors.append(title)
            self.queued_alerts.append(format_alert(path, fmt.name, window, title))
        elif window.failing and not failing:
            self.errors.append(f"{path}: lines parse as {fmt.name} again")
        window.failing = failing
        window.lines = window.parsed = 0

    def _feed(self, batch: Batch, fmt: FileFormat, scanned: ChunkResult | None) -> None:
        c = self.counters
        c.lines += batch.lines
        c.by_path[batch.path] = c.by_path.get(batch.path, 0) + batch.lines
        if self.line_digest:
            d = c.digest
            for line in split_lines(batch.as_bytes()):
                d += zlib.crc32(line)
            c.digest = d % (1 << 64)
        an = self.analysis
        base = batch.first_lineno - 1
        if fmt.kind == "mail":
            self._mail(batch, base)
            return
        access = self._access(fmt)
        fast = fast_only(access)
        if fast is not None:
            res = scanned if scanned is not None else scan_chunk(batch.as_bytes(), batch.lines)
            c.unparsed += res.unparsed
            c.parsed += res.lines - res.unparsed
            an.feed_chunk(res, fast, batch.source, base)
            return
        if access is None:
            c.unparsed += batch.lines
            return
        st = an.stats
        before = st.unparsed
        for i, raw in enumerate(split_lines(batch.as_bytes()), 1):
            an.feed_access_line(access, batch.source, base + i, raw)
        c.unparsed += st.unparsed - before
        c.parsed += batch.lines - (st.unparsed - before)

    def _mail(self, batch: Batch, base: int) -> None:
        c = self.counters
        an = self.analysis
        years = YearGuesser(reference=time.time(), tz=an.opt.tz)
        before = an.stats.unparsed
        for i, raw in enumerate(split_lines(batch.as_bytes()), 1):
            an.feed_mail_line(years, batch.source, base + i, raw)
        c.unparsed += an.stats.unparsed - before
        c.parsed += batch.lines - (an.stats.unparsed - before)

    def review(self, now: float, update_interval: float, quiet: float,
               min_severity: Severity) -> tuple[list[Alert], list[tuple[Incident, Finding]]]:
        before = len(self.tracker.items)
        alerts, changed = self.tracker.review(self.analysis, now, update_interval, quiet,
                                              min_severity)
        alerts, self.queued_alerts = self.queued_alerts + alerts, []
        self.counters.incidents_opened += len(self.tracker.items) - before
        self.counters.alerts_created += len(alerts)
        return alerts, changed

    def status(self) -> dict[str, Any]:
        """Counters and current incidents in the `logs` JSON shape (for `--status`)."""
        c = self.counters
        return {
            "lines": c.lines, "parsed": c.parsed, "unparsed": c.unparsed,
            "lines_by_path": dict(sorted(c.by_path.items())),
            "line_digest": c.digest if self.line_digest else None,
            "incidents_opened": c.incidents_opened, "alerts_created": c.alerts_created,
            "formats": {p: f"{f.kind}:{f.name}" for p, f in sorted(self.formats.items())},
            "unparsable": self.unparsable,
            "incidents": [i.to_dict() for i in self.analysis.incidents()],
            "errors": list(self.errors),
            "pid": os.getpid(),
        }
