"""The one-pass C scanner (`relayguard/_fastscan.c`) against the pure-Python scan it replaces:
the same lines, candidates, minutes and unparsed samples on fuzzed, hostile and real input."""

from __future__ import annotations

import gzip
import shutil
import sysconfig
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayguard.logs import fastpath, formats, sources
from relayguard.logs.fastpath import EVIDENCE_BYTES, ChunkResult, scan_chunk

REAL_LOGS = Path(__file__).resolve().parents[3] / "shared" / "data" / "real-logs"
needs_compiled = pytest.mark.skipif(fastpath._fastscan is None,
                                    reason="C scanner not built (no compiler at install)")


def test_the_c_scanner_is_built_where_a_compiler_is() -> None:
    """An install on a machine with gcc and the Python headers (CI's) builds the scanner; the
    optional build would otherwise hide a broken C file behind the slow path."""
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if shutil.which(sysconfig.get_config_var("CC") or "cc") is None or not headers.is_file():
        pytest.skip("no C compiler or Python headers here: the pure-Python scan runs")
    assert fastpath._fastscan is not None


def both(data: bytes) -> tuple[ChunkResult, ChunkResult]:
    """The C scanner's result and the Python reference's: the candidate pass and the exact
    per-line stamps (`_minutes_per_line`, which the minute walk only shortcuts)."""
    compiled = ChunkResult()
    window = fastpath._evidence_end(data)
    fastpath._scan_compiled(data, window, compiled)
    ref = ChunkResult()
    fastpath._scan_python(data, None, window, ref)
    ref.minutes, ref.unparsed, ref.unparsed_samples = {}, 0, []
    fastpath._minutes_per_line(data, ref.lines, ref)
    return compiled, ref


def assert_same(data: bytes) -> ChunkResult:
    compiled, ref = both(data)
    assert compiled.lines == ref.lines
    assert compiled.candidates == ref.candidates
    assert compiled.minutes == ref.minutes
    assert compiled.unparsed == ref.unparsed
    assert compiled.unparsed_samples == ref.unparsed_samples
    return compiled


# pieces that sit on the edges of the stamp and candidate patterns
PIECES = [
    "192.0.2.1 - - ", "[", "]", '] "', '"', " ", "\n", "\r", "\t", "\x00", "é", "/", "*",
    "01/Mar/2026:10:00:00 +0000]", "01/Mar/2026:10:01:59 -0130]", "29/Feb/2024:23:59:00 +1400]",
    "31/Feb/2026:10:00:00 +0000]", "01/Foo/2026:10:00:00 +0000]", "01/Mar/2026:24:00:00 +0000]",
    "01/Mar/2026:10:60:00 +0000]", "01/mar/2026:10:00:00 +0000]", "01/Mar/2026:10:00:00 0000]",
    "01/Mar/2026:10:00:00 +0000", "1/Mar/2026:10:00:00 +0000]", "01/Mar/2026:10:00:00 +000]",
    "CONNECT", "GET", "A" * 23, "A" * 24, "A" * 25, "mx.example.net:25", "http://x.example/",
    "/index.html", " HTTP/1.1\" 200 512 \"-\" \"ua\"", "\"CONNECT a:25 HTTP/1.0\" 200 -",
]
chunk_text = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=60)


@needs_compiled
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk_text)
def test_fuzz_compiled_scan_matches_the_python_reference(pieces: list[str]) -> None:
    assert_same("".join(pieces).encode("utf-8", "surrogatepass"))


@needs_compiled
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_compiled_scan_on_raw_bytes(data: bytes) -> None:
    assert_same(data)


@needs_compiled
def test_edges_of_each_pattern() -> None:
    stamp = "[01/Mar/2026:10:00:00 +0000]"
    res = assert_same(
        f'a {stamp} "{"M" * 24} x:25 HTTP/1.0"\n'  # the longest method still a candidate
        f'b {stamp} "{"M" * 25} x:25 HTTP/1.0"\n'  # one more: not
        f'c {stamp} "GET /x HTTP/1.1" 200 1 "-" "x] "Q h"\n'  # found later in the line
        f'd [x] {stamp} "GET http://a/ HTTP/1.1"\n'  # first `[` is not a stamp: unparsed
        f'e {stamp} "GET  x"\n'  # two spaces: the target starts with a space
        f'f {stamp} "GET x'.encode())  # unterminated, cut before the target's end
    assert res.lines == 6
    assert [n for n, _ in res.candidates] == [1, 3, 4, 6]
    assert res.unparsed == 1 and res.unparsed_samples[0][0] == 4
    assert sum(res.minutes.values()) == 5


