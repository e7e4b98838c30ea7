"""Log line formats: an Apache `LogFormat` / nginx `log_format` compiler, Squid native, syslog.

Every access-log format compiles to one regex with named groups and is read into an
`AccessRecord`; every mail log line (Postfix or Exim, classic syslog, RFC 3339 or Postfix's own
`maillog_file`) into a `SyslogLine`. Parsing works on `str` decoded with `surrogateescape`, so
attacker-written bytes survive unchanged into evidence and are never a reason to crash.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo

from relayguard.digits import ascii_int, is_digits
from relayguard.logs.sources import MAX_LINE

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

# Out-of-the-box formats (Apache's stock names; nginx "combined" is Apache's combined).
APACHE_FORMATS = {
    "common": '%h %l %u %t "%r" %>s %b',
    "combined": '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"',
    "vhost_combined": '%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"',
}
NGINX_COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status '
                  '$body_bytes_sent "$http_referer" "$http_user_agent"')


@dataclass(slots=True)
class AccessRecord:
    """One web or proxy request, with only the fields relaying is judged on."""

    time: float | None  # epoch seconds (UTC)
    client: str
    method: str
    target: str  # request-target as sent: /path, http://host/…, host:port
    status: int | None
    size: int | None  # response body bytes (%b/%B, $body_bytes_sent, Squid total)
    vhost: str | None = None
    host_header: str | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    duration_us: int | None = None
    proxy_log: bool = False  # Squid: every request is a proxy request by design
    hier: str | None = None  # Squid hierarchy code (HIER_DIRECT/1.2.3.4, HIER_NONE/-)
    size_unit: str = "body"  # what `size` counts: see AccessFormat.sizes


# AccessRecord's fields up to duration_us, in order
RecordFields = tuple[float | None, str, str, str, int | None, int | None, str | None, str | None,
                     int | None, int | None, int | None]


@dataclass(slots=True)
class SyslogLine:
    """One syslog-style line: program name (e.g. `postfix/smtpd`), pid and message."""

    time: float | None
    host: str
    program: str
    pid: int | None
    message: str


# --------------------------------------------------------------------------------------------
# time helpers

_minute_cache: dict[str, float] = {}
_second_cache: dict[str, float] = {}


def parse_clf_time(text: str) -> float | None:
    """`10/Oct/2000:13:55:36 -0700` -> epoch seconds; cached per second and per minute, so
    cheap per line (a busy log repeats each second's stamp: one dict lookup)."""
    t = _second_cache.get(text)
    if t is None:
        t = _clf_time(text)
        if t is not None:
            if len(_second_cache) > 4096:
                _second_cache.clear()
            _second_cache[text] = t
    return t


def _clf_time(text: str) -> float | None:
    if len(text) < 20:
        return None
    key = text[:17] + text[20:]
    base = _minute_cache.get(key)
    if base is None:
        try:
            day = int(text[0:2])
            month = MONTHS[text[3:6]]
            year = int(text[7:11])
            hour = int(text[12:14])
            minute = int(text[15:17])
            offset = 0
            tz = text[21:].strip()
            if tz:
                if len(tz) != 5 or tz[0] not in "+-" or not is_digits(tz[1:]):
                    return None
                offset = (int(tz[1:3]) * 60 + int(tz[3:5])) * 60
                if tz[0] == "-":
                    offset = -offset
            base = calendar.timegm((year, month, day, hour, minute, 0)) - offset
            datetime(year, month, day, hour, minute)  # rejects day 31 of February etc.
        except (KeyError, ValueError, OverflowError):
            return None
        if len(_minute_cache) > 4096:
            _minute_cache.clear()
        _minute_cache[key] = base
    sec = text[18:20]
    if not is_digits(sec):
        return None
    return base + int(sec)


def parse_iso_time(text: str, clock: LocalTime | None = None) -> float | None:
    """RFC 3339 / ISO 8601 (`2024-06-14T12:02:41.123+03:00`, `…Z`, or a space) -> epoch.
    A stamp without a zone is wall-clock time of `clock` (UTC when none is given)."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        if clock is not None:
            return clock.epoch(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second,
                               dt.microsecond / 1e6)
        return calendar.timegm(dt.timetuple()) + dt.microsecond / 1e6
    return dt.timestamp()


def zone(name: str) -> tzinfo:
    """An IANA zone name (`Europe/Berlin`, `UTC`), for `logs --tz` and watch's `tz`; a
    ValueError that says what is wanted for anything else."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin or "
                         "UTC)") from None


