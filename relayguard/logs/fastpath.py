"""The bytes-level fast path for access logs with `[%t]` and a quoted `%r` (common, combined…).

Almost every line of a web log is ordinary traffic, so it is never decoded or parsed: a chunk
of bytes yields its line count, its per-minute request counts and the few candidate lines
(CONNECT or absolute-URI requests) that the ordinary parser and `ProxyDetector` then see.
The one-pass C scanner (`relayguard/_fastscan.c`, built at install time where a compiler is
found) reads each line's stamp; without it the standard library does the same in three passes
(the minutes by walking the distinct minute stamps and counting each with `bytes.count`,
falling back to a per-line regex when the chunk is out of order, has malformed lines or holds a
few lines a minute). Plain files are split into chunks at line boundaries and scanned on all
cores; compressed streams are scanned in-process."""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from relayguard.logs import sources
from relayguard.logs.formats import (
    APACHE_FORMATS,
    NGINX_COMBINED,
    AccessFormat,
    RecordFields,
    compile_apache,
    compile_nginx,
    parse_clf_time,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

try:  # the one-pass C scanner, built at install time where a C compiler is found
    from relayguard import _fastscan
except ImportError:  # none: the pure-Python scan, same results, slower
    _fastscan = None

CHUNK_BYTES = 8 * 1024 * 1024
PARALLEL_MIN_BYTES = 32 * 1024 * 1024

_TS = re.compile(rb"\[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d):\d\d ([+-]\d{4})\]")
# a line's stamp: the first `[` of the line opens it. The next lines' stamps are found after
# their newline (a literal to scan for, where `^` with re.M tests every position: 2.5x slower)
_STAMP_FIRST = rb"[^\n\[]*\[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d):\d\d ([+-]\d{4})\]"
_TS_LINE = re.compile(_STAMP_FIRST)
_TS_NEXT_LINE = re.compile(rb"\n" + _STAMP_FIRST)
# the request right after the time stamp, with a target that is not origin-form (`/…`, `*`):
# CONNECT authorities and absolute URIs (and some junk the parser then drops)
_CANDIDATE = re.compile(rb'\] "[^ "\n]{1,24}+ [^/* \n]')  # possessive: a quarter faster
_SIZE_304 = re.compile(rb'" 304 (-|0 )?')  # a 304 logged without a size, or with one
_ABS_PATH = re.compile(rb'\] "[^ "]{1,24} [a-zA-Z][a-zA-Z0-9+.-]{0,15}://[^/\s"]*(/[^\s"]*)')
MAX_CANDIDATE_LINE = 64 * 1024
MAX_UNPARSED_SAMPLES = 5
MAX_OVERLONG_SAMPLES = 3
OWN_SIZES_PER_PATH = 8  # sizes of the site's own page per path and chunk (`_local_sizes`)
EVIDENCE_BYTES = 1 << 20
_NULS = re.compile(rb"\0*")
# candidates a chunk's scanner parses itself (`scan_chunk(fmt=...)`): beyond it the fields
# would double the memory of a result that is dense with proxy requests, whose feeding, not
# parsing, is then the bottleneck, so the detectors' process parses them as it goes
MAX_PARSED_HERE = 4096


@dataclass
class ChunkResult:
    """What one chunk of bytes contributes: counts, minute histogram, candidate lines."""

    lines: int = 0
    unparsed: int = 0
    unparsed_samples: list[tuple[int, bytes]] = field(default_factory=list)
    minutes: dict[int, int] = field(default_factory=dict)  # epoch minute -> requests
    candidates: list[tuple[int, bytes]] = field(default_factory=list)  # (line in chunk, line)
    # the candidates parsed where the chunk was scanned (a worker process), one entry each,
    # with the pattern that parsed them: the records are built from them, not parsed again
    fields: list[RecordFields | None] | None = None
    fields_pattern: str | None = None
    local_sizes: list[tuple[str, int]] = field(default_factory=list)  # (path, size) 2xx GETs
    # 304 answers logged with no size (%b: "-" or 0) and with one (%O counts headers)
    sizes_304: tuple[int, int] = (0, 0)
    overlong: int = 0  # lines longer than sources.MAX_LINE, as the line-by-line path counts
    overlong_samples: list[tuple[int, bytes]] = field(default_factory=list)

    def extend(self, other: ChunkResult) -> ChunkResult:
        """Append the result of the chunk that follows this one (line numbers shifted)."""
        base = self.lines
        self.lines += other.lines
        self.unparsed += other.unparsed
        for t, n in other.minutes.items():
            self.minutes[t] = self.minutes.get(t, 0) + n
        self.candidates += [(base + i, line) for i, line in other.candidates]
        if self.fields is not None and other.fields is not None and \
                self.fields_pattern == other.fields_pattern:
            self.fields += other.fields
        else:
            self.fields = self.fields_pattern = None
        self.local_sizes += other.local_sizes
        self.unparsed_samples += [(base + i, t) for i, t in other.unparsed_samples][
            :MAX_UNPARSED_SAMPLES - len(self.unparsed_samples)]
        self.sizes_304 = (self.sizes_304[0] + other.sizes_304[0],
                          self.sizes_304[1] + other.sizes_304[1])
        self.overlong += other.overlong
        self.overlong_samples += [(base + i, t) for i, t in other.overlong_samples][
            :MAX_OVERLONG_SAMPLES - len(self.overlong_samples)]
        return self


_DAY_EPOCH: dict[bytes, int | None] = {}


def _key_epoch(stamp: bytes, tz: bytes) -> int | None:
    """Epoch of the minute `dd/Mon/yyyy:HH:MM` in zone `tz`, as `parse_clf_time` reads it: the
    day is parsed once (cached), hour and minute are added (a chunk holds hundreds of minutes
    and few days)."""
    hour, minute = int(stamp[12:14]), int(stamp[15:17])
    if hour > 23 or minute > 59:
        return None
    day = stamp[:11] + tz
    base = _DAY_EPOCH.get(day, -1)
    if base == -1:
        t = parse_clf_time(stamp[:11].decode("ascii") + ":00:00:00 " + tz.decode("ascii"))
        if len(_DAY_EPOCH) > 4096:
            _DAY_EPOCH.clear()
        base = _DAY_EPOCH[day] = int(t) if t is not None else None
    return None if base is None else base + hour * 3600 + minute * 60


def _minutes_walk(data: bytes, nlines: int) -> dict[int, int] | None:
    """Per-minute counts by walking distinct stamps; None when the chunk needs the slow way.

    For each minute stamp K (as `[dd/Mon/yyyy:HH:MM`) the end of its run of lines is found by
    probing lines just past and just short of where the previous minute's run length puts it
    (galloping on when the run is longer, bisecting between), and its lines are counted with
    one `bytes.count(K)` over the run. If the minutes are not in order (or some line has no
    stamp) the counts do not add up to the line count and the caller counts per line; so it
    does when minutes hold a few lines each, where the walk costs more per line.
    """
    counts: dict[bytes, tuple[int, bytes]] = {}
    n, total = len(data), 0
    search, count, find = _TS.search, data.count, data.find

    def line_at(pos: int) -> int:
        """Start of the first line that starts after `pos` (n if none)."""
        ls = find(b"\n", pos) + 1
        return ls if 0 < ls < n else n

    def key_at(ls: int) -> bytes | None:
        end = find(b"\n", ls)
        m = search(data, ls, end if end >= 0 else n)
        return data[m.start(): m.start() + 18] if m is not None else None

    pos, run = 0, 4096
    while pos < n:
        m = search(data, pos)
        if m is None:
            break
        key = data[m.start(): m.start() + 18]  # b"[dd/Mon/yyyy:HH:MM"
        if key in counts:
            return None  # minutes out of order: count per line instead
        first = data.rfind(b"\n", 0, m.start()) + 1
        # lo always starts a line with `key`; hi is n or starts a line with another key
        lo, hi = first, n
        guess = first + run + (run >> 3)  # just past the expected end of the run
        ls = line_at(guess)
        if ls < hi and key_at(ls) == key:  # a longer run than the last one: gallop on
            lo, step = ls, max(1024, run >> 2)
            while True:
                ls = line_at(lo + step)
                if ls >= hi:
                    break
                if key_at(ls) != key:
                    hi = ls
                    break
                lo, step = ls, step * 2
        elif ls < hi:
            hi = ls
            ls = line_at(max(first, guess - (run >> 2)))  # just short of the expected end
            if lo < ls < hi:
                if key_at(ls) == key:
                    lo = ls
                else:
                    hi = ls
        while hi - lo > 4096:  # bisect down to a few lines
            ls = line_at((lo + hi) // 2)
            if ls <= lo or ls >= hi:
                break
            if key_at(ls) == key:
                lo = ls
            else:
                hi = ls
        last = data.rfind(key, lo, hi)  # the run's last line, then the line after it
        ls = find(b"\n", last) + 1 if last >= 0 else hi
        if ls <= 0:
            ls = n
        run = max(1024, ls - first)
        c = count(key, first, ls)
        counts[key] = (c, m.group(2))
        total += c
        pos = ls
        if total < 16 * len(counts) and len(counts) >= 32:
            return None  # a few lines a minute: reading each stamp is cheaper than the walk
    if total != nlines:
        return None
    out: dict[int, int] = {}
    for key, (c, tz) in counts.items():
        t = _key_epoch(key[1:], tz)
        if t is None:
            return None
        out[t] = out.get(t, 0) + c
    return out


def _minutes_per_line(data: bytes, nlines: int, res: ChunkResult) -> None:
    """Exact per-line stamps; lines without one are counted and sampled as unparsed."""
    out: dict[int, int] = {}
    matched = 0
    stamps = _TS_NEXT_LINE.findall(data)
    first = _TS_LINE.match(data)
    if first is not None:
        stamps.append(first.groups())
    for (stamp, tz), c in Counter(stamps).items():  # counted in C
        t = _key_epoch(stamp, tz)
        if t is not None:
            matched += c
            out[t] = out.get(t, 0) + c
    res.minutes = out
    res.unparsed = nlines - matched
    if res.unparsed:
        for i, line in enumerate(data.split(b"\n")[:nlines], 1):
            m = _TS_LINE.match(line)
            if m is None or _key_epoch(m.group(1), m.group(2)) is None:
                res.unparsed_samples.append((i, line[:200]))
                if len(res.unparsed_samples) >= MAX_UNPARSED_SAMPLES:
                    break


def scan_chunk(data: bytes | memoryview, nlines: int | None = None,
               fmt: AccessFormat | None = None) -> ChunkResult:
    """Scan whole lines of one chunk (it ends at a newline, or at the end of the input);
    `nlines`, when the caller has counted them already (`watch`), spares the pure-Python scan
    a pass. With `fmt`, the candidate lines are parsed here too: a worker process that scans
    a chunk so takes the parsing off the process that runs the detectors. `data` may be a
    memoryview (a scan worker's slot), which the C scanner reads in place."""
    if _fastscan is None and not isinstance(data, bytes):
        data = data.tobytes()
    res = ChunkResult()
    # size-unit evidence from the chunk's first MiB: plenty of 304s where there are any, and
    # whole-chunk counts would cost a tenth of the scan
    window = _evidence_end(data)
    longest = None
    if _fastscan is not None:
        longest = _scan_compiled(data, window, res)
    else:
        _scan_python(data, nlines, window, res)  # type: ignore[arg-type]
    if res.candidates:
        _local_sizes(data, window, _abs_paths(res.candidates), res)
    if longest is None or longest > sources.MAX_LINE:  # (the C scan knows the longest line)
        _overlong_lines(data if isinstance(data, bytes) else data.tobytes(), res)
    if fmt is not None and len(res.candidates) <= MAX_PARSED_HERE:
        res.fields = parse_candidates(fmt, res.candidates)
        res.fields_pattern = fmt.pattern.pattern
    return res


def parse_candidates(fmt: AccessFormat, candidates: list[tuple[int, bytes]]
                     ) -> list[RecordFields | None]:
    """`fmt.parse_fields` of each candidate line: in C for the stock common, combined,
    vhost_combined and nginx formats (`_fastscan.parse_stock`, ~0.6 µs a line where the
    regex and the field conversions cost 3-6), which sends lines that are not ASCII back to
    the regex."""
    def parse(raw: bytes) -> RecordFields | None:
        return fmt.parse_fields(raw.decode("utf-8", "surrogateescape"))

    kind = _stock_kind(fmt) if _fastscan is not None else None
    if kind is None:
        return [parse(raw) for _, raw in candidates]
    assert _fastscan is not None
    return _fastscan.parse_stock(  # type: ignore[no-any-return]
        candidates, kind, parse_clf_time, parse)


_STOCK_KINDS: dict[tuple[str, str | None], int] = {}


def _stock_kind(fmt: AccessFormat) -> int | None:
    """`parse_stock`'s number for a format whose regexes are a stock format's, else None."""
    if not _STOCK_KINDS:
        for kind, stock in enumerate((compile_apache(APACHE_FORMATS["common"]),
                                      compile_apache(APACHE_FORMATS["combined"]),
                                      compile_nginx(NGINX_COMBINED),
                                      compile_apache(APACHE_FORMATS["vhost_combined"]))):
            _STOCK_KINDS[_regexes(stock)] = kind
    return _STOCK_KINDS.get(_regexes(fmt))


def _regexes(fmt: AccessFormat) -> tuple[str, str | None]:
    return fmt.pattern.pattern, fmt.prefix.pattern if fmt.prefix is not None else None


def count_newlines(data: bytes | memoryview) -> int:
    """`data.count(b"\\n")`, 4x faster where the C scanner is built: `watch` counts the lines
    of every block it reads (a memoryview when read into a worker's slot)."""
    if _fastscan is not None:
        return _fastscan.newlines(data)  # type: ignore[no-any-return]
    return (data if isinstance(data, bytes) else data.tobytes()).count(b"\n")


def _scan_compiled(data: bytes | memoryview, window: int, res: ChunkResult) -> int:
    """Lines, candidates and minutes in one pass of the C scanner (`_fastscan.c`), which gives
    what `_scan_python` gives with `_minutes_per_line`'s exact per-line stamps; the 304
    evidence up to `window` in another. Returns the longest line's length."""
    assert _fastscan is not None
    res.sizes_304 = _fastscan.sizes_304(data, window)
    res.lines, res.candidates, keys, stampless, samples, longest = _fastscan.scan(
        data, MAX_CANDIDATE_LINE, MAX_UNPARSED_SAMPLES)
    minutes: dict[int, int] = {}
    for key, c in keys.items():
        t = _key_epoch(key[:17], key[17:])
        if t is None:  # a stamp of the right shape but no real date: samples in line order
            _minutes_per_line(data if isinstance(data, bytes) else data.tobytes(), res.lines,
                              res)
            return longest  # type: ignore[no-any-return]
        minutes[t] = minutes.get(t, 0) + c
    res.minutes, res.unparsed, res.unparsed_samples = minutes, stampless, samples
    return longest  # type: ignore[no-any-return]


def _scan_python(data: bytes, nlines: int | None, window: int, res: ChunkResult) -> None:
    """Lines, candidates and minutes in three C-level passes of the standard library: the
    candidate regex, the newlines (counted between candidates, then to the end: the line
    numbers and the line count come from one pass) and the minute walk; the 304 evidence up
    to `window` with a regex."""
    sizes = _SIZE_304.findall(data, 0, window)
    empty = len(sizes) - sizes.count(b"")
    res.sizes_304 = (empty, len(sizes) - empty)
    last_start, line_no, counted_to = -1, 1, 0
    for m in _CANDIDATE.finditer(data):
        start = data.rfind(b"\n", 0, m.start()) + 1
        if start == last_start:
            continue
        last_start = start
        end = data.find(b"\n", m.start())
        if end < 0:
            end = len(data)
        line_no += data.count(b"\n", counted_to, start)
        counted_to = start
        res.candidates.append((line_no, data[start:min(end, start + MAX_CANDIDATE_LINE)]))
    if nlines is None:
        nlines = line_no - 1 + data.count(b"\n", counted_to)
        if data and not data.endswith(b"\n"):
            nlines += 1
    res.lines = nlines
    minutes = _minutes_walk(data, nlines)
    if minutes is None:
        _minutes_per_line(data, nlines, res)
    else:
        res.minutes = minutes


def _abs_paths(candidates: list[tuple[int, bytes]]) -> set[bytes]:
    """The paths (16 at most) that absolute-URI candidates ask for: their own-page sizes are
    the evidence that such a request was answered locally, not relayed."""
    paths: set[bytes] = set()
    for _, line in candidates:
        if b"://" not in line:  # a CONNECT: no regex search over it (~20x the cost)
            continue
        pm = _ABS_PATH.search(line)
        if pm is not None:
            paths.add(pm.group(1))
            if len(paths) >= 16:
                break
    return paths


def _overlong_lines(data: bytes, res: ChunkResult) -> None:
    """Count lines longer than MAX_LINE without walking every line: such a line holds a whole
    aligned window of MAX_LINE / 2 bytes with no newline, so only those windows are looked at
    (a few hundred `find`s per chunk)."""
    limit = sources.MAX_LINE
    step = max(1, limit // 2)
    n = len(data)
    pos = 0
    while pos + step <= n:
        if data.find(b"\n", pos, pos + step) >= 0:
            pos += step
            continue
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos)
        end = n if end < 0 else end
        if end - start > limit:
            res.overlong += 1
            if len(res.overlong_samples) < MAX_OVERLONG_SAMPLES:
                res.overlong_samples.append((data.count(b"\n", 0, start) + 1,
                                             data[start:start + 200]))
        pos = (end // step + 1) * step


def _evidence_end(data: bytes | memoryview) -> int:
    """End of the chunk's first MiB, at a line end (a line cut there would give a cut size);
    a run of NULs the chunk starts with (a copytruncate hole) does not count towards it."""
    start = _NULS.match(data).end() if data[:1] == b"\0" else 0  # type: ignore[union-attr]
    if len(data) - start <= EVIDENCE_BYTES:
        return len(data)
    pos = start + EVIDENCE_BYTES
    if isinstance(data, bytes):
        end = data.find(b"\n", pos)
    else:  # a memoryview has no find: its next 64 KiB (a line), then the rest
        end = data[pos:pos + (1 << 16)].tobytes().find(b"\n")
        if end < 0:
            end = data[pos:].tobytes().find(b"\n")
        end = end if end < 0 else pos + end
    return len(data) if end < 0 else end


def _local_sizes(data: bytes | memoryview, window: int, paths: set[bytes],
                 res: ChunkResult) -> None:
    """Sizes of the site's own pages for `/` and the paths proxy requests asked for
    (OWN_SIZES_PER_PATH each at most, in file order), from the 2xx GETs of those paths in the
    chunk's first MiB (`window`, as for 304s): in C where built (`_fastscan.own_gets`, a
    tenth of the regex's time: every line of a web log starts a `"GET ` the regex must look
    at), else with a regex that matches only those GETs. Stops once every path has its share.
    """
    wanted = sorted({b"/", *paths}, key=len, reverse=True)
    if _fastscan is not None:
        res.local_sizes += _fastscan.own_gets(data, window, wanted, OWN_SIZES_PER_PATH)
        return
    seen = dict.fromkeys(wanted, 0)
    own_get = re.compile(rb'"GET (' + b"|".join(map(re.escape, wanted)) +
                         rb') HTTP/1\.[01]" 2\d\d (\d+)')
    left = len(seen)
    for m in own_get.finditer(data, 0, window):
        p = m.group(1)
        if seen[p] < OWN_SIZES_PER_PATH:
            seen[p] += 1
            res.local_sizes.append((p.decode("utf-8", "surrogateescape"), int(m.group(2))))
            if seen[p] == OWN_SIZES_PER_PATH:
                left -= 1
                if not left:
                    return


class _Range:
    """Reads at most `left` bytes of a file from where it stands."""

    def __init__(self, fh: BinaryIO, left: int) -> None:
        self.fh, self.left = fh, left

    def read(self, n: int = -1) -> bytes:
        want = self.left if n < 0 else min(n, self.left)
        data = self.fh.read(want) if want > 0 else b""
        self.left -= len(data)
        return data


def _scan_range(path: str, start: int, end: int, fmt: AccessFormat | None = None) -> ChunkResult:
    """Worker: scan bytes [start, end) of a plain file (boundaries are line starts), read in
    pieces of at most CHUNK_BYTES with over-long lines cut as they stream by (`iter_chunks`):
    a range that is one 400 MB line costs a chunk's memory, not 400 MB."""
    out: ChunkResult | None = None
    with open(path, "rb") as fh:
        fh.seek(start)
        if end - start <= 2 * CHUNK_BYTES:  # the usual range: one read, no copies
            return scan_chunk(fh.read(end - start), fmt=fmt)
        for chunk in sources.iter_chunks(_Range(fh, end - start), sources.ReadProblems(),
                                         CHUNK_BYTES):
            res = scan_chunk(chunk, fmt=fmt)
            out = res if out is None else out.extend(res)
    return out or ChunkResult()


def line_boundaries(path: str, size: int, chunk: int = CHUNK_BYTES) -> list[tuple[int, int]]:
    """Byte ranges of roughly `chunk` bytes that each start at a line start."""
    cuts = [0]
    with open(path, "rb") as fh:
        pos = chunk
        while pos < size:
            fh.seek(pos)
            probe = pos
            found = -1
            while probe < size:  # a very long line: keep looking (bounded by the file)
                block = fh.read(65536)
                if not block:
                    break
                i = block.find(b"\n")
                if i >= 0:
                    found = probe + i + 1
                    break
                probe += len(block)
            if found < 0 or found >= size:
                break
            cuts.append(found)
            pos = found + chunk
    cuts.append(size)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def scan_plain_file(path: str, jobs: int, fmt: AccessFormat | None = None
                    ) -> Iterator[ChunkResult]:
    """Chunk results in file order. With jobs > 1 on big files, jobs - 1 worker processes
    scan chunks (and parse their candidate lines with `fmt`), at most 2 each in flight, and
    this process scans the next chunk itself whenever the one due is not back yet, one chunk
    ahead at most: it would otherwise only wait, and the workers' start would be time lost."""
    size = os.path.getsize(path)
    ranges = line_boundaries(path, size, CHUNK_BYTES)
    if jobs <= 1 or size < PARALLEL_MIN_BYTES or len(ranges) < 2:
        for a, b in ranges:
            yield _scan_range(path, a, b)
        return
    import multiprocessing  # only here: a small file or one core starts faster without them
    from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor

    workers = jobs - 1
    done = 0  # ranges already yielded
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            # one entry per range in file order: a worker's future, or this process's result
            due: deque[Future[ChunkResult] | ChunkResult] = deque()
            nxt = in_pool = 0
            while done < len(ranges):
                while nxt < len(ranges) and in_pool < 2 * workers:
                    due.append(pool.submit(_scan_range, path, *ranges[nxt], fmt))
                    nxt, in_pool = nxt + 1, in_pool + 1
                head = due[0]
                if not isinstance(head, ChunkResult) and not head.done() and \
                        nxt < len(ranges) and len(due) <= in_pool:
                    # one chunk ahead at most: a log of nothing but proxy requests makes
                    # results of tens of MB, and scanning far ahead would hold many
                    due.append(_scan_range(path, *ranges[nxt]))
                    nxt += 1
                    continue
                due.popleft()
                if not isinstance(head, ChunkResult):
                    in_pool -= 1
                    head = head.result()
                done += 1
                yield head
    except (BrokenProcessPool, OSError, ValueError):
        # no worker processes here (sandbox, resource limits): finish in this process
        for a, b in ranges[done:]:
            yield _scan_range(path, a, b)
