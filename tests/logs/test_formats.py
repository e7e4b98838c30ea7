"""Format compiler and parsers: each annotated sample line beside the record it must give."""

from __future__ import annotations

import calendar
import dataclasses
import re
from datetime import UTC
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relayguard.logs import formats
from relayguard.logs.apacheconf import read_apache_config
from relayguard.logs.formats import (
    APACHE_FORMATS,
    NGINX_COMBINED,
    FormatError,
    SquidFormat,
    YearGuesser,
    compile_apache,
    compile_nginx,
    detect_format,
    format_by_name,
    parse_clf_time,
    parse_syslog,
)

T = calendar.timegm((2026, 3, 1, 10, 0, 5))


def test_clf_time_with_offsets() -> None:
    assert parse_clf_time("01/Mar/2026:10:00:05 +0000") == T
    assert parse_clf_time("01/Mar/2026:11:00:05 +0100") == T
    assert parse_clf_time("01/Mar/2026:02:00:05 -0800") == T
    assert parse_clf_time("31/Feb/2026:02:00:05 -0800") is None
    assert parse_clf_time("01/Foo/2026:02:00:05 -0800") is None
    assert parse_clf_time("01/Mar/2026:02:00:xx -0800") is None


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 40), st.sampled_from(["Jan", "Feb", "Mar", "Foo"]), st.integers(1969, 2100),
       st.integers(0, 25), st.integers(0, 61), st.integers(0, 61),
       st.sampled_from(["+0000", "-0800", "+0530", "+99xx", "", " +0100", "+01000"]))
def test_clf_time_cache_gives_what_parsing_gives(day: int, mon: str, year: int, h: int, m: int,
                                                 s: int, tz: str) -> None:
    """The per-second cache in front of `parse_clf_time` changes no answer, asked once or
    twice, and keeps no stamp that does not parse."""
    text = f"{day:02d}/{mon}/{year}:{h:02d}:{m:02d}:{s:02d} {tz}"
    want = formats._clf_time(text)
    assert parse_clf_time(text) == want
    assert parse_clf_time(text) == want
    assert (text in formats._second_cache) == (want is not None)
    assert len(formats._second_cache) <= 4097


def test_second_cache_is_bounded() -> None:
    for i in range(5000):
        parse_clf_time(f"01/Mar/2026:{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d} +0000")
    assert len(formats._second_cache) <= 4097


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["common", "combined"]), st.lists(st.sampled_from(
    ["GET", "CONNECT", " ", "/", "http://", "a.example:25", '"', "\\", "-", "200", "304", "1",
     "x", "[01/Mar/2026:10:00:05 +0000]", "é", "\t"]), max_size=30))
def test_formats_without_extra_fields_skip_them_losing_nothing(name: str,
                                                               pieces: list[str]) -> None:
    """common and combined have no field past the size, so `parse_fields` returns without
    looking them up: the same fields as the full lookup."""
    fmt = compile_apache(APACHE_FORMATS[name])
    assert not fmt.extras
    line = ('192.0.2.1 - - [01/Mar/2026:10:00:05 +0000] "' + "".join(pieces) + '" 200 17'
            + (' "-" "' + "".join(pieces[::-1]) + '"' if name == "combined" else ""))
    full = dataclasses.replace(fmt, extras=True)
    assert fmt.parse_fields(line) == full.parse_fields(line)


def test_formats_with_extra_fields_read_them() -> None:
    fmt = compile_apache('%v %h %l %u %t "%r" %>s %b %I %O %D "%{Host}i"')
    assert fmt.extras
    f = fmt.parse_fields('www.example.com 192.0.2.1 - - [01/Mar/2026:10:00:05 +0000] '
                         '"GET / HTTP/1.1" 200 17 320 1450 1234 "a.example"')
    assert f is not None
    assert f[6:] == ("www.example.com", "a.example", 320, 1450, 1234)