class LocalTime:
    """Wall-clock times of one zone as epoch seconds: syslog stamps carry no zone and are the
    writing machine's local time. `tz` None is this machine's zone (TZ, /etc/localtime); the
    offset is looked up once per hour of the calendar, so a DST change is followed. In the
    hour a clock is set back, the ambiguous times take the zone's first reading."""

    def __init__(self, tz: tzinfo | None = None) -> None:
        self.tz = tz
        self._offsets: dict[tuple[int, int, int, int], int] = {}

    def name(self) -> str:
        """The zone as a person knows it: `Europe/Berlin`, or this machine's (TZ, then the
        /etc/localtime link, then its abbreviation)."""
        if self.tz is not None:
            return str(self.tz)
        zone = os.environ.get("TZ", "").lstrip(":")
        if not zone:
            with contextlib.suppress(OSError):
                zone = os.readlink("/etc/localtime").split("zoneinfo/", 1)[-1]
        return f"{zone or time.strftime('%Z')}, this machine's zone"

    def epoch(self, year: int, month: int, day: int, h: int, m: int, s: int,
              frac: float = 0.0) -> float | None:
        key = (year, month, day, h)
        off = self._offsets.get(key)
        if off is None:
            try:
                off = self._offset(year, month, day, h)
            except (ValueError, OverflowError, OSError):
                return None
            if len(self._offsets) > 4096:
                self._offsets.clear()
            self._offsets[key] = off
        return calendar.timegm((year, month, day, h, m, s)) - off + frac

    def _offset(self, year: int, month: int, day: int, h: int) -> int:
        if self.tz is not None:
            delta = datetime(year, month, day, h, tzinfo=self.tz).utcoffset()
            return int(delta.total_seconds()) if delta is not None else 0
        local = time.mktime((year, month, day, h, 0, 0, 0, 0, -1))
        return calendar.timegm((year, month, day, h, 0, 0)) - int(local)


def _strftime_to_parser(fmt: str):
    """Apache `%{format}t`: `sec`/`msec`/`usec` epochs, or a strftime format for strptime."""
    fmt = fmt.removeprefix("begin:").removeprefix("end:")
    scale = {"sec": 1.0, "msec": 1e3, "usec": 1e6, "msec_frac": None, "usec_frac": None}
    if fmt in scale:
        div = scale[fmt]

        def epoch(text: str) -> float | None:
            if div is None or not is_digits(text):
                return None
            return int(text) / div
        return epoch

    def custom(text: str) -> float | None:
        try:
            dt = datetime.strptime(text, fmt)
        except ValueError:
            return None
        if dt.tzinfo is None:
            return calendar.timegm(dt.timetuple()) + dt.microsecond / 1e6
        return dt.timestamp()
    return custom


# --------------------------------------------------------------------------------------------
# the LogFormat compiler

# a quoted field with `\"` escapes, unrolled (`[^"\\]*(?:\\.[^"\\]*)*`): the same matches as
# `(?:[^"\\]|\\.)*`, in the same order, but one repeat over a character set instead of an
# alternation per character (a combined line matches in 2.9 µs instead of 7.3)
_QUOTED = r'[^"\\]*(?:\\.[^"\\]*)*'
_FIELD_RE = {
    "client": r"\S+", "status": r"\d{3}|-", "size": r"\d+|-", "bytes_in": r"\d+|-",
    "bytes_out": r"\d+|-", "duration_us": r"\d+", "duration_s": r"\d+(?:\.\d+)?",
    "vhost": r"[^\s:]+", "host_header": r"\S+", "port": r"\d+|-", "method": r"[^\s\"]+",
}


