"""Inputs that break naive log tools: compression, rotation, truncation, huge and binary lines,
attacker-written text in reports, and parsers under hypothesis."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayguard.findings import Report
from relayguard.logs import analyze, counting, fastpath
from relayguard.logs.analyze import LogOptions, analyse
from relayguard.logs.counting import Distinct, Timeline, TopK, iso
from relayguard.logs.detect import MailDetector, ProxyDetector, spike_buckets
from relayguard.logs.fastpath import EVIDENCE_BYTES, scan_chunk
from relayguard.logs.formats import (
    APACHE_FORMATS,
    YearGuesser,
    compile_apache,
    compile_nginx,
    parse_syslog,
)
from relayguard.logs.incidents import Incident
from relayguard.logs.sources import MAX_LINE, order_rotated
from relayguard.report import OutputFormat, render

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def line(client: str, req: str, status: int, size: str = "100", minute: int = 0,
         sec: int = 0) -> str:
    return (f'{client} - - [01/Mar/2026:10:{minute:02d}:{sec:02d} +0000] "{req}" {status} {size} '
            '"-" "ua"\n')


VISIT = [line("192.0.2.1", "GET / HTTP/1.1", 200, "900", m) for m in range(3)]
SPAM = [line("198.51.100.7", "CONNECT mx.example.net:25 HTTP/1.0", 200, "-", 5, s)
        for s in range(4)]


def write(path: Path, text: str, opener=open) -> str:
    with opener(path, "wb") as fh:
        fh.write(text.encode())
    return str(path)


def smtp_incident(report: Report) -> dict:
    (inc,) = [i for i in report.stats["incidents"] if i["kind"] == "proxy-smtp"]
    return inc


def test_every_compression_and_rotation_order(tmp_path: Path) -> None:
    # access.log.3.xz (oldest) .. access.log (newest), each with one CONNECT at its own minute
    names = [("access.log.3.xz", lzma.open), ("access.log.2.gz", gzip.open),
             ("access.log.1", open), ("access.log", open), ("access.log.4.bz2", bz2.open)]
    paths = []
    for i, (name, opener) in enumerate(names):
        minute = {"access.log.4.bz2": 1, "access.log.3.xz": 2, "access.log.2.gz": 3,
                  "access.log.1": 4, "access.log": 5}[name]
        paths.append(write(tmp_path / name, "".join(VISIT) + line(
            f"198.51.100.{i}", "CONNECT mx.example.net:25 HTTP/1.0", 200, "-", minute), opener))
    ordered = order_rotated(paths)
    assert [os.path.basename(p) for p in ordered] == [
        "access.log.4.bz2", "access.log.3.xz", "access.log.2.gz", "access.log.1", "access.log"]
    report = analyse(paths)
    assert report.errors == ()
    assert report.stats["lines"] == 20 and report.stats["unparsed"] == 0
    inc = smtp_incident(report)
    assert inc["events"] == 5 and inc["outcomes"] == {"relayed": 5}
    assert inc["first_seen"] == "2026-03-01T10:01:00Z" and inc["last_seen"] == \
        "2026-03-01T10:05:00Z"
    assert inc["samples"][0]["path"].endswith("access.log.4.bz2")
    dated = order_rotated(["x/a.log", "x/a.log-20260301.gz", "x/a.log-20260215"])
    assert dated == ["x/a.log-20260215", "x/a.log-20260301.gz", "x/a.log"]


def test_gzip_truncated_mid_stream_keeps_what_it_holds(tmp_path: Path) -> None:
    import random

    rnd = random.Random(5)
    body = "".join([line(f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}",
                         f"GET /{rnd.randrange(10**9)} HTTP/1.1", 200, str(rnd.randrange(10**6)),
                         m % 60) for m in range(5000)] + SPAM)
    full = gzip.compress(body.encode())
    cut = tmp_path / "access.log.1.gz"
    cut.write_bytes(full[: len(full) * 2 // 3])
    report = analyse([str(cut)])
    assert len(report.errors) == 1
    assert "truncated" in report.errors[0].message
    assert 1000 < report.stats["lines"] < 5004
    assert report.stats["unparsed"] <= 1  # at most the line cut in half
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(full[:20] + b"\x00" * 200 + full[220:])
    report = analyse([str(corrupt), str(tmp_path / "missing.log")])
    assert {e.source for e in report.errors} == {str(corrupt), str(tmp_path / "missing.log")}


def test_ten_megabyte_line_is_cut_counted_and_memory_bounded(tmp_path: Path) -> None:
    huge = '192.0.2.1 - - [01/Mar/2026:10:00:00 +0000] "GET /' + "A" * (10 * 1024 * 1024) + \
        ' HTTP/1.1" 414 0 "-" "-"\n'
    text = "".join(VISIT) + huge + "".join(SPAM)
    plain = write(tmp_path / "big.log", text)
    gz = write(tmp_path / "big.log.gz", text, gzip.open)
    for path in (plain, gz):
        for fast in (True, False):
            report = analyse([path], LogOptions(fast=fast))
            assert report.stats["lines"] == 8, (path, fast)
            inc = smtp_incident(report)
            assert inc["events"] == 4 and inc["samples"][0]["line"] == 5
            # the same accounting on both paths: one over-long line, its number, a sample
            assert report.stats["overlong_lines"] == 1, (path, fast)
            cut = [s for s in report.stats["unparsed_samples"] if "longer than" in s["text"]]
            assert [s["line"] for s in cut] == [4] and len(cut[0]["text"]) <= 300


def test_binary_and_empty_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    text = "".join(VISIT) + "\n\x00\xff\xfe garbage \x1b[31m\n\n" + "".join(SPAM)
    path = tmp_path / "access.log"
    path.write_bytes(text.encode("latin-1"))
    for fast in (True, False):
        report = analyse([str(path)], LogOptions(fast=fast))
        assert report.stats["lines"] == 10
        assert report.stats["parsed"] == 7 and report.stats["unparsed"] == 3
        assert smtp_incident(report)["events"] == 4
        assert any("garbage" in s["text"] for s in report.stats["unparsed_samples"])


def test_unknown_file_is_an_error_not_silence(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\nworld\n")
    report = analyse([str(path)])
    assert [e.message for e in report.errors] == [
        "not a log format relayguard knows (use --log-format)"]
    assert report.stats["unparsed"] == 2


def test_html_and_text_escape_attacker_text(tmp_path: Path) -> None:
    evil = line("198.51.100.7", "CONNECT <script>alert(1)</script>:25 HTTP/1.0", 200, "-")
    path = write(tmp_path / "access.log", evil)
    report = analyse([path])
    out = render(report, OutputFormat.HTML)
    assert "<script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert out.startswith("<!DOCTYPE html>") and "<svg" in out
    assert "http://" not in out.replace("http://www.w3.org/2000/svg", "")
    js = json.loads(render(report, OutputFormat.JSON))
    assert js["stats"]["incidents"][0]["destinations"][0][0] == "<script>alert(1)</script>:25"


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "relayguard", "logs", *args], input=stdin,
                          capture_output=True, timeout=60, check=False)


def test_cli_json_contract_stdin_and_exit_codes(tmp_path: Path) -> None:
    proc = run_cli("-", "--format", "json", stdin="".join(VISIT + SPAM).encode())
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["command"] == "logs" and doc["errors"] == []
    assert {"lines", "parsed", "unparsed", "by_format", "incidents"} <= set(doc["stats"])
    # issue 5's shape: the incidents at the top level, next to the contract's keys
    assert {"tool", "version", "command", "findings", "errors", "stats", "notes",
            "incidents"} == set(doc)
    assert [i["kind"] for i in doc["incidents"]] == ["proxy-smtp"]
    assert doc["incidents"] == doc["stats"]["incidents"]
    assert doc["stats"]["by_format"] == {"combined": 7}
    (f,) = doc["findings"]
    assert (f["rule"], f["category"], f["confidence"]) == ("LOGS-PROXY-SMTP", "proxy-abuse",
                                                          "likely")
    assert f["evidence"][1]["kind"] == "log" and f["evidence"][1]["location"]["line"] == 4
    quiet = write(tmp_path / "quiet.log", "".join(VISIT))
    assert run_cli(quiet).returncode == 0
    proc = run_cli(quiet, str(tmp_path / "nope.log"), "--format", "json")
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    proc = run_cli(quiet, "--since", "yesterday")
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    out = tmp_path / "r.html"
    assert run_cli(quiet, "--format", "html", "-o", str(out)).returncode == 0
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_since_until_select_events(tmp_path: Path) -> None:
    path = write(tmp_path / "a.log", "".join(VISIT + SPAM))
    from datetime import datetime

    def ts(s: str) -> float:
        return datetime.fromisoformat(s).timestamp()

    for fast in (True, False):
        none = analyse([path], LogOptions(until=ts("2026-03-01T10:04:00+00:00"), fast=fast))
        assert none.findings == ()
        some = analyse([path], LogOptions(since=ts("2026-03-01T10:05:02+00:00"), fast=fast))
        assert smtp_incident(some)["events"] == 2


def test_log_format_override_and_nginx(tmp_path: Path) -> None:
    text = ('192.0.2.1 [2026-03-01T10:00:05+00:00] "CONNECT foo.com:25 HTTP/1.1" 400 "x.example"'
            "\n")
    path = write(tmp_path / "nginx.log", text)
    report = analyse([path], LogOptions(
        log_format='$remote_addr [$time_iso8601] "$request" $status "$http_host"'))
    inc = smtp_incident(report)
    assert inc["outcomes"] == {"refused": 1} and inc["statuses"] == {"400": 1}


def test_watch_style_incremental_feed_matches_batch(tmp_path: Path) -> None:
    """feed() one line at a time with snapshot() after each gives the batch answer at the end."""
    fmt = compile_apache(APACHE_FORMATS["combined"])
    det = ProxyDetector()
    lines = VISIT + SPAM
    path = write(tmp_path / "w.log", "".join(lines))
    for i, text in enumerate(lines, 1):
        rec = fmt.parse(text.rstrip("\n"))
        assert rec is not None
        det.feed(rec, path, i, text.rstrip("\n"))
        snap = det.snapshot()
        if i <= 3:
            assert snap == []
        else:
            assert snap[0].events == i - 3 and snap[0].verdict == "relayed"
    report = analyse([path], LogOptions(fast=False))
    # the batch report also names each incident's finding (for `scan`'s stories)
    assert [i.pop("finding") for i in report.stats["incidents"]] == [
        f.fingerprint() for f in report.findings]
    assert [i.to_dict() for i in det.snapshot()] == report.stats["incidents"]


def test_bounded_structures() -> None:
    top = TopK(8)
    for i in range(10000):
        top.add(f"client-{i % 50}")
    top.add("heavy", 5000)
    assert len(top) == 8 and top.approximate and top.top(1)[0][0] == "heavy"
    tl = Timeline(cap=100)
    for minute in range(100000):
        tl.add(minute * 60.0)
    assert len(tl.buckets) <= 100 and sum(tl.buckets.values()) == 100000
    mail = MailDetector()
    mail.max_msgs = 50
    years = YearGuesser(year=2026)
    for i in range(500):
        rec = parse_syslog(f"Mar  1 10:00:05 mx postfix/smtpd[1]: Q{i:06d}: client=x[192.0.2.9]",
                           years)
        assert rec is not None
        mail.feed(rec, "m", i, "")
    assert len(mail.msgs) == 50


# ---------------------------------------------------------------------------------------------
# hypothesis

@FUZZ
@given(st.integers(1, 8), st.lists(st.tuples(st.integers(0, 30), st.integers(1, 4)),
                                   max_size=400), st.integers(0, 400))
def test_topk_evicts_what_space_saving_evicts(k: int, stream: list[tuple[int, int]],
                                              old_at: int) -> None:
    """The victim found from the floor (and its list) is `min(counts, key=counts.get)`'s,
    key for key and in the same order, also for a TopK pickled before the floor or the list
    existed (`old_at`), and across a pickle round trip."""
    top, ref = TopK(k), {}
    for i, (key, n) in enumerate(stream):
        if i == old_at:
            del top.floor  # as unpickled from an older state file
        elif i == old_at + 1:
            with contextlib.suppress(AttributeError):
                del top.low  # from a state file written before the list existed
        elif i % 97 == 0:
            top = pickle.loads(pickle.dumps(top))  # `watch` restarted
        name = f"k{key}"
        if name in ref:
            ref[name] += n
        elif len(ref) < k:
            ref[name] = n
        else:
            ref[name] = ref.pop(min(ref, key=ref.__getitem__)) + n
        top.add(name, n)
        assert list(top.counts.items()) == list(ref.items())


@pytest.mark.skipif(counting._topk_add_many is None, reason="C scanner not built (no compiler)")
@FUZZ
@given(st.integers(1, 6), st.lists(st.lists(st.sampled_from("abcdefghij"), max_size=30),
                                   max_size=8), st.integers(0, 8))
def test_topk_add_many_in_c_as_in_python(k: int, chunks: list[list[str]], old_at: int) -> None:
    """The C loop of `TopK.add_many` leaves the table, its order, the floor, the victim list
    and the flag as the Python loop does, chunk after chunk, also on state from before the
    floor or the list existed."""
    fast, slow = TopK(k), TopK(k)
    for i, keys in enumerate(chunks):
        if i == old_at:
            for top in (fast, slow):
                del top.floor, top.low
        fast.add_many(keys)
        with mock.patch.object(counting, "_topk_add_many", None):
            slow.add_many(keys)
        assert list(fast.counts.items()) == list(slow.counts.items())
        assert fast.approximate == slow.approximate
        assert getattr(fast, "floor", None) == getattr(slow, "floor", None)
        assert getattr(fast, "low", None) == getattr(slow, "low", None)


def small_incident() -> Incident:
    """An incident whose bounded counters are tiny, so a short stream fills and coarsens them."""
    inc = Incident("proxy-smtp")
    inc.clients, inc.destinations = TopK(3), TopK(2)
    inc.client_count, inc.smtp_destinations = Distinct(4), Distinct(2)
    inc.timeline = Timeline(cap=3)
    return inc


def state(inc: Incident) -> list[object]:
    """Everything counting leaves in an incident, dict and set orders included."""
    out: list[object] = [inc.events, inc.first, inc.last, inc.bytes, list(inc.outcomes.items()),
                         list(inc.statuses.items()), inc.head, inc.tail,
                         (inc.timeline.width, list(inc.timeline.buckets.items()))]
    for top in (inc.clients, inc.destinations):
        out.append((list(top.counts.items()), top.approximate, top.floor, list(top.low)))
    for dist in (inc.client_count, inc.smtp_destinations):
        out.append((sorted(dist.keys), dist.overflow))
    return out


event_args = st.tuples(
    st.one_of(st.none(), st.sampled_from([0.0, 59.9, 60.0, 3600.5, 7300.0, 86400.0 * 3, -61.0])),
    st.sampled_from([None, "", "a", "b", "c", "d", "e", "f"]),
    st.sampled_from([None, "", "mx1:25", "mx2:25", "mx3:25", "www:80"]),
    st.tuples(st.just("a.log"), st.integers(1, 99), st.just("line")),
    st.sampled_from([None, "relayed", "refused"]), st.sampled_from([None, "200", "403"]),
    st.integers(0, 5000), st.booleans())


@FUZZ
@given(st.lists(event_args, max_size=60), st.lists(st.integers(1, 20), max_size=8))
def test_events_counted_at_once_count_as_one_by_one(events: list[tuple], cuts: list[int]) -> None:
    """`Incident.add_many` over chunks of any size leaves what `add` per event leaves: the
    same top-k victims in the same order, the same coarsening, the same samples."""
    one, many = small_incident(), small_incident()
    for t, client, dest, sample, outcome, status, nbytes, smtp in events:
        one.add(t, client, dest, sample, outcome=outcome, status=status, nbytes=nbytes,
                smtp=smtp)
    rest = list(events)
    for n in [*cuts, len(rest)]:
        many.add_many(rest[:n])
        rest = rest[n:]
    assert state(many) == state(one)


@FUZZ
@given(st.integers(0, 5), st.lists(st.sampled_from("abcdefg"), max_size=30),
       st.lists(st.integers(-200_000, 200_000), max_size=40), st.integers(1, 4))
def test_distinct_and_timeline_bulk_adds_match_single_adds(cap: int, keys: list[str],
                                                           times: list[int], tcap: int) -> None:
    """The set and the coarsening timeline take a column at once as they take one key or time
    at a time (the timeline with a cap so small that a doubling may not shrink it)."""
    one, many = Distinct(cap), Distinct(cap)
    for key in keys:
        one.add(key)
    many.add_many(keys)
    assert (one.keys, one.overflow) == (many.keys, many.overflow)
    a, b = Timeline(cap=tcap), Timeline(cap=tcap)
    for t in times:
        a.add(t)
    b.add_many(times)
    assert (a.width, list(a.buckets.items())) == (b.width, list(b.buckets.items()))


ACCESS_FORMATS = [compile_apache(f) for f in APACHE_FORMATS.values()] + [
    compile_nginx('$remote_addr - [$time_local] "$request" $status $body_bytes_sent "$http_host"')]
text_lines = st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=300)
log_like = st.builds(
    lambda c, m, t, s, z, tail: f'{c} - - [01/Mar/2026:10:00:00 +0000] "{m} {t} HTTP/1.1" '
                                f"{s} {z}{tail}",
    st.sampled_from(["1.2.3.4", "::1", "-", ""]),
    st.sampled_from(["GET", "CONNECT", "POST", "", "\\x05"]),
    text_lines, st.integers(0, 999), st.sampled_from(["-", "0", "123", "x"]), text_lines)


# numbers with digit characters int() refuses though str.isdigit() accepts them ('²', '③')
odd_number = st.text(alphabet="0123456789\u00b2\u2462\u0663-", min_size=1, max_size=6)
odd_numbers_line = st.builds(
    lambda port, sec, tz, size: f'198.51.100.7 - - [01/Mar/2026:10:00:{sec} +{tz}] '
                                f'"CONNECT mx.example:{port} HTTP/1.1" 200 {size} "-" "-"',
    odd_number, odd_number, odd_number, odd_number)


def test_odd_digits_in_a_log_are_read_not_fatal(tmp_path: Path) -> None:
    """A port, second, zone or size written with '²' stopped `relayguard logs` with a
    traceback (`int()` after `str.isdigit()`): now such a port is no port, such a stamp no
    stamp, and the line is counted like any other."""
    log = tmp_path / "access.log"
    log.write_text(
        '198.51.100.7 - - [01/Mar/2026:10:00:00 +0000] "CONNECT mx.example:\u00b25 HTTP/1.1"'
        ' 200 - "-" "-"\n'
        '198.51.100.7 - - [01/Mar/2026:10:00:\u00b20 +0000] "GET / HTTP/1.1" 200 5 "-" "-"\n'
        '198.51.100.7 - - [01/Mar/2026:10:00:00 +\u00b2000] "GET / HTTP/1.1" 200 5 "-" "-"\n'
        '198.51.100.7 - - [01/Mar/2026:10:00:00 +0000] "GET http://x.example:\u00b2/ HTTP/1.1"'
        ' 200 5 "-" "-"\n', encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "relayguard", "logs", str(log), "--format",
                           "json"], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    doc = json.loads(done.stdout)
    assert doc["stats"]["lines"] == 4
    assert {i["kind"] for i in doc["stats"]["incidents"]} == {"proxy-connect", "proxy-http"}


@FUZZ
@given(st.one_of(text_lines, log_like, odd_numbers_line))
def test_fuzz_access_parsers_never_raise(s: str) -> None:
    det = ProxyDetector(frozenset({"www.example.com"}))
    for fmt in ACCESS_FORMATS:
        rec = fmt.parse(s)
        if rec is not None:
            det.feed(rec, "f", 1, s)
    for inc in det.snapshot():
        inc.to_dict()


@FUZZ
@given(st.one_of(text_lines, st.builds(
    lambda p, m: f"Mar  1 10:00:05 mx {p}[1]: {m}",
    st.sampled_from(["postfix/smtpd", "postfix/smtp", "postfix/qmgr", "exim", "postfix/x/smtp"]),
    text_lines)))
def test_fuzz_syslog_and_mail_detector_never_raise(s: str) -> None:
    mail = MailDetector()
    rec = parse_syslog(s, YearGuesser(year=2026))
    if rec is not None:
        mail.feed(rec, "f", 1, s)
    for inc in mail.snapshot():
        inc.to_dict()


@FUZZ
@given(st.lists(st.one_of(log_like, text_lines,
                          st.binary(max_size=200).map(lambda b: b.decode("latin-1"))),
                max_size=30), st.booleans())
def test_fuzz_fast_path_counts_every_line(lines: list[str], final_newline: bool) -> None:
    text = "\n".join(x.replace("\n", " ").replace("\r", " ") for x in lines)
    data = (text + ("\n" if final_newline else "")).encode("utf-8", "surrogatepass")
    if not lines:
        data = b""
    res = scan_chunk(data)
    # an unterminated last line is a line; an empty unterminated one is nothing at all
    expected = len(lines) - (0 if final_newline or lines[-1] else 1) if lines else 0
    assert res.lines == expected
    assert 0 <= res.unparsed <= res.lines
    assert sum(res.minutes.values()) == res.lines - res.unparsed
    # candidate line numbers come from the same newline count as the line total
    split = data.split(b"\n")
    for lineno, line in res.candidates:
        assert 1 <= lineno <= res.lines and split[lineno - 1].startswith(line)
    assert len(data) < MAX_LINE * 64


def test_own_page_sizes_are_sought_in_the_first_mib_only() -> None:
    """The site's own `/` sizes (the evidence against `GET http://other/` being relayed) come
    from each chunk's first MiB: a chunk whose `/` is never fetched there is not searched
    to its end for them, and one line straddling the window's end is read whole."""
    def line(target: str, size: int) -> bytes:
        return (f'192.0.2.9 - - [01/Mar/2026:10:00:00 +0000] "GET {target} HTTP/1.1" 200 '
                f'{size} "-" "-"\n').encode()
    probe = b'198.51.100.7 - - [01/Mar/2026:10:00:00 +0000] "GET http://x.example/ HTTP/1.1"' \
            b' 200 5120 "-" "-"\n'
    filler = line("/a.png", 900) * (EVIDENCE_BYTES // len(line("/a.png", 900)))
    late = scan_chunk(probe + filler + line("/", 777) * 3)
    assert late.lines == 1 + filler.count(b"\n") + 3 and len(late.candidates) == 1
    assert late.local_sizes == []
    early = scan_chunk(probe + line("/", 777) * 3 + filler)
    assert early.local_sizes == [("/", 777)] * 3
    # the window ends at the end of the line that crosses the first MiB, not inside it: the
    # size is read whole, never cut to the digits before the window's end
    home = line("/", 123456)
    head = probe + filler[:EVIDENCE_BYTES - len(probe) - len(home) - 200]
    head += b"#" * (EVIDENCE_BYTES - len(head) - home.index(b"123456") - 3) + b"\n"
    cross = head + home + line("/a.png", 1) * 9
    assert cross.index(b"123456") < EVIDENCE_BYTES < cross.index(b"123456") + 6
    assert scan_chunk(cross).local_sizes == [("/", 123456)]


event = st.tuples(
    st.sampled_from(["192.0.2.1", "192.0.2.2", "198.51.100.7", "203.0.113.5"]),
    st.sampled_from(["GET / HTTP/1.1", "GET /a.png HTTP/1.1", "CONNECT mx.example.net:25 HTTP/1.0",
                     "CONNECT www.example.org:443 HTTP/1.1", "GET http://x.example/ HTTP/1.1",
                     "GET http://y.example/a.png HTTP/1.1", "POST http://x.example:25/ HTTP/1.0",
                     "\\x05\\x01"]),
    st.sampled_from([200, 200, 403, 404, 405, 502]),
    st.sampled_from(["-", "0", "900", "1234", "77"]),
    st.integers(0, 130),  # minute offset: > 60 splits incidents
    st.booleans(),  # garbage line instead
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(event, max_size=40))
def test_fuzz_fast_and_line_paths_agree(tmp_path_factory, events) -> None:
    out = []
    for client, req, status, size, minute, garbage in sorted(events, key=lambda e: e[4]):
        if garbage:
            out.append("junk \x01 line\n")
            continue
        out.append(f'{client} - - [01/Mar/2026:{10 + minute // 60:02d}:{minute % 60:02d}:00 '
                   f'+0000] "{req}" {status} {size} "-" "-"\n')
    path = tmp_path_factory.mktemp("agree") / "access.log"
    path.write_text("".join(out), encoding="utf-8")
    slow = analyse([str(path)], LogOptions(fast=False))
    with mock.patch.object(fastpath, "_fastscan", None):  # the pure-Python scan, as without gcc
        pure = analyse([str(path)])
    with mock.patch.object(analyze, "PARSE_BATCH", 3):  # candidates parsed in slices of 3
        sliced = analyse([str(path)])
    for fast in (analyse([str(path)]), pure, sliced):
        for key in ("lines", "parsed", "unparsed", "incidents", "requests_timeline"):
            assert fast.stats[key] == slow.stats[key], key
        assert [f.to_dict() for f in fast.findings] == [f.to_dict() for f in slow.findings]


def test_cli_apache_config_formats_and_gzip_on_stdin(tmp_path: Path) -> None:
    log = tmp_path / "proxy_access.log"
    log.write_text('mx-front 198.51.100.7 [01/Mar/2026:10:05:00 +0000] "CONNECT mx.example.net:25 '
                   'HTTP/1.0" 200\n', encoding="utf-8")
    conf = tmp_path / "httpd.conf"
    proxy = ("LoadModule proxy_module mod_proxy.so\n"
             "LoadModule proxy_connect_module mod_proxy_connect.so\nProxyRequests On\n")
    conf.write_text(f'LogFormat "%v %h %t \\"%r\\" %>s" short\nCustomLog "{log}" short\n'
                    "ServerName www.example.com\n" + proxy, encoding="utf-8")
    proc = run_cli(str(log), "--apache-config", str(conf), "--format", "json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and doc["stats"]["by_format"] == {"custom": 1}
    # no size in this format: the config's forward proxy is what says the tunnel was opened
    assert doc["findings"][0]["rule"] == "LOGS-PROXY-SMTP"
    assert "ProxyRequests On" in doc["stats"]["incidents"][0]["proxy_config"]
    conf.write_text(conf.read_text(encoding="utf-8").replace(proxy, ""), encoding="utf-8")
    doc = json.loads(run_cli(str(log), "--apache-config", str(conf), "-f", "json").stdout)
    assert doc["stats"]["incidents"][0]["verdict"] == "probably served locally"
    assert [f["rule"] for f in doc["findings"]] == ["LOGS-PROXY-SCAN"]
    conf.write_text(conf.read_text(encoding="utf-8") + proxy, encoding="utf-8")
    assert run_cli(str(log), "--format", "json").returncode == 2  # unknown without the config
    rotated = tmp_path / "proxy_access.log.1.gz"
    rotated.write_bytes(gzip.compress(log.read_bytes()))
    proc = run_cli(str(rotated), "--apache-config", str(conf), "--format", "json")
    assert json.loads(proc.stdout)["stats"]["by_format"] == {"custom": 1}
    own = tmp_path / "own.log"
    own.write_text('1.2.3.4 - - [01/Mar/2026:10:00:00 +0000] "GET http://www.example.com/ '
                   'HTTP/1.1" 200 5 "-" "-"\n', encoding="utf-8")
    doc = json.loads(run_cli(str(own), "--apache-config", str(conf), "-f", "json").stdout)
    assert doc["findings"] == [] and doc["stats"]["own_host_absolute_requests"] == 1
    proc = run_cli("-", "--format", "json", stdin=gzip.compress("".join(VISIT + SPAM).encode()))
    assert json.loads(proc.stdout)["stats"]["lines"] == 7


def test_apache_error_log_is_recognised_and_skipped(tmp_path: Path) -> None:
    err = tmp_path / "error.log"
    err.write_text("[Wed Mar 01 10:00:00.123456 2026] [proxy:error] [pid 1:tid 2] AH00940: "
                   "HTTP: disabled connection for (x)\n[Wed Mar 01 10:00:01.5 2026] [core:notice] "
                   "[pid 1] AH00094: Command line: 'apache2'\n", encoding="utf-8")
    report = analyse([str(err)])
    assert report.errors == () and report.findings == ()
    assert report.notes == (f"{err}: apache-error log, not analysed",)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=40), st.binary(min_size=60, max_size=400)),
                max_size=20),
       st.integers(1, 64), st.booleans())