@needs_compiled
def test_invalid_dates_fall_back_to_exact_samples() -> None:
    """A stamp of the right shape that is no date (31 Feb) is unparsed, sampled in line order
    with the lines that have no stamp at all."""
    res = ChunkResult()
    data = (b'x [31/Feb/2026:10:00:00 +0000] "GET / H"\nnothing\n'
            b'y [01/Mar/2026:10:00:00 +0000] "GET / H"\n')
    fastpath._scan_compiled(data, len(data), res)
    assert res.lines == 3 and res.unparsed == 2
    assert [n for n, _ in res.unparsed_samples] == [1, 2]
    assert sum(res.minutes.values()) == 1


@needs_compiled
def test_huge_line_and_nul_bytes() -> None:
    big = b"x" * (10 * 1024 * 1024)
    data = (b'1 [01/Mar/2026:10:00:00 +0000] "CONNECT ' + big + b':25"\n\x00\x00\n'
            b'2 [01/Mar/2026:10:00:00 +0000] "GET http://a/ H"')
    res = assert_same(data)
    assert res.lines == 3 and [n for n, _ in res.candidates] == [1, 3]
    assert res.unparsed_samples == [(2, b"\x00\x00")]
    assert len(res.candidates[0][1]) <= fastpath.MAX_CANDIDATE_LINE


@needs_compiled
@pytest.mark.skipif(not REAL_LOGS.is_dir(), reason="shared real-logs data set not present")
@pytest.mark.parametrize("name", ["apache-elastic-2015/apache_logs.gz",
                                  "apache-secrepo-2018/access-2018-12-15.log.gz"])
def test_real_logs_scan_the_same_both_ways(name: str, monkeypatch) -> None:
    """Whole `scan_chunk` results (the minute walk included) agree on real third-party logs."""
    data = gzip.decompress((REAL_LOGS / name).read_bytes())
    assert data.count(b"\n") > 1000
    assert_same(data)
    compiled = scan_chunk(data)
    monkeypatch.setattr(fastpath, "_fastscan", None)
    assert scan_chunk(data) == compiled
    assert compiled.lines == data.count(b"\n") and sum(compiled.minutes.values()) > 0


@needs_compiled
def test_buffers_other_than_bytes() -> None:
    """`watch` hands the worker's blocks over as slices of shared memory."""
    data = b'1 [01/Mar/2026:10:00:00 +0000] "CONNECT a:25 H"\n' * 3
    assert fastpath._fastscan.scan(memoryview(bytearray(data)), 100, 5)[:2] == \
        fastpath._fastscan.scan(data, 100, 5)[:2]
    with pytest.raises(TypeError):
        fastpath._fastscan.scan("text", 100, 5)
    with pytest.raises(ValueError):
        fastpath._fastscan.scan(data, -1, 5)


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200), st.integers(0, 300))
def test_fuzz_newline_count_matches_bytes_count(data: bytes, skip: int) -> None:
    """Blocks of 255 bytes and a tail: every length and offset of the vector loop."""
    data = data.replace(b"\x00", b"\n") + b"\n" * (skip % 3)
    assert fastpath.count_newlines(data) == data.count(b"\n")
    assert fastpath.count_newlines(memoryview(data)[skip:]) == data[skip:].count(b"\n")