# the groups `parse_fields` reads after the size (`_duration` reads both duration forms)
_EXTRA_FIELDS = frozenset({"vhost", "host_header", "bytes_in", "bytes_out", "duration_us",
                           "duration_s"})


class FormatError(ValueError):
    """A LogFormat / log_format string we cannot compile."""


@dataclass(frozen=True, slots=True)
class AccessFormat:
    """A compiled access-log format: regex, the named time field and how to read it."""

    name: str
    pattern: re.Pattern[str]
    prefix: re.Pattern[str] | None  # matches lines whose trailing fields were cut off
    time_kind: str  # "clf" | "iso" | "custom" | "epoch" | "none"
    time_parser: object = None
    fields: frozenset[str] = frozenset()
    request_after_time: bool = False  # `[time] "request` as in common/combined
    # What the size field counts: "body" (%b, $body_bytes_sent), "total" (only %O or
    # $bytes_sent: headers and tunnelled bytes included), "none" (no size field), or "guess"
    # for the stock nicknames: Debian's `combined` and `common` log %O where upstream logs %b.
    sizes: str = "body"
    extras: bool = True  # has a field past the size (vhost, Host, bytes, duration)

    @property
    def fast_ok(self) -> bool:
        """True when the bytes-level fast path can scan it: `[%t] "%r"`, no Host field."""
        return self.time_kind == "clf" and self.request_after_time and \
            "host_header" not in self.fields

    def parse(self, line: str) -> AccessRecord | None:
        """The record of one line, or None when the line does not have this format."""
        f = self.parse_fields(line)
        return None if f is None else AccessRecord(*f, size_unit=self.sizes)

    def parse_fields(self, line: str) -> RecordFields | None:
        """`parse` without building the record: its fields in `AccessRecord`'s order, plain
        values a worker process hands back cheaply (see `fastpath.scan_chunk`)."""
        m = self.pattern.match(line)
        if m is None and self.prefix is not None:
            m = self.prefix.match(line)
        if m is None:
            return None
        g = m.groupdict()
        kind = self.time_kind
        if kind == "clf":
            t = parse_clf_time(g["time"])
            if t is None:
                return None
        elif kind == "iso":
            t = parse_iso_time(g["time"])
        elif kind in ("custom", "epoch"):
            t = self.time_parser(g["time"])  # type: ignore[operator]
        else:
            t = None
        req = g.get("request")
        if req is not None:
            parts = req.split(" ", 2)
            method = parts[0]
            target = parts[1] if len(parts) > 1 else ""
        else:
            method = g.get("method") or ""
            target = (g.get("path") or "") + (g.get("query") or "")
        status = g.get("status")
        size = g.get("size")
        head = (t, g.get("client") or "-", method, target,
                ascii_int(status), ascii_int(size))
        if not self.extras:  # common, combined: nothing more to look up
            return (*head, None, None, None, None, None)
        return (*head, g.get("vhost"), _dash_none(g.get("host_header")),
                ascii_int(g.get("bytes_in")), ascii_int(g.get("bytes_out")), _duration(g))


def _dash_none(text: str | None) -> str | None:
    return None if text in (None, "", "-") else text


def _duration(g: dict[str, str | None]) -> int | None:
    micros = ascii_int(g.get("duration_us"))
    if micros is not None:
        return micros
    text = g.get("duration_s")
    if text:
        try:
            return int(float(text) * 1e6)
        except ValueError:
            return None
    return None


