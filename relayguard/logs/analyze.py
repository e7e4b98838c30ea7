"""`relayguard logs` as a library call: read every input, run the detectors, build the Report.

Per file the format is detected from its first lines (or forced with `log_format`); access
logs that the fast path understands are scanned as bytes, everything else line by line. A file
that cannot be read becomes an error entry and the others are still analysed.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from relayguard.findings import (
    Confidence,
    ErrorEntry,
    Evidence,
    Finding,
    Location,
    Report,
    Severity,
)
from relayguard.logs import rules as R
from relayguard.logs.apacheconf import ProxyConfig
from relayguard.logs.counting import Timeline
from relayguard.logs.detect import MailDetector, OwnProbe, ProxyDetector, VolumeDetector
from relayguard.logs.fastpath import ChunkResult, parse_candidates, scan_chunk, scan_plain_file
from relayguard.logs.formats import (
    SNIFF_BYTES,
    SNIFF_LIMIT,
    SNIFF_MIN_LINES,
    AccessFormat,
    Detected,
    FormatError,
    LocalTime,
    SquidFormat,
    YearGuesser,
    compile_apache,
    detect_format,
    format_by_name,
    parse_syslog,
    sniff_lines,
)
from relayguard.logs.incidents import Incident, Sample
from relayguard.logs.sources import (
    ReadProblems,
    is_plain_file,
    iter_chunks,
    iter_lines,
    line_text,
    open_binary,
    order_rotated,
    rotation_base,
)

MAX_UNPARSED_SAMPLES = 10


def parsed_too_little(lines: int, parsed: int) -> bool:
    """(Nearly) nothing of these lines parsed: none, or under one in twenty. The file was
    not analysed, which must be said (`logs` makes it an error, `watch` an alert)."""
    return parsed * 20 < lines  # with parsed == 0 this is lines > 0


PARSE_BATCH = 4096  # candidate lines parsed at once: a chunk of nothing else has ~80,000


def _file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of a regular file; None for stdin, pipes and what cannot be read
    (opening it reports why)."""
    if path == "-":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


@dataclass
class LogOptions:
    """Everything `relayguard logs` can be told besides the files."""

    server_names: frozenset[str] = frozenset()
    mail_domains: frozenset[str] = frozenset()
    trusted_clients: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    log_format: str | None = None
    formats_by_path: dict[str, str] = field(default_factory=dict)  # from --apache-config
    # LogFormat nicknames from --apache-config: a log detected as `combined` is read with the
    # server's own `combined` (Debian's logs %O where upstream's logs %b)
    format_nicknames: dict[str, str] = field(default_factory=dict)
    proxy_config: ProxyConfig | None = None  # from --apache-config: can the server relay?
    config_notes: tuple[str, ...] = ()  # problems met reading that config (not fatal)
    since: float | None = None
    until: float | None = None
    year: int | None = None
    tz: tzinfo | None = None  # zone of syslog stamps (they carry none); None = this machine's
    jobs: int = 0  # 0 = all cores
    fast: bool = True


@dataclass
class _Stats:
    lines: int = 0
    parsed: int = 0
    unparsed: int = 0
    by_format: dict[str, int] = field(default_factory=dict)
    unparsed_samples: list[dict[str, Any]] = field(default_factory=list)
    overlong_lines: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)

    def overlong(self, path: str, count: int, samples: list[tuple[int | None, bytes]]) -> None:
        """Lines longer than 64 KiB (cut), from either reading path."""
        self.overlong_lines += count
        for lineno, text in samples:
            self.sample(path, lineno, b"[line longer than 64 KiB, cut] " + text)

    def sample(self, path: str, line: int | None, text: bytes | str) -> None:
        if len(self.unparsed_samples) < MAX_UNPARSED_SAMPLES:
            if isinstance(text, bytes):
                text = text.decode("utf-8", "surrogateescape")
            self.unparsed_samples.append({"path": path, "line": line, "text": text[:200]})