def test_fuzz_line_reader_matches_split(monkeypatch, parts, chunk, final_newline) -> None:
    """Whatever the read sizes, lines come out as bytes.split gives them, cut at MAX_LINE."""
    import io

    from relayguard.logs import sources

    monkeypatch.setattr(sources, "MAX_LINE", 16)
    lines = [p.replace(b"\n", b" ") for p in parts]
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    problems = sources.ReadProblems()
    got = list(sources.iter_lines(io.BytesIO(data), problems, size=chunk))
    want = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        want = want[:-1]
    assert got == [w[:16] for w in want]
    assert problems.overlong == sum(1 for w in want if len(w) > 16)


_DYING: dict = {}


def dies_in_workers(p: str, a: int, b: int, fmt=None):
    """A chunk scanner whose worker processes die past the first chunks (picklable by name)."""
    if os.getpid() != _DYING["parent"] and a > 50000:
        os._exit(3)
    return _DYING["real"](p, a, b, fmt)


def test_parallel_chunks_agree_and_survive_dying_workers(tmp_path: Path, monkeypatch) -> None:
    """Worker processes over many small chunks give the line-by-line answer; if workers die,
    the rest is scanned in-process."""
    import random

    rnd = random.Random(7)
    out = []
    for i in range(3000):
        minute = i // 40
        stamp = f"01/Mar/2026:{10 + minute // 60:02d}:{minute % 60:02d}:{i % 60:02d} +0000"
        req = rnd.choice(["GET / HTTP/1.1", "GET /a HTTP/1.1", "CONNECT mx.example.net:25 "
                          "HTTP/1.0", "GET http://x.example/ HTTP/1.1"])
        out.append(f'192.0.2.{i % 9} - - [{stamp}] "{req}" 200 {rnd.choice(["-", "900"])} '
                   '"-" "-"\n')
    path = tmp_path / "access.log"
    path.write_text("".join(out), encoding="utf-8")
    monkeypatch.setattr(fastpath, "CHUNK_BYTES", 8192)
    monkeypatch.setattr(fastpath, "PARALLEL_MIN_BYTES", 0)
    slow = analyse([str(path)], LogOptions(fast=False))
    par = analyse([str(path)], LogOptions(jobs=2))
    for key in ("lines", "parsed", "incidents", "requests_timeline"):
        assert par.stats[key] == slow.stats[key], key
    _DYING["parent"], _DYING["real"] = os.getpid(), fastpath._scan_range
    monkeypatch.setattr(fastpath, "_scan_range", dies_in_workers)
    broken = analyse([str(path)], LogOptions(jobs=2))
    assert broken.stats["incidents"] == slow.stats["incidents"]
    assert broken.stats["lines"] == 3000