class _Builder:
    """Accumulates regex pieces; the first occurrence of a field gets the named group."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.names: set[str] = set()
        self.time_kind = "none"
        self.time_parser: object = None
        self.core_end: int | None = None  # index after which fields are optional-on-cut
        self.request_after_time = False

    def literal(self, text: str) -> None:
        self.parts.append(re.escape(text).replace("\\ ", " "))

    def field(self, name: str | None, regex: str) -> None:
        if name is None or name in self.names:
            self.parts.append(f"(?:{regex})")
        else:
            self.names.add(name)
            self.parts.append(f"(?P<{name}>{regex})")
        if name in ("status", "size", "bytes_out") and "request" in self.names:
            self.core_end = len(self.parts)

    def quoted(self, prev: str) -> bool:
        return prev.endswith('"')

    def build(self, name: str) -> AccessFormat:
        if not self.parts:
            raise FormatError("empty format")
        if not self.names:
            raise FormatError("the format has no field relayguard reads (%r, %h, %t, %>s … "
                              "or $request, $remote_addr …)")
        body = "".join(self.parts)
        try:
            pattern = re.compile(body + r"\s*$")
            prefix = None
            if self.core_end is not None and self.core_end < len(self.parts):
                prefix = re.compile("".join(self.parts[: self.core_end]) + r"(?:\s|$)")
        except re.error as exc:
            raise FormatError(f"cannot compile format: {exc}") from None
        sizes = "body" if "size" in self.names else (
            "total" if "bytes_out" in self.names else "none")
        return AccessFormat(name, pattern, prefix, self.time_kind, self.time_parser,
                            frozenset(self.names), self.request_after_time, sizes,
                            bool(self.names & _EXTRA_FIELDS))


_APACHE_TOKEN = re.compile(
    r"%(?:[<>]?)(?:!?[\d,]+)?(?:\{(?P<arg>[^}]*)\})?(?:[<>]?)(?P<code>[a-zA-Z%])")


def compile_apache(fmt: str, name: str = "apache") -> AccessFormat:
    """Compile an Apache `LogFormat` string (mod_log_config directives) to an `AccessFormat`."""
    b = _Builder()
    pos = 0
    text = fmt
    for m in _APACHE_TOKEN.finditer(text):
        lit = text[pos:m.start()]
        if lit:
            b.literal(lit.replace('\\"', '"'))
        prev = text[:m.start()]
        quoted = b.quoted(prev)
        code, arg = m.group("code"), m.group("arg")
        pos = m.end()
        if code == "%":
            b.literal("%")
        elif code in "ha":
            b.field("client", _QUOTED if quoted else r"\S+")
        elif code == "t":
            if arg is None:  # Apache's %t brings its own brackets
                b.literal("[")
                b.field("time", r"[^\]]+")
                b.literal("]")
                b.time_kind = "clf"
            else:
                b.field("time", _QUOTED if quoted else r".+?")
                b.time_kind = "custom"
                b.time_parser = _strftime_to_parser(arg)
        elif code == "r":
            b.request_after_time = prev.endswith('%t "') and "request" not in b.names
            b.field("request", r".*?" if quoted else r"\S+ \S+(?: \S+)?")
        elif code == "s":
            b.field("status", _FIELD_RE["status"])
        elif code in "bB":
            b.field("size", _FIELD_RE["size"])
        elif code == "O":
            b.field("bytes_out", _FIELD_RE["bytes_out"])
        elif code == "I":
            b.field("bytes_in", _FIELD_RE["bytes_in"])
        elif code == "D":
            b.field("duration_us", _FIELD_RE["duration_us"])
        elif code == "T":
            if arg == "us":
                b.field("duration_us", r"\d+")
            elif arg == "ms":
                b.field(None, r"\d+")
            else:
                b.field("duration_s", r"\d+")
        elif code == "v":
            b.field("vhost", _QUOTED if quoted else r"[^\s:]+")
        elif code == "V":
            b.field(None, _QUOTED if quoted else r"\S+")
        elif code == "m":
            b.field("method", _FIELD_RE["method"])
        elif code == "U":
            b.field("path", r"\S*")
        elif code == "q":
            b.field("query", r"\S*")
        elif code == "i" and arg and arg.lower() == "host":
            b.field("host_header", _QUOTED if quoted else r"\S+")
        else:  # every other directive: skip its value
            b.field(None, _QUOTED if quoted else r"\S*")
    if text[pos:]:
        b.literal(text[pos:].replace('\\"', '"'))
    return b.build(name)


_NGINX_VAR = re.compile(r"\$(\{)?(?P<var>[a-z0-9_]+)(?(1)\})")
_NGINX_FIELDS = {
    "remote_addr": ("client", r"\S+"), "binary_remote_addr": (None, r"\S+"),
    "status": ("status", r"\d{3}|-"), "body_bytes_sent": ("size", r"\d+|-"),
    "bytes_sent": ("bytes_out", r"\d+|-"), "request_length": ("bytes_in", r"\d+|-"),
    "request_time": ("duration_s", r"\d+(?:\.\d+)?"), "host": ("host_header", r"\S+"),
    "http_host": ("host_header", r"\S+"), "server_name": ("vhost", r"\S+"),
    "request_method": ("method", r"[^\s\"]+"),
}


def compile_nginx(fmt: str, name: str = "nginx") -> AccessFormat:
    """Compile an nginx `log_format` string (`$remote_addr - $remote_user [$time_local] …`)."""
    b = _Builder()
    pos = 0
    for m in _NGINX_VAR.finditer(fmt):
        lit = fmt[pos:m.start()]
        if lit:
            b.literal(lit)
        var = m.group("var")
        quoted = fmt[:m.start()].endswith('"')
        pos = m.end()
        if var == "time_local":
            b.field("time", r"[^\]]+")
            b.time_kind = "clf"
        elif var == "time_iso8601":
            b.field("time", r"\S+")
            b.time_kind = "iso"
        elif var == "msec":
            b.field("time", r"\d+(?:\.\d+)?")
            b.time_kind = "epoch"
            b.time_parser = float
        elif var == "request":
            b.request_after_time = fmt[:m.start()].endswith('[$time_local] "') and \
                "request" not in b.names
            b.field("request", r".*?" if quoted else r"\S+ \S+(?: \S+)?")
        elif var in _NGINX_FIELDS:
            fname, regex = _NGINX_FIELDS[var]
            b.field(fname, _QUOTED if quoted else regex)
        elif var == "request_uri":
            b.field("path", r"\S*")
        else:
            b.field(None, _QUOTED if quoted else r"\S*")
    if fmt[pos:]:
        b.literal(fmt[pos:])
    return b.build(name)


# --------------------------------------------------------------------------------------------
# Squid native access.log

_SQUID = re.compile(
    r"^(?P<time>\d{9,11}(?:\.\d+)?)\s+(?P<elapsed>-?\d+) (?P<client>\S+) "
    r"(?P<code>[A-Z_]+)/(?P<status>\d{3}) (?P<size>\d+) (?P<method>\S+) (?P<url>\S+)"
    r"(?: (?P<user>\S+) (?P<hier>\S+)(?: (?P<ctype>\S+))?)?\s*$")


class SquidFormat:
    """Squid's native access.log (`logformat squid`): every line is a proxy request."""

    name = "squid"
    fast_ok = False
    fields = frozenset({"client", "time", "status", "size", "request"})

    def parse(self, line: str) -> AccessRecord | None:
        m = _SQUID.match(line)
        if m is None:
            return None
        return AccessRecord(
            time=float(m["time"]), client=m["client"], method=m["method"], target=m["url"],
            status=int(m["status"]), size=int(m["size"]),
            duration_us=int(m["elapsed"]) * 1000 if is_digits(m["elapsed"].lstrip("-")) else None,
            proxy_log=True, hier=m["hier"] or m["code"], size_unit="total",
        )