class LogAnalysis:
    """One run over a set of inputs; `feed_*` are public so tests and `watch` can drive it."""

    def __init__(self, options: LogOptions) -> None:
        self.opt = options
        self.proxy = ProxyDetector(options.server_names, options.proxy_config)
        self.mail = MailDetector(options.mail_domains, options.trusted_clients)
        self.volume = VolumeDetector()
        self.stats = _Stats()
        self.errors: list[ErrorEntry] = []
        self.skipped: list[str] = []
        self._specs: dict[str, Detected] = {}
        self._years: dict[str, YearGuesser] = {}  # per rotated set, with --year
        # first and last time of each input's events (to the minute in the fast path): a
        # volume spike, counted per minute, is placed in the file(s) holding it
        self.spans: dict[str, dict[str, list[float]]] = {"access": {}, "mail": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """State `watch` pickled before the per-file spans and per-set years existed."""
        self.__dict__.update({"spans": {"access": {}, "mail": {}}, "_years": {}, **state})

    def reconfigure(self, options: LogOptions) -> list[str]:
        """Take new options mid-stream (`watch` restart or SIGHUP): what the detectors
        learned is kept, and only what the old options alone made is dropped (see
        `ProxyDetector.set_server_names`, `MailDetector.set_options`). Returns what was
        dropped, in words."""
        self.opt = options
        self.proxy.config = options.proxy_config
        notes = [f"{inc.kind} incident #{inc.serial} retired: every destination in it is a "
                 f"server name now" for inc in self.proxy.set_server_names(options.server_names)]
        notes += [f"relay record of {ip} dropped: a trusted client now"
                  for ip in self.mail.set_options(options.mail_domains, options.trusted_clients)]
        return notes

    # -- inputs ----------------------------------------------------------------------------
    def run(self, paths: list[str]) -> Report:
        seen: dict[tuple[int, int], str] = {}
        for path in order_rotated(paths):
            # one file under two names (./x and x, a symlink, a hard link) would count twice
            ident = _file_identity(path)
            if ident is not None and ident in seen:
                self.skipped.append(f"{path}: the same file as {seen[ident]}, read once")
                continue
            if ident is not None:
                seen[ident] = path
            self.analyse_path(path)
        return self.report()

    def analyse_path(self, path: str) -> None:
        problems = ReadProblems()
        try:
            stream = open_binary(path, problems)
        except OSError as exc:
            self.errors.append(ErrorEntry(path, f"cannot read: {exc.strerror or exc}"))
            return
        try:
            head = self._peek(stream, path, problems)
            detected = self._format_for(path, head)
            before, parsed_before = self.stats.lines, self.stats.parsed
            if detected is not None and detected.kind == "error":
                return  # the format itself is unusable: said once, nothing read
            if detected is None:
                if head.strip():
                    self.errors.append(ErrorEntry(path, "not a log format relayguard knows "
                                                  "(use --log-format)"))
                self._count_unknown(path, head, stream, problems)
            elif detected.kind == "skip":
                self.skipped.append(f"{path}: {detected.name} log, not analysed")
            elif detected.kind == "mail":
                self._mail(path, head, stream, problems)
            elif isinstance(detected.access, AccessFormat) and detected.access.fast_ok \
                    and self.opt.fast:
                self._access_fast(path, head, stream, problems, detected.access)
            else:
                assert detected.access is not None
                self._access_slow(path, head, stream, problems, detected.access)
            self.stats.files.append({"path": path,
                                     "format": detected.name if detected else None,
                                     "lines": self.stats.lines - before})
            if detected is not None and detected.kind in ("access", "mail"):
                self._check_parsed(path, detected, self.stats.lines - before,
                                   self.stats.parsed - parsed_before)
        except OSError as exc:
            self.errors.append(ErrorEntry(path, f"read error: {exc.strerror or exc}"))
        finally:
            if path != "-":
                stream.close()
        if problems.truncated:
            self.errors.append(ErrorEntry(path, problems.truncated))
        self.stats.overlong(path, problems.overlong, problems.overlong_samples)

    def _spec(self, spec: str, path: str) -> Detected:
        """A format by name or LogFormat string, compiled once; a bad one is reported once
        (kind "error") for --log-format, or once per config format."""
        found = self._specs.get(spec)
        if found is None:
            if spec in ("syslog", "postfix", "exim", "mail"):
                found = Detected("mail", "syslog")
            else:
                try:
                    fmt = format_by_name(spec)
                    found = Detected("access", fmt.name, fmt)
                except FormatError as exc:
                    forced = spec == self.opt.log_format
                    self.errors.append(ErrorEntry("--log-format" if forced else path,
                                                  str(exc)))
                    found = Detected("error", spec)
            self._specs[spec] = found
        return found

    def _check_parsed(self, path: str, detected: Detected, lines: int, parsed: int) -> None:
        """A file where (nearly) nothing parsed was not analysed: an error, never a clean
        result (a wrong --log-format, a config format that does not match the file)."""
        if not parsed_too_little(lines, parsed):
            return
        how = "the format forced with --log-format" if self.opt.log_format else \
            "the format chosen for it"
        self.errors.append(ErrorEntry(path, f"only {parsed} of {lines} line(s) parse as "
                                      f"{detected.name} ({how}); the rest of the file was "
                                      "not analysed"))

    def _peek(self, stream: Any, path: str, problems: ReadProblems) -> bytes:
        """The first bytes for format detection: SNIFF_BYTES, or more (up to SNIFF_LIMIT)
        while they hold fewer than SNIFF_MIN_LINES lines to judge by — a file may start with
        a long run of NULs or junk before its first real line."""
        head = stream.read(SNIFF_BYTES)
        parts = [head]
        size = len(head)
        while head and size < SNIFF_LIMIT and \
                len(sniff_lines(b"".join(parts), complete=False)) < SNIFF_MIN_LINES:
            head = stream.read(min(4 * SNIFF_BYTES + size, SNIFF_LIMIT - size))
            parts.append(head)
            size += len(head)
        return b"".join(parts)

    def _format_for(self, path: str, head: bytes) -> Detected | None:
        by_path = self.opt.formats_by_path
        spec = self.opt.log_format
        if not spec and by_path and path != "-":
            base = rotation_base(path)  # access.log.2.gz is written in access.log's format
            spec = next((by_path[p] for p in (path, os.path.abspath(path), base,
                                              os.path.abspath(base)) if p in by_path), None)
        if spec:
            return self._spec(spec, path)
        detected = detect_format(sniff_lines(head, complete=len(head) < SNIFF_BYTES))
        own = self.opt.format_nicknames.get(detected.name) if detected is not None else None
        if detected is not None and own is not None:
            with contextlib.suppress(FormatError):  # the server's own definition of the name
                return Detected("access", detected.name, compile_apache(own, detected.name))
        return detected

    def _count_unknown(self, path: str, head: bytes, stream: Any,
                       problems: ReadProblems) -> None:
        for lineno, raw in enumerate(iter_lines(_Chain(head, stream), problems), 1):
            self.stats.lines += 1
            self.stats.unparsed += 1
            if raw.strip():
                self.stats.sample(path, lineno, raw)

    # -- access logs -------------------------------------------------------------------------
    def _span(self, kind: str, path: str, first: float | None, last: float | None) -> None:
        if first is None or last is None:
            return
        spans = self.spans[kind]
        span = spans.get(path)
        if span is None:
            spans[path] = [first, last]
        elif first < span[0] or last > span[1]:
            span[0], span[1] = min(span[0], first), max(span[1], last)

    def holding(self, kind: str, first: float | None, last: float | None) -> list[str]:
        """The access or mail logs, in reading order, whose events span some of first ..
        last."""
        if first is None or last is None:
            return []
        return [p for p, (a, b) in self.spans[kind].items() if a <= last and b >= first]

    def _in_range(self, t: float | None) -> bool:
        if t is None:
            return True
        if self.opt.since is not None and t < self.opt.since:
            return False
        return not (self.opt.until is not None and t > self.opt.until)

    def feed_access_line(self, fmt: AccessFormat | SquidFormat, path: str, lineno: int,
                         raw: bytes) -> None:
        """Account one access-log line (the line-by-line path; `watch` calls this too)."""
        st = self.stats
        st.lines += 1
        text = line_text(raw)
        rec = fmt.parse(text) if text else None
        if rec is None:
            st.unparsed += 1
            if raw.strip():
                st.sample(path, lineno, raw)
            return
        st.parsed += 1
        st.by_format[fmt.name] = st.by_format.get(fmt.name, 0) + 1
        in_range = self._in_range(rec.time)
        if in_range:
            self.volume.feed_time(rec.time)
            self._span("access", path, rec.time, rec.time)
        self.proxy.feed(rec, path, lineno, text, in_range)

    def feed_mail_line(self, years: YearGuesser, path: str, lineno: int, raw: bytes) -> None:
        """Account one mail-log line (syslog, maillog_file or Exim mainlog)."""
        st = self.stats
        st.lines += 1
        text = line_text(raw)
        rec = parse_syslog(text, years) if text else None
        if rec is None:
            st.unparsed += 1
            if raw.strip():
                st.sample(path, lineno, raw)
            return
        st.parsed += 1
        fam = "exim" if rec.program.startswith("exim") else (
            "postfix" if "postfix" in rec.program or "/" in rec.program else "syslog")
        st.by_format[fam] = st.by_format.get(fam, 0) + 1
        in_range = self._in_range(rec.time)
        if in_range:
            self._span("mail", path, rec.time, rec.time)
        self.mail.feed(rec, path, lineno, text, in_range)

    def _access_slow(self, path: str, head: bytes, stream: Any, problems: ReadProblems,
                     fmt: AccessFormat | SquidFormat) -> None:
        for lineno, raw in enumerate(iter_lines(_Chain(head, stream), problems), 1):
            self.feed_access_line(fmt, path, lineno, raw)

    def _access_fast(self, path: str, head: bytes, stream: Any, problems: ReadProblems,
                     fmt: AccessFormat) -> None:
        jobs = self.opt.jobs or (os.cpu_count() or 1)
        if path != "-" and is_plain_file(path):
            stream.close()
            results = scan_plain_file(path, jobs, fmt)
        else:
            results = (scan_chunk(c) for c in iter_chunks(_Chain(head, stream), problems))
        base = 0
        for res in results:
            self._merge_chunk(path, base, res, fmt)
            base += res.lines

    def _merge_chunk(self, path: str, base: int, res: ChunkResult, fmt: AccessFormat) -> None:
        st = self.stats
        st.lines += res.lines
        st.unparsed += res.unparsed
        parsed = res.lines - res.unparsed
        st.parsed += parsed
        st.by_format[fmt.name] = st.by_format.get(fmt.name, 0) + parsed
        for lineno, text in res.unparsed_samples:
            st.sample(path, base + lineno, text)
        st.overlong(path, res.overlong, [(base + i, t) for i, t in res.overlong_samples])
        self.feed_chunk(res, fmt, path, base)

    def feed_chunk(self, res: ChunkResult, fmt: AccessFormat, source: str, base: int) -> None:
        """The detectors' share of one fast-path chunk (`watch` calls this too): minutes,
        the site's own page sizes, size-unit evidence and the candidate lines."""
        if self.opt.since is not None or self.opt.until is not None:
            # a minute counts whole when any second of it is in range: a window inside one
            # minute has neither of the minute's ends in it
            lo = -math.inf if self.opt.since is None else self.opt.since - 59
            hi = math.inf if self.opt.until is None else self.opt.until
            minutes = {t: n for t, n in res.minutes.items() if lo <= t <= hi}
        else:
            minutes = res.minutes
        self.volume.feed_minutes(minutes)
        if minutes:
            self._span("access", source, min(minutes), max(minutes) + 59)
        for p, size in res.local_sizes:
            self.proxy.note_local(p, size)
        if fmt.sizes == "guess":
            self.proxy.note_size_evidence(*res.sizes_304)
        fields = res.fields if res.fields_pattern == fmt.pattern.pattern else None
        unit, cands = fmt.sizes, res.candidates
        keep = self._in_range if self.opt.since is not None or self.opt.until is not None \
            else None
        for lo in range(0, len(cands), PARSE_BATCH):  # a dense chunk's fields, a slice at once
            part = cands[lo:lo + PARSE_BATCH]
            # parsed by the worker that scanned the chunk, or here
            got = fields[lo:lo + PARSE_BATCH] if fields is not None \
                else parse_candidates(fmt, part)
            with self.proxy.deferring():  # the slice's events counted into incidents at once
                self.proxy.feed_fields(got, part, unit, source, base, keep)

    # -- mail logs ---------------------------------------------------------------------------
    def _mail(self, path: str, head: bytes, stream: Any, problems: ReadProblems) -> None:
        try:
            mtime = os.stat(path).st_mtime if path != "-" else None
        except OSError:
            mtime = None
        if self.opt.year is not None and path != "-":
            # --year is the year a rotated set starts in (read oldest first): it runs on from
            # file to file, so mail.log's January follows mail.log.1's December
            years = self._years.setdefault(rotation_base(path),
                                           YearGuesser(year=self.opt.year, tz=self.opt.tz))
        else:
            years = YearGuesser(reference=mtime, year=self.opt.year, tz=self.opt.tz)
        for lineno, raw in enumerate(iter_lines(_Chain(head, stream), problems), 1):
            self.feed_mail_line(years, path, lineno, raw)

    # -- results -----------------------------------------------------------------------------
    def incidents(self) -> list[Incident]:
        return sorted(self.proxy.snapshot() + self.mail.snapshot() + self.volume.incidents(),
                      key=lambda i: (i.first or 0.0, i.kind))

    def retire(self, inc: Incident) -> None:
        """Forget an incident `watch` has closed, so later events open a new one."""
        if not self.proxy.book.retire(inc):
            self.mail.retire(inc)

    def report(self) -> Report:
        incidents = self.incidents()
        told = [(inc, incident_finding(inc, self)) for inc in incidents]
        findings = [f for _inc, f in told if f is not None]
        volume = self.volume.snapshot()
        stats: dict[str, Any] = {
            "lines": self.stats.lines,
            "parsed": self.stats.parsed,
            "unparsed": self.stats.unparsed,
            "by_format": dict(sorted(self.stats.by_format.items())),
            "unparsed_samples": self.stats.unparsed_samples,
            "overlong_lines": self.stats.overlong_lines,
            "files": self.stats.files,
            # each incident names its finding, so `scan` can place it in time (what followed)
            "incidents": [{**i.to_dict(), **({"finding": f.fingerprint()} if f else {})}
                          for i, f in told],
            "volume_spikes": volume,
            "requests_timeline": self.volume.timeline.to_dict(),
            "mail": {**self.mail.counts, **self.mail.volume(),
                     "deferred_bounced_timeline": self.mail.outcome_timeline.to_dict()},
            "own_host_absolute_requests": self.proxy.own_host_absolute,
            "own_probe_requests": (self.proxy.own_probe or OwnProbe()).to_dict(),
        }
        notes = [story(i) for i in incidents[:12]] + self.skipped + list(self.opt.config_notes)
        if len(incidents) > 12:
            notes.append(f"... and {len(incidents) - 12} more incident(s) in stats.incidents")
        if self.proxy.own_probe is not None:
            notes.append(self.proxy.own_probe.story())
        if self.stats.by_format.get("postfix") or self.stats.by_format.get("exim"):
            notes.append(f"syslog timestamps carry no zone: read as {LocalTime(self.opt.tz).name()}"
                         " and shown in UTC (--tz names the zone the logs were written in)")
        return Report(command="logs", findings=tuple(findings), errors=tuple(self.errors),
                      stats=stats, notes=tuple(notes))


class _Chain:
    """A stream that first returns already-read `head` bytes, then the rest of `stream`."""

    def __init__(self, head: bytes, stream: Any) -> None:
        self.head = head
        self.stream = stream

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = self.head, b""
            return out
        return self.stream.read(n)


# ---------------------------------------------------------------------------------------------
# incidents -> findings

def _evidence(inc: Incident, summary: str) -> tuple[Evidence, ...]:
    out = [Evidence("log", summary)]
    for s in inc.samples():
        out.append(Evidence("log", s.text[:500], Location(path=s.path, line=s.line)))
    return tuple(out)


def _when(inc: Incident) -> str:
    d = inc.to_dict()
    return f"{d['first_seen']} .. {d['last_seen']}"


def _summary(inc: Incident) -> str:
    d = inc.to_dict()
    clients = ", ".join(f"{c} ({n})" for c, n in d["clients"][:5]) or "-"
    dests = ", ".join(f"{c} ({n})" for c, n in d["destinations"][:5]) or "-"
    outcomes = ", ".join(f"{k} {v}" for k, v in d["outcomes"].items())
    return (f"{d['events']} event(s) {_when(inc)}; verdict: {d['verdict']} ({outcomes}); "
            f"statuses {d['statuses']}; clients: {clients}; destinations: {dests}; "
            f"SMTP destinations: {d['smtp_destinations']}; bytes: {d['bytes']}; "
            f"peak {d['peak_per_minute']:.0f}/min")


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(inc: Incident, width: int = 40) -> str:
    """The incident's events over its own span as a one-line bar chart (empty if one bucket):
    each column holds the same number of timeline buckets."""
    series = inc.timeline.series()
    if len(series) < 2:
        return ""
    step = inc.timeline.width
    t0 = series[0][0]
    spanned = (series[-1][0] - t0) // step + 1
    per_col = -(-spanned // width)
    cols = [0] * (-(-spanned // per_col))
    for t, n in series:
        cols[(t - t0) // step // per_col] += n
    top = max(cols)
    return "".join(_BARS[min(7, n * 8 // (top + 1))] if n else " " for n in cols)


def story(inc: Incident) -> str:
    """One line a person reads first: what, when, how many, who, where to, did it work."""
    d = inc.to_dict()
    clients = ", ".join(f"{c} ({n})" for c, n in d["clients"][:3])
    more = f" +{d['clients_distinct'] - 3} more" if d["clients_distinct"] > 3 else ""
    dests = ", ".join(f"{c} ({n})" for c, n in d["destinations"][:3]) or "-"
    outcomes = ", ".join(f"{k} {v}" for k, v in d["outcomes"].items())
    line = (f"{d['kind']}: {d['events']} event(s) {d['first_seen']} .. {d['last_seen']}, "
            f"{d['verdict']} ({outcomes}); from {clients or '-'}{more}; to {dests}")
    if d["smtp_destinations"]:
        line += f"; {d['smtp_destinations']} SMTP destination(s)"
    line += f"; peak {d['peak_per_minute']:.0f}/min"
    spark = sparkline(inc)
    return f"{line} [{spark}]" if spark else line


def incident_finding(inc: Incident, analysis: LogAnalysis) -> Finding | None:
    """The finding one incident deserves (None for incidents that are context only)."""
    first = inc.samples()[0] if inc.samples() else Sample("-", 0, "")
    loc = Location(path=first.path, line=first.line)
    kind = inc.kind
    verdict = inc.verdict
    if kind.startswith("proxy-"):
        rule = {"proxy-smtp": R.LOGS_PROXY_SMTP, "proxy-connect": R.LOGS_PROXY_CONNECT,
                "proxy-http": R.LOGS_PROXY_HTTP,
                "proxy-host-header": R.LOGS_PROXY_HOST_HEADER}[kind]
        o = inc.all_outcomes
        if verdict == "relayed":
            return rule.finding(
                f"{rule.title}: {o['relayed']} of {inc.events} request(s) relayed",
                location=loc, evidence=_evidence(inc, _summary(inc)),
                confidence=Confidence.LIKELY)
        if verdict == "unknown":
            what = ("the server tried to forward them (upstream errors)"
                    if o["failed"] and not o["unknown"] else "outcome unknown from the log")
            return rule.finding(
                f"{rule.title}? {inc.events} request(s), {what}",
                location=loc, evidence=_evidence(inc, _summary(inc)),
                confidence=Confidence.POSSIBLE, severity=Severity(rule.severity - 1))
        sev = Severity.LOW if o["refused"] or o["failed"] else Severity.INFO
        what = "refused" if verdict == "refused" else "probably served locally"
        return R.LOGS_PROXY_SCAN.finding(
            f"{inc.events} proxy request(s) ({kind}), {what}",
            location=loc, evidence=_evidence(inc, _summary(inc)),
            confidence=Confidence.LIKELY, severity=sev)
    if kind == "smtp-relayed":
        rule = R.LOGS_SMTP_RELAYED
        o = inc.all_outcomes
        return rule.finding(
            f"{inc.extra.get('client')} relayed {inc.events} delivery(ies) to "
            f"{inc.extra.get('foreign_domains')} foreign domain(s) ({o['relayed']} sent)",
            location=loc, evidence=_evidence(inc, _summary(inc)),
            confidence=Confidence.CONFIRMED if o["relayed"] else Confidence.LIKELY)
    if kind == "smtp-sender-volume":
        who = ("authenticated user" if inc.extra.get("authenticated") else "local sender") + \
            f" {inc.extra.get('sender')}"
        return R.LOGS_SMTP_SENDER_VOLUME.finding(
            f"{who}: {'; '.join(inc.extra.get('reasons', []))} "
            f"(hour from {inc.extra.get('hour_start')})",
            location=loc, evidence=_evidence(inc, _summary(inc)),
            confidence=Confidence.LIKELY)
    if kind in ("volume-spike", "mail-outcome-spike"):
        rule = R.LOGS_VOLUME_SPIKE if kind == "volume-spike" else R.LOGS_MAIL_FAILURE_SPIKE
        what = "requests" if kind == "volume-spike" else "deferred/bounced deliveries"
        # counted per minute: no line to point at, but the file(s) holding those minutes
        files = analysis.holding("access" if kind == "volume-spike" else "mail", inc.first,
                                 inc.last)
        where = ""
        if files:
            where = f"; in {', '.join(files[:5])}"
            if len(files) > 5:
                where += f" (+{len(files) - 5} more)"
        peak, usual = inc.timeline.peak_per_minute(), inc.extra.get("baseline_per_minute", 0)
        when = _when(inc)
        # a measurement: no clients, statuses or outcomes were recorded, so none are listed
        summary = (f"{inc.events} {what} {when}; peak {peak:.0f}/min, usually {usual:.0f}/min; "
                   f"counted per minute, no lines or clients kept: see those minutes{where}")
        return rule.finding(
            f"{peak:.0f} {what}/min at the peak, usually {usual:.0f}/min: {inc.events} in "
            f"{inc.extra.get('spike_minutes')} minute(s), {when}",
            location=Location(path=files[0]) if files else Location(),
            evidence=_evidence(inc, summary), confidence=Confidence.CONFIRMED)
    if kind == "smtp-relay-denied":
        return R.LOGS_SMTP_RELAY_DENIED.finding(
            f"{inc.events} relay attempt(s) refused from {inc.client_count.describe()} "
            "client(s)",
            location=loc, evidence=_evidence(inc, _summary(inc)),
            confidence=Confidence.CONFIRMED)
    if kind == "smtp-sasl-failures":
        bursts = inc.extra.get("burst_clients") or []
        if not bursts:
            return None
        return R.LOGS_SMTP_SASL_BURST.finding(
            f"{inc.events} failed SMTP login(s); bursts from {', '.join(bursts[:5])}",
            location=loc, evidence=_evidence(inc, _summary(inc)),
            confidence=Confidence.LIKELY)
    if kind == "smtp-blocklist-bounce":
        lists = inc.extra.get("lists", {})
        names = ", ".join(f"{k} ({v})" for k, v in sorted(lists.items(), key=lambda kv: -kv[1]))
        return R.LOGS_SMTP_BLOCKLISTED.finding(
            f"{inc.events} outbound delivery(ies) refused because our IP is listed: {names}",
            location=loc, evidence=_evidence(inc, _summary(inc)),
            confidence=Confidence.LIKELY)
    return None


def analyse(paths: list[str], options: LogOptions | None = None) -> Report:
    """Analyse log files (rotated sets in time order, `-` for stdin) into a Report."""
    return LogAnalysis(options or LogOptions()).run(paths)


__all__ = ["LogAnalysis", "LogOptions", "Timeline", "analyse"]