def test_candidates_parsed_by_the_scanner_feed_as_parsed_here() -> None:
    """Fields parsed where a chunk is scanned (a worker) give the detectors what parsing in
    their own process gives; fields parsed with another pattern are not trusted; chunks
    joined by `extend` keep their fields aligned with their candidates."""
    from relayguard.logs.analyze import LogAnalysis, LogOptions
    from relayguard.logs.formats import APACHE_FORMATS, compile_apache

    combined = compile_apache(APACHE_FORMATS["combined"])
    vhost = compile_apache(APACHE_FORMATS["vhost_combined"])
    lines = "".join(
        f'198.51.100.{i % 7} - - [01/Mar/2026:10:{i % 60:02d}:00 +0000] "{req}" {st} 0 "-" "-"\n'
        for i, (req, st) in enumerate([("CONNECT mx.example.net:25 HTTP/1.0", 200),
                                       ("GET http://x.example/ HTTP/1.1", 200),
                                       ("CONNECT a.example:443 HTTP/1.1", 405),
                                       ("GET / HTTP/1.1", 200)] * 30)).encode()
    half = lines.index(b"\n", len(lines) // 2) + 1

    def incidents(*chunks: ChunkResult) -> list[dict]:
        an = LogAnalysis(LogOptions())
        base = 0
        for res in chunks:
            an.feed_chunk(res, combined, "access.log", base)
            base += res.lines
        return [i.to_dict() for i in an.incidents()]

    here = incidents(scan_chunk(lines))
    assert len(here) == 3
    worker = scan_chunk(lines, fmt=combined)
    assert worker.fields is not None and len(worker.fields) == len(worker.candidates) == 90
    assert incidents(worker) == here
    joined = scan_chunk(lines[:half], fmt=combined).extend(scan_chunk(lines[half:], fmt=combined))
    assert joined.fields == worker.fields and incidents(joined) == here
    worker.fields = [None] * 90  # proof they are used: fields that parsed nothing count nothing
    assert incidents(worker) == []
    other = scan_chunk(lines, fmt=vhost)  # another pattern: its fields are not used
    other.fields = [None] * 90
    assert other.fields_pattern != combined.pattern.pattern and incidents(other) == here
    mixed = scan_chunk(lines[:half], fmt=combined).extend(scan_chunk(lines[half:]))
    assert mixed.fields is None and incidents(mixed) == here


@needs_compiled
@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b'" 304 ', b"-", b"0 ", b"0", b" ", b'"', b"304", b"x",
                                 b'" 304 0', b'" 304 -', b'" 404 ', b"4", b'" 3040', b'"x 304',
                                 b"0123456789abcdef"]), max_size=40).map(b"".join),
       st.integers(0, 600))
def test_fuzz_304_sizes_match_the_regex(data: bytes, end: int) -> None:
    """The 304 size evidence, matches cut by the window's end included (sixteen bytes at a
    time in C: near misses of the needle, several in one block, and blocks cut by the end)."""
    end %= len(data) + 1
    sizes = fastpath._SIZE_304.findall(data, 0, end)
    bare = len(sizes) - sizes.count(b"")
    assert fastpath._fastscan.sizes_304(data, end) == (bare, len(sizes) - bare)


PATHS = [b"/", b"/a", b"/a/b", b"/\xc3\xa9", b"/x"]
get_line = st.builds(
    lambda head, path, version, status, size, tail: b'%s"GET %s HTTP/1.%s" %s %s%s' % (
        head, path, version, status, size, tail),
    st.sampled_from([b"", b"1.2.3.4 - - ", b'"GET ', b"x"]), st.sampled_from([*PATHS, b"/a/"]),
    st.sampled_from([b"0", b"1", b"2"]), st.sampled_from([b"200", b"204", b"304", b"2x0"]),
    st.sampled_from([b"123", b"9" * 25, b"0", b"-", b""]),
    st.sampled_from([b"", b" HTTP", b'"GET / HTTP/1.1" 200 5', b"\n"]))


@needs_compiled
@settings(max_examples=600, deadline=None)
@given(st.lists(get_line, max_size=12).map(b"\n".join),
       st.sets(st.sampled_from(PATHS[1:]), max_size=3), st.integers(0, 600), st.integers(1, 3))