# (format, line, expected fields)
SAMPLES = [
    (APACHE_FORMATS["combined"],
     '203.0.113.9 - - [01/Mar/2026:10:00:05 +0000] "CONNECT mx.example.net:25 HTTP/1.0" 200 - '
     '"-" "-"',
     {"client": "203.0.113.9", "method": "CONNECT", "target": "mx.example.net:25",
      "status": 200, "size": None, "time": T}),
    (APACHE_FORMATS["common"],
     '::1 - bob [01/Mar/2026:10:00:05 +0000] "GET http://a.example/x?y=1 HTTP/1.1" 404 196',
     {"client": "::1", "method": "GET", "target": "http://a.example/x?y=1", "status": 404,
      "size": 196}),
    (APACHE_FORMATS["vhost_combined"],
     'www.example.com:80 198.51.100.2 - - [01/Mar/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 '
     '5120 "-" "curl/8"',
     {"vhost": "www.example.com", "bytes_out": 5120, "size": None, "client": "198.51.100.2"}),
    # old Apache: an unescaped quote inside the request
    (APACHE_FORMATS["combined"],
     '192.0.2.1 - - [01/Mar/2026:10:00:05 +0000] "GET /a"b HTTP/1.0" 400 226 "-" "-"',
     {"target": '/a"b', "status": 400}),
    # SOCKS5 greeting sent to a web port, logged as the request
    (APACHE_FORMATS["combined"],
     '192.0.2.1 - - [01/Mar/2026:10:00:05 +0000] "\\x05\\x01" 501 - "-" "-"',
     {"method": "\\x05\\x01", "target": "", "status": 501}),
    ('%h %l %u %t "%r" %>s %b %D "%{Host}i"',
     '192.0.2.1 - - [01/Mar/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 10 1234 "other.example"',
     {"duration_us": 1234, "host_header": "other.example"}),
    ('%a %{%Y-%m-%dT%H:%M:%S}t "%r" %s %I %O',
     '192.0.2.1 2026-03-01T10:00:05 "CONNECT h:443 HTTP/1.1" 200 300 5000',
     {"time": T, "bytes_in": 300, "bytes_out": 5000}),
    ('%{sec}t %h "%r" %>s %b', f'{T} 192.0.2.1 "GET / HTTP/1.1" 200 5', {"time": T}),
]


@pytest.mark.parametrize(("fmt", "line", "want"), SAMPLES)
def test_apache_logformat_samples(fmt: str, line: str, want: dict[str, object]) -> None:
    rec = compile_apache(fmt).parse(line)
    assert rec is not None, line
    for key, value in want.items():
        assert getattr(rec, key) == value, key


def test_truncated_trailing_fields_still_parse_the_core() -> None:
    """elastic line 8899 is cut mid user-agent; the request part is intact."""
    fmt = compile_apache(APACHE_FORMATS["combined"])
    rec = fmt.parse('83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /a HTTP/1.1" 200 203023 '
                    '"http://semicomplete.com/" "Mozilla/5.0 (Macintosh; Intel')
    assert rec is not None and rec.status == 200 and rec.size == 203023


def test_nginx_formats() -> None:
    fmt = compile_nginx(NGINX_COMBINED)
    rec = fmt.parse('192.0.2.1 - - [01/Mar/2026:10:00:05 +0000] "CONNECT foo.com:25 HTTP/1.1" '
                    '400 150 "-" "-"')
    assert rec is not None and (rec.method, rec.status, rec.size, rec.time) == \
        ("CONNECT", 400, 150, T)
    custom = compile_nginx('$remote_addr [$time_iso8601] "$request" $status $bytes_sent '
                           '$request_time "$http_host"')
    rec = custom.parse('192.0.2.1 [2026-03-01T10:00:05+00:00] "GET / HTTP/1.1" 200 99 0.250 '
                       '"x.example"')
    assert rec is not None
    assert (rec.time, rec.bytes_out, rec.duration_us, rec.host_header) == \
        (T, 99, 250000, "x.example")