def test_a_format_that_parses_nothing_is_an_error_not_a_clean_result(tmp_path: Path) -> None:
    """The reviewer's cases: `--log-format squid` on an Apache log, `%{`, `(` — exit 2 with one
    error each, never "no findings"."""
    log = write(tmp_path / "access.log", "".join(VISIT + SPAM))
    for spec, message in (("squid", "only 0 of 7 line(s) parse as squid"),
                          ("syslog", "only 0 of 7 line(s) parse as syslog"),
                          ("%{", "no field relayguard reads"),
                          ("(", "unknown log format '('")):
        proc = run_cli(log, "--log-format", spec, "--format", "json")
        doc = json.loads(proc.stdout)
        assert proc.returncode == 2, (spec, proc.stderr)
        assert len(doc["errors"]) == 1 and message in doc["errors"][0]["message"], doc["errors"]
        assert doc["findings"] == []
    # two files, one bad format: said once
    other = write(tmp_path / "other.log", "".join(VISIT))
    report = analyse([log, other], LogOptions(log_format="("))
    assert [(e.source, e.message) for e in report.errors] == [
        ("--log-format", "unknown log format '('")]
    # a file mostly of junk after a recognisable head is an error too; a few bad lines are not
    junk = write(tmp_path / "junk.log", VISIT[0] + "junk line\n" * 40)
    assert [e.message for e in analyse([junk]).errors] == [
        "only 1 of 41 line(s) parse as combined (the format chosen for it); the rest of the file "
        "was not analysed"]
    assert analyse([write(tmp_path / "ok.log", "".join(VISIT * 7) + "junk\n")]).errors == ()