def test_fuzz_own_page_sizes_match_the_regex(data: bytes, paths: set[bytes], end: int,
                                             per_path: int) -> None:
    """`own_gets` finds the 2xx GETs of `/` and the asked paths that the regex finds, in the
    same order, cut by the window's end and stopped after `per_path` each as it is (8 in
    the scan; fewer here so that the stop is reached)."""
    end %= len(data) + 1  # anywhere in the data, often inside a line
    compiled, ref = ChunkResult(), ChunkResult()
    with mock.patch.object(fastpath, "OWN_SIZES_PER_PATH", per_path):
        fastpath._local_sizes(data, end, paths, compiled)
        with mock.patch.object(fastpath, "_fastscan", None):
            fastpath._local_sizes(data, end, paths, ref)
    assert compiled.local_sizes == ref.local_sizes


@needs_compiled
def test_own_page_sizes_at_every_window_end_and_near_misses() -> None:
    """Every end of the window, inside a match's size or just before it, and lines that miss
    `"GET / HTTP/1.x" 2dd n` by one byte: what the regex finds (each path is sought on its
    own in C, with a filter that looks at two of its bytes first)."""
    data = (b'"GET / HTTP/1.1" 200 5\n"GET / HTTP/1x1" 200 6\n"GET /a HTTP/1.0" 204 77\n'
            b'"GET / HTTP/1.1" 2000 8\n"GET / HTTP/1.1" 200x8\n"GET /  HTTP/1.1" 200 9\n'
            b'"GET /a HTTP/1.1" 299 10 x')
    for end in range(len(data) + 1):
        compiled, ref = ChunkResult(), ChunkResult()
        fastpath._local_sizes(data, end, {b"/a"}, compiled)
        with mock.patch.object(fastpath, "_fastscan", None):
            fastpath._local_sizes(data, end, {b"/a"}, ref)
        assert compiled.local_sizes == ref.local_sizes, end
    assert compiled.local_sizes == [("/", 5), ("/a", 77), ("/a", 10)]


@needs_compiled
@pytest.mark.parametrize("stamp", [
    "01/Mar/2026:10:00:05 +0001]", "01/Mar/2026:10:00:05 -0000]", "01/Mar/2026:10:00x05 +0000]",
    "01/Mar/2026:10:00:0x +0000]", "01/Mar/2026:10:00:x5 +0000]", "01/Mar/2026:10:00:05x+0000]",
    "01/Mar/2026:10:00:05 +0000x",
    "01/Mar/2026:10:00:05 +0000]", "01/Mar/2026:10:01:05 +0000]", "01/Mar/2026:10:00:05 +0000"])
def test_a_stamp_in_the_last_lines_minute_is_checked_whole(stamp: str) -> None:
    """The C scan checks a line whose stamp starts as the line before's minute by its seconds,
    zone and brackets only: one byte off anywhere there is what the exact per-line stamps of
    the Python reference make of it."""
    good = b'a [01/Mar/2026:10:00:00 +0000] "GET / H"\n'
    data = good + f'b [{stamp} "GET / H"\n'.encode() + good
    compiled, ref = scan_chunk(data), ChunkResult()
    fastpath._minutes_per_line(data, 3, ref)
    assert (compiled.minutes, compiled.unparsed, compiled.unparsed_samples) == \
        (ref.minutes, ref.unparsed, ref.unparsed_samples)


@needs_compiled
def test_each_line_is_counted_in_its_own_zone() -> None:
    """Two servers in different zones writing one log: the same local minute is two minutes."""
    res = scan_chunk(b'a [01/Mar/2026:10:00:00 +0000] "GET / H"\n'
                     b'b [01/Mar/2026:10:00:30 +0100] "GET / H"\n'
                     b'c [01/Mar/2026:10:00:40 +0000] "GET / H"\n')
    ten_utc = 1772359200
    assert res.minutes == {ten_utc: 2, ten_utc - 3600: 1}


# ---- candidate lines of the stock formats parsed in C (`parse_stock`) -----------------------