def test_squid_native() -> None:
    sq = SquidFormat()
    rec = sq.parse("1772359205.123    105 192.0.2.7 TCP_TUNNEL/200 4410 CONNECT mx.example:25 - "
                   "HIER_DIRECT/198.51.100.1 -")
    assert rec is not None and rec.proxy_log and rec.status == 200 and rec.size == 4410
    assert rec.target == "mx.example:25" and rec.time == pytest.approx(1772359205.123)
    denied = sq.parse("1772359205.123      0 192.0.2.7 TCP_DENIED/403 3900 CONNECT a:25 - "
                      "HIER_NONE/- text/html")
    assert denied is not None and denied.hier == "HIER_NONE/-"
    assert sq.parse("garbage") is None


def test_syslog_classic_rfc3339_maillog_exim() -> None:
    years = YearGuesser(year=2026, tz=UTC)
    a = parse_syslog("Mar  1 10:00:05 mx postfix/smtpd[12]: connect from x[192.0.2.1]", years)
    assert a is not None and (a.time, a.host, a.program, a.pid) == (T, "mx", "postfix/smtpd", 12)
    b = parse_syslog("2026-03-01T11:00:05.123456+01:00 mx postfix/10025/smtpd[3]: hi",
                     YearGuesser(tz=UTC))
    assert b is not None and b.time == pytest.approx(T + 0.123456)
    assert b.program == "postfix/10025/smtpd"
    c = parse_syslog("2026-03-01 10:00:05 1vXyZa-000ABC-12 <= a@b H=(x) [192.0.2.1] P=esmtp",
                     YearGuesser(tz=UTC))
    assert c is not None and c.program == "exim" and c.time == T
    assert parse_syslog("not syslog", years) is None
    assert parse_syslog("Foo  1 10:00:05 mx postfix/smtpd[12]: x", years) is None


def test_year_inference_from_reference_and_rollover() -> None:
    ref = calendar.timegm((2026, 1, 3, 0, 0, 0))  # file written on 3 Jan 2026
    years = YearGuesser(reference=ref, tz=UTC)
    dec = parse_syslog("Dec 31 23:59:59 h postfix/smtp[1]: x", years)
    jan = parse_syslog("Jan  1 00:00:01 h postfix/smtp[1]: x", years)
    assert dec is not None and jan is not None
    assert dec.time == calendar.timegm((2025, 12, 31, 23, 59, 59))
    assert jan.time == calendar.timegm((2026, 1, 1, 0, 0, 1))
    fixed = YearGuesser(year=2015, tz=UTC)
    got = parse_syslog("Oct 22 02:13:42 conch postfix/smtpd[1]: x", fixed)
    assert got is not None and got.time == calendar.timegm((2015, 10, 22, 2, 13, 42))


def test_detection_and_overrides() -> None:
    combined = '1.2.3.4 - - [01/Mar/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 5 "-" "x"'
    common = '1.2.3.4 - - [01/Mar/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 5'
    vhost = 'a.example:443 ' + combined
    assert detect_format([combined] * 3).name == "combined"  # type: ignore[union-attr]
    assert detect_format([common] * 3).name == "common"  # type: ignore[union-attr]
    assert detect_format([vhost] * 3).name == "vhost_combined"  # type: ignore[union-attr]
    mail = "Mar  1 10:00:05 mx postfix/smtpd[12]: connect from x[192.0.2.1]"
    assert detect_format([mail] * 3).kind == "mail"  # type: ignore[union-attr]
    assert detect_format(["\x00\x01 binary", "junk"]) is None
    assert format_by_name("squid").name == "squid"
    assert format_by_name('%h "%r" %>s').name == "custom"
    assert format_by_name("$remote_addr $status").name == "custom-nginx"
    with pytest.raises(FormatError):
        format_by_name("no-such-format")