# --------------------------------------------------------------------------------------------
# syslog (Postfix, Exim) and Exim's own mainlog

_SYSLOG_CLASSIC = re.compile(
    r"^(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
    r"(?:\.\d+)? (?P<host>\S+) (?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<msg>.*)$")
_SYSLOG_RFC3339 = re.compile(
    r"^(?P<iso>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?) "
    r"(?P<host>\S+) (?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<msg>.*)$")
_EXIM_MAIN = re.compile(
    r"^(?P<iso>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)(?: (?P<tz>[+-]\d{4}))?"
    r"(?: \[(?P<pid>\d+)\])? (?P<msg>.*)$")


HALF_YEAR = 6 * 31  # in YearGuesser's month * 31 + day


class YearGuesser:
    """Years for `Mon DD HH:MM:SS` stamps: a reference date, then forward through the file.

    The first stamp gets the reference year (the file's mtime or `--year`), moved one year
    back if that would put it in the future; each later stamp takes the year that puts it
    nearest the stamp before it: more than half a year back is the next year (Dec -> Jan),
    more than half a year ahead the year before (a late December line after midnight). A
    clock set back for a moment (1 January at a boot without a real-time clock) is then
    that year's January, and the lines after it keep their year.
    """

    def __init__(self, reference: float | None = None, year: int | None = None,
                 tz: tzinfo | None = None) -> None:
        self.reference = reference
        self.year: int | None = year
        self.last_day = 0  # month * 31 + day of the stamp before
        self.clock = LocalTime(tz)

    def _first_year(self, month: int, day: int, h: int, m: int, s: int) -> int:
        """The latest year that puts the stamp, in the log's own zone, no later than a day
        after the reference: the file was written after its lines. Compared as instants,
        not UTC dates: east of UTC, New Year's morning is still 31 December in UTC."""
        ref = self.reference if self.reference is not None else time.time()
        year = datetime.fromtimestamp(ref, UTC).year + 1
        for y in (year, year - 1, year - 2, year - 3, year - 4):  # 29 Feb: back to a leap year
            t = self.clock.epoch(y, month, day, h, m, s)
            if t is not None and t <= ref + 86400:
                return y
        return year - 1

    def epoch(self, month: int, day: int, h: int, m: int, s: int) -> float | None:
        if not (1 <= day <= 31 and h < 24 and m < 60 and s < 61):
            return None  # before the year moves: a broken stamp says nothing about it
        if self.year is None:
            self.year = self._first_year(month, day, h, m, s)
        day_of_year = month * 31 + day
        if self.last_day:
            step = day_of_year - self.last_day
            if step < -HALF_YEAR:
                self.year += 1
            elif step > HALF_YEAR:
                self.year -= 1
        self.last_day = day_of_year
        try:
            datetime(self.year, month, day)
        except ValueError:
            return None
        return self.clock.epoch(self.year, month, day, h, m, s)