STOCK = {"common": 0, "combined": 1, "nginx": 2, "vhost_combined": 3}
LINE_PIECES = [
    " ", "  ", "-", '"', "\\", '\\"', "[", "]", "[01/Mar/2026:10:00:05 +0000]", "200", "304",
    "20", "2000", "-", "1", "12345678901234567890123", "GET", "CONNECT", "http://a.example/x",
    "mx.example.net:25", "HTTP/1.1", "\t", "\x1c", "\x1f", "\r", "\n", "\x0b", "x", "é", "\x85",
    "\udcff", "192.0.2.1", " - - ", " - u ", '"-"', '"ua"', '" 200 5 "', '" - - ', " 200 - ",
    ":", "::", "www.example.com:80 ", "h:-",
]
DATES = st.builds(
    "{:02d}/{}/{:04d}:{:02d}:{:02d}:{:02d} {}{:04d}".format,
    st.integers(0, 35), st.sampled_from(["Jan", "Feb", "Mar", "Dec", "feb", "Foo"]),
    st.sampled_from([0, 1, 1900, 1970, 2000, 2024, 2026, 2100, 9999]), st.integers(0, 25),
    st.integers(0, 61), st.integers(0, 99), st.sampled_from("+-"), st.integers(0, 9999))


@st.composite
def shaped(draw: st.DrawFn) -> str:
    """A stock line, its stamp drawn from DATES, with a few pieces thrown in between its
    tokens: most still match, on the pattern's edges."""
    date = draw(st.one_of(st.sampled_from(["01/Mar/2026:10:00:05 +0000",
                                           "29/Feb/2024:23:59:59 -0130"]), DATES))
    tokens = ["192.0.2.1", " - - ", "[", date, "]", ' "', "GET / HTTP/1.1", '" ', "200",
              " ", "17", ' "-" "ua"']
    if draw(st.booleans()):  # vhost_combined's `vhost:port ` in front
        tokens[:0] = [draw(st.sampled_from(["www.example.com", "a-b.example", "", "x y", "h:p",
                                            "é.example", "[::1]", "-"])), ":",
                      draw(st.sampled_from(["80", "", "-", "8:0", " ", "\t"])), " "]
    for _ in range(draw(st.integers(0, 3))):
        tokens.insert(draw(st.integers(0, len(tokens))), draw(st.sampled_from(LINE_PIECES)))
    return "".join(tokens)


def stock(name: str) -> formats.AccessFormat:
    return formats.compile_nginx(formats.NGINX_COMBINED) if name == "nginx" \
        else formats.stock_format(name)


@needs_compiled
@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(sorted(STOCK)), st.one_of(
    shaped(), st.lists(st.sampled_from(LINE_PIECES), max_size=30).map("".join)))
def test_fuzz_stock_lines_parse_in_c_as_the_regex_parses_them(name: str, line: str) -> None:
    """`parse_stock` gives each line's `parse_fields` exactly: fields, int epoch, no match."""
    fmt = stock(name)
    raw = line.encode("utf-8", "surrogateescape")
    want = fmt.parse_fields(raw.decode("utf-8", "surrogateescape"))
    got = fastpath._fastscan.parse_stock(  # type: ignore[union-attr]
        [(1, raw)], STOCK[name], formats.parse_clf_time,
        lambda b: fmt.parse_fields(b.decode("utf-8", "surrogateescape")))
    assert got == [want]
    if want is not None:
        assert [type(v) for v in got[0]] == [type(v) for v in want]


@needs_compiled
def test_stock_formats_are_recognised_and_others_parsed_by_their_regex() -> None:
    assert fastpath._stock_kind(formats.stock_format("combined")) == 1  # sizes="guess" too
    assert fastpath._stock_kind(stock("common")) == 0
    assert fastpath._stock_kind(stock("nginx")) == 2
    assert fastpath._stock_kind(stock("vhost_combined")) == 3
    vhost = fastpath.parse_candidates(stock("vhost_combined"), [(
        1, b'www.example.com:80 192.0.2.1 - - [01/Mar/2026:10:00:05 +0000] "CONNECT mx.example'
           b':25 HTTP/1.1" 200 4120 "-" "-"')])
    assert vhost == [(formats.parse_clf_time("01/Mar/2026:10:00:05 +0000"), "192.0.2.1",
                      "CONNECT", "mx.example:25", 200, None, "www.example.com", None, None,
                      4120, None)]
    custom = formats.compile_apache('%h %l %u %t "%r" %>s %b %D')
    assert fastpath._stock_kind(custom) is None
    lines = [(1, b'192.0.2.1 - - [01/Mar/2026:10:00:05 +0000] "CONNECT a:25 HTTP/1.0" 200 - 99'),
             (2, '192.0.2.1 - - [01/Mar/2026:10:00:05 +0000] "GET http://é/ HTTP/1.0" 200 5 '
                 '"-" "-"'.encode()), (3, b"garbage")]
    assert fastpath.parse_candidates(custom, lines) == [
        custom.parse_fields(raw.decode()) for _, raw in lines]
    combined = stock("combined")
    got = fastpath.parse_candidates(combined, lines)
    assert got == [combined.parse_fields(raw.decode()) for _, raw in lines]
    assert got[1] is not None and got[1][3] == "http://é/"  # not ASCII: the regex read it