def test_logformat_from_apache_config(tmp_path: Path) -> None:
    conf = tmp_path / "apache2.conf"
    conf.write_text('LogFormat "%v %h %t \\"%r\\" %>s %b" mine\n'
                    'CustomLog /var/log/apache2/a.log mine\n'
                    'CustomLog "/var/log/apache2/b.log" combined\n'
                    'CustomLog /var/log/apache2/c.log "%h %t \\"%r\\" %s"\n', encoding="utf-8")
    got = read_apache_config(conf).formats_by_path
    assert got == {"/var/log/apache2/a.log": '%v %h %t "%r" %>s %b',
                   "/var/log/apache2/b.log": APACHE_FORMATS["combined"],
                   "/var/log/apache2/c.log": '%h %t "%r" %s'}


def test_server_names_from_apache_config(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text("<VirtualHost *:80>\n  ServerName www.Example.com:80\n"
                    "  ServerAlias example.com *.example.com https://shop.example.com\n"
                    "</VirtualHost>\n", encoding="utf-8")
    assert read_apache_config(conf).server_names == {"www.example.com", "example.com",
                                                     "shop.example.com"}


def test_zoneless_stamps_are_wall_time_of_the_zone() -> None:
    """Classic syslog, RFC 3339 without an offset and Exim's mainlog, read in New York:
    10:00:05 EST is 15:00:05 UTC; in July (EDT) 14:00:05 UTC."""
    from zoneinfo import ZoneInfo

    ny = YearGuesser(year=2026, tz=ZoneInfo("America/New_York"))
    for line in ("Mar  1 10:00:05 mx postfix/smtpd[12]: connect from x[192.0.2.1]",
                 "2026-03-01T10:00:05 mx postfix/smtpd[3]: hi",
                 "2026-03-01 10:00:05 1vXyZa-000ABC-12 <= a@b H=(x) [192.0.2.1] P=esmtp"):
        rec = parse_syslog(line, ny)
        assert rec is not None and rec.time == T + 5 * 3600, line
    summer = parse_syslog("Jul  1 10:00:05 mx postfix/smtpd[12]: x", ny)
    assert summer is not None
    assert summer.time == calendar.timegm((2026, 7, 1, 14, 0, 5))
    # an explicit offset wins over the zone
    own = parse_syslog("2026-03-01T11:00:05+01:00 mx postfix/smtpd[3]: hi", ny)
    assert own is not None and own.time == T


# quoted fields as every format compiles them, and the plain alternation they must equal
QUOTED_FORMATS = [*APACHE_FORMATS.values(), '%h "%{Referer}i%{User-agent}i" %>s',
                  '"%{X}i\\"%{Y}i" %h', '"%h" "%t" "%r" %>s "%{Host}i" "%v"']
QUOTED_PIECES = ['"', '\\"', "\\\\", "\\", " ", "-", "x", "a b", '" "', '" 200 "', "\n"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(QUOTED_FORMATS), st.lists(
    st.lists(st.sampled_from(QUOTED_PIECES), max_size=6).map("".join), min_size=3, max_size=3),
    st.sampled_from([
        '1.2.3.4 - - [01/Mar/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "{0}" "{1}"',
        '{2} - - [01/Mar/2026:10:00:00 +0000] "{0}" 200 5', '1.2.3.4 "{0}{1}" 200',
        'h 1.2.3.4 - - [01/Mar/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "{0}" "{1}"',
        '"{0}\\"{1}" 1.2.3.4', '"{0}" "[01/Mar/2026:10:00:00 +0000]" "{1}" 200 "{2}" "{0}"']))
def test_unrolled_quoted_fields_match_as_the_plain_alternation(
        source: str, fields: list[str], template: str) -> None:
    """`_QUOTED` is written unrolled for speed; it must split every line as the textbook
    `(?:[^"\\]|\\.)*` does, two directives in one pair of quotes included."""
    assert formats._QUOTED in compile_apache(APACHE_FORMATS["combined"]).pattern.pattern
    line = template.format(*fields)
    fast = compile_apache(source)
    plain = re.compile(fast.pattern.pattern.replace(formats._QUOTED, r'(?:[^"\\]|\\.)*'))
    a, b = fast.pattern.match(line), plain.match(line)
    assert (a is None) == (b is None)
    assert a is None or b is None or a.groupdict() == b.groupdict()