def parse_syslog(line: str, years: YearGuesser) -> SyslogLine | None:
    """A classic, RFC 3339, `maillog_file` or Exim-mainlog line, else None."""
    m = _SYSLOG_CLASSIC.match(line)
    if m is not None:
        month = MONTHS.get(m["mon"])
        if month is None:
            return None
        t = years.epoch(month, int(m["day"]), int(m["h"]), int(m["m"]), int(m["s"]))
        if t is None:
            return None
        return SyslogLine(t, m["host"], m["prog"], int(m["pid"]) if m["pid"] else None, m["msg"])
    m = _SYSLOG_RFC3339.match(line)
    if m is not None:
        t = parse_iso_time(m["iso"], years.clock)
        if t is None:
            return None
        return SyslogLine(t, m["host"], m["prog"], int(m["pid"]) if m["pid"] else None, m["msg"])
    m = _EXIM_MAIN.match(line)
    if m is not None:
        stamp = m["iso"] + ((m["tz"][:3] + ":" + m["tz"][3:]) if m["tz"] else "")
        t = parse_iso_time(stamp, years.clock)
        if t is None:
            return None
        return SyslogLine(t, "-", "exim", int(m["pid"]) if m["pid"] else None, m["msg"])
    return None


# --------------------------------------------------------------------------------------------
# detection

@dataclass(frozen=True, slots=True)
class Detected:
    """What a file holds: `access` (with its format) or `mail`."""

    kind: str  # "access" | "mail" | "skip" (recognised, nothing to analyse) | "error"
    name: str
    access: AccessFormat | SquidFormat | None = None