@needs_compiled
def test_parse_stock_refuses_what_is_not_candidates() -> None:
    ps = fastpath._fastscan.parse_stock  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        ps([(1, "not bytes")], 1, formats.parse_clf_time, None)
    with pytest.raises(TypeError):
        ps(((1, b"x"),), 1, formats.parse_clf_time, None)
    with pytest.raises(ValueError):
        ps([], 4, formats.parse_clf_time, None)
    with pytest.raises(ZeroDivisionError):  # the time parser's own error comes through
        ps([(1, b'h - - [x] "GET / HTTP/1.0" 200 1')], 0, lambda s: 1 / 0, None)


@needs_compiled
@pytest.mark.parametrize("name", ["apache-elastic-2015/apache_logs.gz",
                                  "apache-secrepo-2018/access-2018-12-15.log.gz"])
def test_real_logs_parse_the_same_in_c_and_by_regex(name: str) -> None:
    """Every line of the public logs, taken as a candidate: the fields the regex gives."""
    data = gzip.decompress((REAL_LOGS / name).read_bytes())
    lines = data.decode("utf-8", "surrogateescape").splitlines()
    found = formats.detect_format(lines[:50])
    assert found is not None and isinstance(found.access, formats.AccessFormat)
    fmt = found.access
    assert fastpath._stock_kind(fmt) is not None
    cands = [(i, raw) for i, raw in enumerate(data.split(b"\n"), 1)]
    want = [fmt.parse_fields(raw.decode("utf-8", "surrogateescape")) for _, raw in cands]
    assert sum(w is not None for w in want) > 1000
    assert fastpath.parse_candidates(fmt, cands) == want


def test_lines_read_into_a_slot_are_counted_without_the_c_scanner() -> None:
    """`watch` reads a backlog's blocks into a worker's shared memory (a memoryview): without
    the C scanner the standard library counts them, which a memoryview cannot do itself."""
    block = memoryview(bytearray(b"a\nbb\n\nccc"))
    with mock.patch.object(fastpath, "_fastscan", None):
        assert fastpath.count_newlines(block) == 3
        assert fastpath.count_newlines(b"a\nbb\n") == 2
    if fastpath._fastscan is not None:
        assert fastpath.count_newlines(block) == 3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk_text, st.sampled_from([0, 1, 3]), st.booleans())
def test_a_chunk_scanned_in_place_is_scanned_as_its_bytes(pieces: list[str], long_lines: int,
                                                         big: bool) -> None:
    """A scan worker scans each block in its slot (a memoryview), without copying it out: the
    result is the bytes' result, with over-long lines (found only where the C scan saw a line
    that long) and chunks past the 1 MiB evidence window (whose end is looked for in the view)."""
    data = "".join(pieces).encode("utf-8", "surrogatepass")
    data += (b"x" * (sources.MAX_LINE + 1) + b"\n") * long_lines
    if big:
        data = b"\0" * 100 + data + b'1.2.3.4 - - [01/Mar/2026:10:00:00 +0000] "GET / HTTP/1.1" ' \
            b'304 -\n' * (EVIDENCE_BYTES // 60)
    assert scan_chunk(memoryview(bytearray(data))) == scan_chunk(data)
    if long_lines:
        assert scan_chunk(data).overlong >= long_lines