_PEAK = """
import json, resource, sys
from relayguard.logs.analyze import LogOptions, analyse
r = analyse([sys.argv[1]], LogOptions(fast=sys.argv[2] == "fast", jobs=int(sys.argv[3])))
# VmHWM, not RUSAGE_SELF: Linux carries ru_maxrss across exec, so a process started by a
# big pytest would report pytest's own peak (282 MB was seen that way in a full run)
own = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
peak = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # forked workers
print(json.dumps({"peak_kib": peak, "lines": r.stats["lines"],
                  "overlong": r.stats["overlong_lines"],
                  "kinds": [i["kind"] for i in r.stats["incidents"]]}))
"""


def test_a_line_of_200_megabytes_costs_a_chunk_of_memory(tmp_path: Path) -> None:
    """The reviewer's case: one 400 MB line made the plain-file fast path read it whole
    (435 MB peak). Peak RSS of a fresh process stays below the line, on every path (about
    55 MB). The bound is issue 5's 200 MB for any input."""
    path = tmp_path / "huge.log"
    with open(path, "wb") as fh:
        fh.write("".join(VISIT).encode())
        fh.write(b'192.0.2.9 - - [01/Mar/2026:10:01:00 +0000] "GET /')
        block = b"A" * (1 << 20)
        for _ in range(200):
            fh.write(block)
        fh.write(b' HTTP/1.1" 414 0 "-" "-"\n')
        fh.write("".join(SPAM).encode())
    for mode, jobs in (("fast", 1), ("fast", 2), ("slow", 1)):
        proc = subprocess.run([sys.executable, "-c", _PEAK, str(path), mode, str(jobs)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        assert (got["lines"], got["overlong"], got["kinds"]) == (8, 1, ["proxy-smtp"]), got
        # issue 5's bound for any input; reading the 200 MB line whole would exceed it
        assert got["peak_kib"] < 200 * 1024, (mode, jobs, got)


def test_named_pipes_and_process_substitution_are_read_without_seeking(tmp_path: Path) -> None:
    """`relayguard logs <(zcat access.log.gz)` and a FIFO: sniffed without seeking (they
    cannot), compressed or not, and never opened twice (a second open would eat the data)."""
    import threading

    text = "".join(VISIT + SPAM).encode()
    fifo = tmp_path / "pipe"
    for payload in (text, gzip.compress(text), bz2.compress(text)):
        os.mkfifo(fifo)

        def feed(data: bytes = payload) -> None:
            with open(fifo, "wb") as fh:
                for i in range(0, len(data), 7):  # dribbled: short reads on the other end
                    fh.write(data[i:i + 7])
                    fh.flush()

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        proc = run_cli(str(fifo), "--format", "json")
        writer.join(10)
        fifo.unlink()
        doc = json.loads(proc.stdout)
        assert doc["errors"] == [] and doc["stats"]["lines"] == 7, proc.stderr
        assert [i["kind"] for i in doc["incidents"]] == ["proxy-smtp"]
    gz = write(tmp_path / "access.log.gz", "".join(VISIT + SPAM), gzip.open)
    proc = subprocess.run(["bash", "-c", f'"{sys.executable}" -m relayguard logs '
                           f'<(zcat "{gz}") -f json'],
                          capture_output=True, timeout=60, check=False)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and doc["errors"] == [], proc.stderr
    assert doc["stats"]["lines"] == 7


@FUZZ
@given(st.one_of(st.floats(-5e9, 5e10, allow_nan=False), st.integers(-10**9, 10**10)))
def test_iso_writes_what_strftime_writes(t: float) -> None:
    assert iso(t) == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def test_spikes_are_computed_once_per_state_of_the_timeline() -> None:
    """A report asks for a timeline's spikes twice; a change in between is never hidden."""
    tl = Timeline()
    for m in range(30):
        tl.add(m * 60, 100)
    assert spike_buckets(tl) == [] and spike_buckets(tl) is spike_buckets(tl)
    tl.add(30 * 60, 5000)  # a spike arrives after the first answer
    assert [(t, n) for t, n, _ in spike_buckets(tl)] == [(1800, 5000)]
    tl.add_minutes({31 * 60: 6000})
    assert [t for t, _, _ in spike_buckets(tl)] == [1800, 1860]
    assert spike_buckets(tl, floor=10**6) == []  # other thresholds: another answer


_SLOW: dict = {}


def slow_in_workers(p: str, a: int, b: int, fmt=None):
    """A chunk scanner that is slow in worker processes and counts this process's calls."""
    if os.getpid() != _SLOW["parent"]:
        time.sleep(0.3)
    else:
        _SLOW["here"] += 1
    return _SLOW["real"](p, a, b, fmt)


def test_this_process_scans_one_chunk_ahead_of_slow_workers(tmp_path: Path,
                                                             monkeypatch) -> None:
    """While a worker's chunk is due this process scans the next one, but not the whole file:
    each result of a log dense with proxy requests can be tens of MB."""
    path = tmp_path / "access.log"
    path.write_text(line("198.51.100.7", "CONNECT mx.example.net:25 HTTP/1.0", 200) * 3000)
    monkeypatch.setattr(fastpath, "CHUNK_BYTES", 20000)
    monkeypatch.setattr(fastpath, "PARALLEL_MIN_BYTES", 0)
    _SLOW.update(parent=os.getpid(), here=0, real=fastpath._scan_range)
    monkeypatch.setattr(fastpath, "_scan_range", slow_in_workers)
    results = fastpath.scan_plain_file(str(path), 2)
    first = next(results)
    assert _SLOW["here"] == 1  # the first due is the worker's: one chunk scanned meanwhile
    assert first.lines + sum(r.lines for r in results) == 3000