def candidate_formats() -> list[AccessFormat | SquidFormat]:
    """The formats tried on a file, most specific first."""
    return [stock_format("vhost_combined"), stock_format("combined"), stock_format("common"),
            SquidFormat()]


def stock_format(name: str) -> AccessFormat:
    """A stock nickname compiled; its size unit is a guess where distributions differ."""
    fmt = compile_apache(APACHE_FORMATS[name], name)
    return replace(fmt, sizes="guess") if fmt.sizes == "body" else fmt


_APACHE_ERROR = re.compile(r"^\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)? \d{4}\] \[")
# nginx's error_log: `2026/03/01 10:00:00 [error] 1234#1234: *1 …`
_NGINX_ERROR = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[[a-z]+\] \d+#\d+: ")


SNIFF_BYTES = 64 * 1024  # what format detection reads first
SNIFF_LIMIT = 16 * 1024 * 1024  # … and at most, when that holds no line to judge by
SNIFF_MIN_LINES = 5  # usable lines that settle a format (`watch` waits for this many, or
# a few seconds, before it calls a file's format unknown)


def sniff_lines(data: bytes, complete: bool) -> list[str]:
    """The lines of a file's first bytes that format detection can judge: the last one is
    dropped unless `complete` (the read may have cut it), NULs leading a line are stripped
    (copytruncate under a writer without O_APPEND leaves a hole of NULs before the first
    new line), and lines still holding a NUL (binary junk), longer than MAX_LINE or empty
    are left out."""
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    if not complete and len(lines) > 1:
        lines = lines[:-1]
    out = []
    for line in lines:
        line = line.lstrip("\0")
        if line.strip() and "\0" not in line and len(line) <= MAX_LINE:
            out.append(line)
    return out


def detect_format(sample: Iterable[str]) -> Detected | None:
    """Pick the format that parses most of the sample lines (ties go to the more specific).

    An Apache or nginx error log is recognised as such (kind "skip"): it names no relayed
    request, and `logs /var/log/nginx/*` must not fail on it.
    """
    lines = [s for s in sample if s.strip()][:200]
    if not lines:
        return None
    if sum(1 for s in lines if _APACHE_ERROR.match(s)) * 2 > len(lines):
        return Detected("skip", "apache-error")
    if sum(1 for s in lines if _NGINX_ERROR.match(s)) * 2 > len(lines):
        return Detected("skip", "nginx-error")
    years = YearGuesser(year=2000)
    mail = sum(1 for s in lines if parse_syslog(s, years) is not None)
    best: tuple[int, AccessFormat | SquidFormat] | None = None
    for fmt in candidate_formats():
        hits = sum(1 for s in lines if fmt.pattern.match(s)) if isinstance(fmt, AccessFormat) \
            else sum(1 for s in lines if fmt.parse(s) is not None)
        if isinstance(fmt, AccessFormat) and fmt.prefix is not None:
            hits = max(hits, sum(1 for s in lines if fmt.prefix.match(s)) - 1)
        if best is None or hits > best[0]:
            best = (hits, fmt)
    if mail >= (best[0] if best else 0) and mail > 0:
        return Detected("mail", "syslog")
    if best is not None and best[0] > 0:
        return Detected("access", best[1].name, best[1])
    return None


def format_by_name(spec: str) -> AccessFormat | SquidFormat:
    """`--log-format`: a stock name (combined, common, vhost_combined, nginx, squid) or a
    LogFormat string (with `%`) or an nginx log_format string (with `$`)."""
    if spec in APACHE_FORMATS:
        return stock_format(spec)
    if spec in ("nginx", "nginx_combined"):
        return compile_nginx(NGINX_COMBINED, "nginx")
    if spec == "squid":
        return SquidFormat()
    if "%" in spec:
        return compile_apache(spec, "custom")
    if "$" in spec:
        return compile_nginx(spec, "custom-nginx")
    raise FormatError(f"unknown log format {spec!r}")

