"""Detector behaviour on annotated sample lines (each sample states the result it must give),
and every logs rule's `bad` example fires it while its `good` example does not."""

from __future__ import annotations

import pickle
from datetime import UTC
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relayguard.logs import detect, incidents
from relayguard.logs.analyze import LogOptions, analyse
from relayguard.logs.detect import blocklist_name, split_hostport
from relayguard.logs.incidents import Incident, Sample
from relayguard.logs.rules import RULES
from relayguard.report import OutputFormat, render


def run(tmp_path: Path, text: str, name: str = "x.log", **opts: object) -> dict:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    opts.setdefault("tz", UTC)  # the sample mail lines are UTC wall time, wherever this runs
    report = analyse([str(path)], LogOptions(**opts))  # type: ignore[arg-type]
    return {"report": report, "incidents": {i["kind"]: i for i in report.stats["incidents"]},
            "rules": sorted(f.rule for f in report.findings)}


@pytest.mark.parametrize("rule", [r for r in RULES if r.bad], ids=lambda r: r.id)
def test_rule_examples_fire_and_stay_quiet(rule, tmp_path: Path) -> None:
    got = run(tmp_path, rule.bad + "\n", year=2026)
    assert rule.id in got["rules"], got["rules"]
    if rule.good:
        assert rule.id not in run(tmp_path, rule.good + "\n", year=2026)["rules"]


def test_split_hostport() -> None:
    assert split_hostport("MX.Example.NET.:25") == ("mx.example.net", 25)
    assert split_hostport("[2001:db8::1]:587") == ("2001:db8::1", 587)
    assert split_hostport("2001:db8::1") == ("2001:db8::1", None)
    assert split_hostport("user:pw@host:99999999") == ("host", None)
    assert split_hostport("host", 80) == ("host", 80)
    # remembered answers are the same answers, per default port, and the memory is bounded
    assert split_hostport("host", 443) == ("host", 443)
    assert split_hostport("MX.Example.NET.:25") == ("mx.example.net", 25)
    for i in range(5000):
        assert split_hostport(f"mx{i}.example:{i % 65536}") == (f"mx{i}.example", i % 65536)
    assert len(detect._HOSTPORTS) <= 4096


target_text = st.lists(st.sampled_from(["@", "[", "]", ":", ".", "0", "25", "65535", "9999999",
                                        "mx", "MX", "Ex", "-", " ", "::1", "\u00e9", "\u00b2",
                                        "\u212a", "100000", "]x", "[a]"]),
                       max_size=10).map("".join)


@pytest.mark.skipif(detect._fastscan is None, reason="C scanner not built (no compiler)")
@settings(max_examples=1500, deadline=None)
@given(target_text, st.sampled_from([None, 80, 443]))
def test_fuzz_split_hostport_in_c_as_in_python(text: str, default: int | None) -> None:
    """The C parser of request targets answers as the Python reference, or leaves the text
    (not ASCII: `lower()` there is Unicode's) to it."""
    got = detect._fastscan.split_hostport(text, default)
    if text.isascii():
        assert got == detect._split_hostport(text, default)
        assert type(got[1]) is type(detect._split_hostport(text, default)[1])
    else:
        assert got is None
    assert split_hostport(text, default) == detect._split_hostport(text, default)


def test_connect_answered_like_get_is_served_locally(tmp_path: Path) -> None:
    """Ubuntu Forums 2006: `CONNECT mx:25` -> 200 1383, Apache answering as for GET /."""
    text = ('192.0.2.1 - - [30/Oct/2006:10:00:00 +0000] "GET / HTTP/1.1" 200 1383 "-" "-"\n'
            '203.0.113.4 - - [30/Oct/2006:10:01:00 +0000] "CONNECT mx3.mail2000.com.tw:25 '
            'HTTP/1.0" 200 1383 "-" "-"\n')
    got = run(tmp_path, text)
    assert got["incidents"]["proxy-smtp"]["outcomes"] == {"local": 1}
    assert got["rules"] == ["LOGS-PROXY-SCAN"]
    assert got["report"].findings[0].severity.label == "info"


def test_absolute_uri_same_size_for_different_hosts_is_local(tmp_path: Path) -> None:
    lines = "".join(f'203.0.113.{i} - - [01/Mar/2026:10:00:0{i} +0000] "GET http://site{i}.'
                    f'example/ HTTP/1.1" 200 4242 "-" "-"\n' for i in range(4))
    got = run(tmp_path, lines)
    assert got["incidents"]["proxy-http"]["outcomes"] == {"local": 4}
    assert got["incidents"]["proxy-http"]["verdict"] == "probably served locally"
    single = run(tmp_path, lines.splitlines(keepends=True)[0])
    assert single["incidents"]["proxy-http"]["verdict"] == "unknown"
    assert single["rules"] == ["LOGS-PROXY-HTTP"]
    assert single["report"].findings[0].confidence.label == "possible"
    assert single["report"].findings[0].severity.label == "medium"


def test_host_header_proxying_needs_server_names(tmp_path: Path) -> None:
    fmt = '%h %l %u %t "%r" %>s %b "%{Host}i"'
    text = ('192.0.2.1 - - [01/Mar/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 900 '
            '"www.example.com"\n'
            '203.0.113.9 - - [01/Mar/2026:10:00:01 +0000] "GET / HTTP/1.1" 200 51234 '
            '"www.victim.example"\n'
            '203.0.113.9 - - [01/Mar/2026:10:00:02 +0000] "GET /x HTTP/1.1" 200 777 '
            '"shop.victim.example"\n')
    quiet = run(tmp_path, text, log_format=fmt)
    assert quiet["incidents"] == {}
    got = run(tmp_path, text, log_format=fmt, server_names=frozenset({"www.example.com"}))
    inc = got["incidents"]["proxy-host-header"]
    # "/" is a local page of a stable size (900): 51234 is not it. "/x" is unknown locally.
    assert inc["events"] == 2 and inc["outcomes"] == {"relayed": 1, "unknown": 1}
    assert got["rules"] == ["LOGS-PROXY-HOST-HEADER"]


MAIL_HEAD = "Mar  1 10:00:{s:02d} mx postfix/smtpd[7]: "


def test_sasl_burst_only_above_threshold(tmp_path: Path) -> None:
    def fails(n: int, ip: str) -> str:
        return "".join(MAIL_HEAD.format(s=i) + f"warning: unknown[{ip}]: SASL LOGIN "
                       "authentication failed: UGFzc3dvcmQ6\n" for i in range(n))

    few = run(tmp_path, fails(9, "192.0.2.66"), year=2026)
    assert few["rules"] == [] and few["incidents"]["smtp-sasl-failures"]["events"] == 9
    burst = run(tmp_path, fails(12, "192.0.2.66") + fails(3, "192.0.2.67"), year=2026)
    assert burst["rules"] == ["LOGS-SMTP-SASL-BURST"]
    inc = burst["incidents"]["smtp-sasl-failures"]
    assert inc["burst_clients"] == ["192.0.2.66"] and inc["events"] == 15


def test_outbound_blocklist_bounce_vs_inbound_reject(tmp_path: Path) -> None:
    inbound = (MAIL_HEAD.format(s=1) + "NOQUEUE: reject: RCPT from x.example[198.51.100.9]: "
               "554 5.7.1 Service unavailable; Client host [198.51.100.9] blocked using "
               "zen.spamhaus.org; https://www.spamhaus.org/query/ip/198.51.100.9; "
               "from=<a@x.example> to=<me@example.com> proto=ESMTP helo=<x>\n")
    got = run(tmp_path, inbound, year=2026)
    assert got["rules"] == [] and got["report"].stats["mail"]["inbound_blocklist_rejects"] == 1
    outbound = (
        "Mar  1 10:00:02 mx postfix/smtp[9]: 4AB12: to=<u@outlook.example>, "
        "relay=mx.outlook.example[192.0.2.44]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.7.1, "
        "status=bounced (host mx.outlook.example[192.0.2.44] said: 550 5.7.1 Unfortunately, "
        "messages from [203.0.113.1] weren't sent. Please contact your Internet service "
        "provider since part of their network is on our block list (S3150). (in reply to "
        "MAIL FROM command))\n"
        "Mar  1 10:00:03 mx postfix/smtp[9]: 4AB13: to=<v@b.example>, relay=mx.b.example"
        "[192.0.2.45]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.1, status=deferred (host "
        "mx.b.example[192.0.2.45] said: 450 4.7.1 Client host [203.0.113.1] blocked using "
        "bl.spamcop.net (in reply to RCPT TO command))\n"
        "Mar  1 10:00:04 mx postfix/smtp[9]: 4AB14: to=<w@c.example>, relay=mx.c.example"
        "[192.0.2.46]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.1.1, status=bounced (host "
        "mx.c.example[192.0.2.46] said: 550 5.1.1 no such user (in reply to RCPT TO command))\n")
    got = run(tmp_path, outbound, year=2026)
    assert got["rules"] == ["LOGS-SMTP-BLOCKLISTED"]
    inc = got["incidents"]["smtp-blocklist-bounce"]
    assert inc["events"] == 2
    assert inc["lists"] == {"Microsoft (S3150)": 1, "bl.spamcop.net": 1}
    assert blocklist_name("listed at b.barracudacentral.org") == "b.barracudacentral.org"
    assert blocklist_name("Too many spams from your IP") == "unnamed"


def test_greeting_refusal_is_outbound_and_postscreen_dnsbl_is_inbound(tmp_path: Path) -> None:
    """The reviewer's lines: a remote MX refusing at the greeting (Postfix: `refused to talk to
    me`, Exim: `after initial connection`) says WE are listed; postscreen refusing a listed
    client is our server blocking someone (inbound), like smtpd's rejects."""
    text = (
        "Mar  1 10:00:02 mx postfix/smtp[101]: 4A1B2C3D4E: to=<u@gmail.com>, relay=gmail-smtp-"
        "in.l.google.com[142.250.1.26]:25, delay=1, delays=0/0/1/0, dsn=4.0.0, status=deferred "
        "(host gmail-smtp-in.l.google.com[142.250.1.26] refused to talk to me: 554 5.7.1 "
        "Service unavailable; Client host [198.51.100.4] blocked using zen.spamhaus.org; "
        "https://www.spamhaus.org/query/ip/198.51.100.4)\n"
        "Mar  1 10:00:04 mx postfix/postscreen[102]: NOQUEUE: reject: RCPT from [192.0.2.5]:"
        "4242: 550 5.7.1 Service unavailable; client [192.0.2.5] blocked using "
        "zen.spamhaus.org; from=<x@y.test>, to=<me@mx.test>, proto=ESMTP, helo=<y>\n")
    got = run(tmp_path, text, year=2026)
    assert got["rules"] == ["LOGS-SMTP-BLOCKLISTED"]
    inc = got["incidents"]["smtp-blocklist-bounce"]
    assert inc["events"] == 1 and inc["lists"] == {"zen.spamhaus.org": 1}
    assert inc["destinations"] == [("gmail-smtp-in.l.google.com[142.250.1.26]", 1)]
    mail = got["report"].stats["mail"]
    assert mail["inbound_blocklist_rejects"] == 1 and mail["rejects"] == 1
    exim = ("2026-03-01 10:00:06 1vAbCd-000001-AB == z@blk.example R=dnslookup T=remote_smtp "
            "defer (-44) H=mx.blk.example [192.0.2.9]: SMTP error from remote mail server after "
            "initial connection: 554 5.7.1 Client host [203.0.113.1] blocked using "
            "bl.spamcop.net\n")
    got = run(tmp_path, exim, name="mainlog")
    assert got["incidents"]["smtp-blocklist-bounce"]["lists"] == {"bl.spamcop.net": 1}
    assert got["incidents"]["smtp-blocklist-bounce"]["destinations"] == [
        ("mx.blk.example[192.0.2.9]", 1)]


def test_exim_mainlog_relay_denied_relayed_and_bounce(tmp_path: Path) -> None:
    text = (
        "2026-03-01 10:00:00 H=(bot) [198.51.100.3] F=<a@b.example> rejected RCPT "
        "<x@other.example>: relay not permitted\n"
        "2026-03-01 10:00:01 1vAbCd-000001-AB <= s@spam.example H=(x) [198.51.100.4] P=esmtp "
        "S=500\n"
        + "".join(f"2026-03-01 10:00:0{2 + i} 1vAbCd-000001-AB => u{i}@d{i}.example R=dnslookup "
                  f"T=remote_smtp H=mx.d{i}.example [192.0.2.{i}]\n" for i in range(3))
        + "2026-03-01 10:00:06 1vAbCd-000001-AB ** z@blk.example R=dnslookup T=remote_smtp "
        "H=mx.blk.example [192.0.2.9]: SMTP error from remote mail server after RCPT "
        "TO:<z@blk.example>: 550 5.7.1 Client host [203.0.113.1] blocked using zen.spamhaus.org\n")
    got = run(tmp_path, text, name="mainlog")
    assert got["report"].stats["by_format"] == {"exim": 6}
    assert got["rules"] == ["LOGS-SMTP-BLOCKLISTED", "LOGS-SMTP-RELAY-DENIED",
                            "LOGS-SMTP-RELAYED"]
    relayed = got["incidents"]["smtp-relayed"]
    assert relayed["client"] == "198.51.100.4" and relayed["foreign_domains"] == 4
    assert relayed["outcomes"] == {"relayed": 3, "refused": 1}


def test_own_domains_and_authenticated_senders_are_not_relay(tmp_path: Path) -> None:
    def msg(qid: str, client: str, extra: str, rcpts: list[str]) -> str:
        out = MAIL_HEAD.format(s=1) + f"{qid}: client=h[{client}]{extra}\n"
        for r in rcpts:
            out += (f"Mar  1 10:00:02 mx postfix/smtp[9]: {qid}: to=<{r}>, relay=m[192.0.2.1]:25,"
                    " delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)\n")
        return out

    rcpts = [f"a@d{i}.example" for i in range(5)]
    authed = msg("AA1", "198.51.100.5", ", sasl_method=PLAIN, sasl_username=bob", rcpts)
    assert run(tmp_path, authed, year=2026)["rules"] == []
    inbound = msg("AA2", "198.51.100.6", "", ["me@example.com", "you@example.com"])
    assert run(tmp_path, inbound, year=2026, mail_domains=frozenset({"example.com"}))[
        "rules"] == []
    two_foreign = msg("AA3", "198.51.100.7", "", ["x@a.example", "y@b.example"])
    assert run(tmp_path, two_foreign, year=2026)["rules"] == []  # below 3 domains: unknown
    assert run(tmp_path, two_foreign, year=2026, mail_domains=frozenset({"example.com"}))[
        "rules"] == ["LOGS-SMTP-RELAYED"]
    trusted = msg("AA4", "198.51.100.8", "", rcpts)
    assert run(tmp_path, trusted, year=2026,
               trusted_clients=frozenset({"198.51.100.8"}))["rules"] == []


def test_volume_spike_against_rolling_baseline(tmp_path: Path) -> None:
    lines = []
    for minute in range(40):
        n = 600 if minute == 30 else 5
        stamp = f"01/Mar/2026:10:{minute:02d}:00 +0000"
        lines += [f'192.0.2.1 - - [{stamp}] "GET / HTTP/1.1" 200 5 "-" "-"\n'] * n
    got = run(tmp_path, "".join(lines))
    spikes = got["report"].stats["volume_spikes"]
    assert [s["start"] for s in spikes] == ["2026-03-01T10:30:00Z"]
    assert spikes[0]["per_minute"] == 600 and spikes[0]["baseline_per_minute"] == 5
    # a finding and an incident a person sees (and `watch` alerts on), not only a stat
    assert got["rules"] == ["LOGS-VOLUME-SPIKE"]
    (f,) = got["report"].findings
    assert (f.category.value, f.severity.label) == ("volume-anomaly", "medium")
    assert f.title.startswith("600 requests/min at the peak, usually 5/min: 600 in 1 minute(s)")
    inc = got["incidents"]["volume-spike"]
    assert (inc["events"], inc["first_seen"], inc["verdict"]) == (600, "2026-03-01T10:30:00Z",
                                                                 "observed")
    text = render(got["report"], OutputFormat.TEXT)
    assert "LOGS-VOLUME-SPIKE" in text and "volume-spike: 600 event(s)" in text
    # a gap in the log (downtime) followed by ordinary traffic is no spike: the quiet hours
    # are not a baseline
    busy = [f'192.0.2.1 - - [01/Mar/2026:{h:02d}:{m:02d}:00 +0000] "GET / HTTP/1.1" 200 5 '
            f'"-" "-"\n' * 400 for h in (8, 11) for m in range(15)]
    assert run(tmp_path, "".join(busy))["rules"] == []


def test_deferred_and_bounced_spike_is_a_finding(tmp_path: Path) -> None:
    def failed(minute: int, i: int) -> str:
        return (f"Mar  1 10:{minute:02d}:{i % 60:02d} mx postfix/smtp[9]: Q{minute}X{i}: "
                f"to=<u{i}@d{i}.example>, relay=mx.d.example[192.0.2.7]:25, delay=1, "
                "delays=0/0/0/1, dsn=4.7.0, status=deferred (host mx.d.example[192.0.2.7] "
                "said: 421 4.7.0 Try again later (in reply to RCPT TO command))\n")
    lines = [failed(m, i) for m in range(20) for i in range(2)]
    lines += [failed(25, i) for i in range(45)]
    got = run(tmp_path, "".join(lines), year=2026)
    assert got["rules"] == ["LOGS-MAIL-FAILURE-SPIKE"]
    inc = got["incidents"]["mail-outcome-spike"]
    assert (inc["events"], inc["first_seen"], inc["baseline_per_minute"]) == (
        45, "2026-03-01T10:25:00Z", 2.0)


def test_sendmail_and_exim_through_syslog(tmp_path: Path) -> None:
    text = ("Mar  1 10:00:01 web sendmail[99]: t1ABC: ruleset=check_rcpt, arg1=<x@far.example>, "
            "relay=bad.example [198.51.100.20], reject=550 5.7.1 <x@far.example>... Relaying "
            "denied. IP name lookup failed [198.51.100.20]\n"
            "Mar  1 10:00:02 mx exim[5]: 2026-03-01 10:00:02 H=(bot) [198.51.100.21] "
            "F=<a@b.example> rejected RCPT <y@far.example>: relay not permitted\n")
    got = run(tmp_path, text, year=2026)
    assert got["rules"] == ["LOGS-SMTP-RELAY-DENIED"]
    inc = got["incidents"]["smtp-relay-denied"]
    assert sorted(c for c, _ in inc["clients"]) == ["198.51.100.20", "198.51.100.21"]
    assert inc["destinations"] == [("far.example", 2)]


def _abs(i: int, host: str, path: str, size: int, status: int = 200) -> str:
    return (f'203.0.113.{i % 200} - - [01/Mar/2026:10:00:{i % 60:02d} +0000] "GET http://{host}'
            f'{path} HTTP/1.1" {status} {size} "-" "-"\n')


def _local(path: str, size: int, n: int = 1) -> str:
    return "".join(f'192.0.2.1 - - [01/Mar/2026:09:59:{i:02d} +0000] "GET {path} HTTP/1.1" 200 '
                   f'{size} "-" "-"\n' for i in range(n))


@pytest.mark.parametrize(("text", "outcomes"), [
    # a local server answers from its DocumentRoot: the local sizes come back
    (_local("/robots.txt", 120) + _abs(1, "a.example", "/robots.txt", 120), {"local": 1}),
    # one path, two sites, two sizes: not one local page
    (_abs(1, "a.example", "/", 5000) + _abs(2, "b.example", "/", 9000), {"relayed": 2}),
    # three sites, three sizes, three paths
    (_abs(1, "a.example", "/x", 5000) + _abs(2, "b.example", "/y", 9000)
     + _abs(3, "c.example", "/z", 700), {"relayed": 3}),
    # two sites, different paths and sizes: a local server could do that too
    (_abs(1, "a.example", "/x", 5000) + _abs(2, "b.example", "/y", 9000), {"unknown": 2}),
    # a 43-byte pixel from several ad servers is not "the same local page"
    (_abs(1, "ads1.example", "/p.gif", 43) + _abs(2, "ads2.example", "/p.gif", 43),
     {"unknown": 2}),
    # a dynamic home page (sizes all over the place) answered in its range: local
    ("".join(_local("/", 3000 + 400 * i) for i in range(9)) + _abs(1, "a.example", "/", 4111),
     {"local": 1}),
])
def test_absolute_uri_2xx_judgement(tmp_path: Path, text: str, outcomes: dict) -> None:
    got = run(tmp_path, text)
    assert got["incidents"]["proxy-http"]["outcomes"] == outcomes


def test_judgement_survives_settling_a_full_store(tmp_path: Path) -> None:
    """300 different sizes overflow the 256-group store; settled groups still count."""
    text = "".join(_abs(i, f"shop{i % 7}.example", f"/item/{i}", 1000 + 37 * i)
                   for i in range(300))
    got = run(tmp_path, text)
    assert got["incidents"]["proxy-http"]["outcomes"] == {"relayed": 300}


def test_connect_200_with_one_body_for_many_targets_is_local(tmp_path: Path) -> None:
    """Old Apache answering CONNECT like GET /, without any local GET / to compare with."""
    text = "".join(f'203.0.113.{i} - - [01/Mar/2026:10:00:0{i} +0000] "CONNECT mx{i}.example:25 '
                   f'HTTP/1.0" 200 2326 "-" "-"\n' for i in range(3))
    got = run(tmp_path, text)
    assert got["incidents"]["proxy-smtp"]["outcomes"] == {"local": 3}
    assert [(f.rule, f.severity.label) for f in got["report"].findings] == \
        [("LOGS-PROXY-SCAN", "info")]
    one = run(tmp_path, text.splitlines(keepends=True)[0])
    assert one["incidents"]["proxy-smtp"]["outcomes"] == {"unknown": 1}


def test_connect_sizes_of_debians_stock_format(tmp_path: Path) -> None:
    """Debian's `combined` logs %O: a tunnel's bytes, never "-". Three targets with three
    sizes unlike the home page are tunnels; one such line alone cannot be told from a local
    answer unless the log shows it is %O (a 304 with a size) and the size is below anything the
    server wrote itself."""
    home = '127.0.5.21 - - [01/Mar/2026:10:00:01 +0000] "GET / HTTP/1.1" 200 11173 "-" "-"\n'
    tunnels = "".join(f'127.0.5.31 - - [01/Mar/2026:10:00:0{3 + i} +0000] "CONNECT 203.0.113.'
                      f'{5 + i}:25 HTTP/1.0" 200 {size} "-" "-"\n'
                      for i, size in enumerate((187, 4523, 9012)))
    got = run(tmp_path, home + tunnels)
    assert got["incidents"]["proxy-smtp"]["outcomes"] == {"relayed": 3}
    one = home + tunnels.splitlines(keepends=True)[0]
    assert run(tmp_path, one)["incidents"]["proxy-smtp"]["outcomes"] == {"unknown": 1}
    revalidated = '127.0.5.21 - - [01/Mar/2026:10:00:02 +0000] "GET / HTTP/1.1" 304 214 "-" "-"\n'
    refused = ('127.0.5.52 - - [01/Mar/2026:10:00:09 +0000] "CONNECT 203.0.113.5:22 HTTP/1.0" '
               '403 535 "-" "-"\n')
    for fast in (True, False):
        got = run(tmp_path, home + revalidated + tunnels.splitlines(keepends=True)[0] + refused,
                  fast=fast)
        assert got["incidents"]["proxy-smtp"]["outcomes"] == {"relayed": 1}  # 187 < 535
    upstream = home.replace("11173", "10900") + revalidated.replace("304 214", "304 -")
    got = run(tmp_path, upstream + tunnels.splitlines(keepends=True)[0] + refused)
    assert got["incidents"]["proxy-smtp"]["outcomes"] == {"unknown": 1}  # %b: a body of 187


def _authed_mail(qid: str, hour: int, minute: int, user: str, rcpts: list[str]) -> str:
    stamp = f"Mar  1 {hour:02d}:{minute:02d}:00 mx"
    out = (f"{stamp} postfix/smtpd[7]: {qid}: client=h[198.51.100.9], sasl_method=PLAIN, "
           f"sasl_username={user}\n"
           f"{stamp} postfix/qmgr[8]: {qid}: from=<{user}@example.com>, size=9, nrcpt=1\n")
    for r in rcpts:
        out += (f"{stamp} postfix/smtp[9]: {qid}: to=<{r}>, relay=m[192.0.2.1]:25, delay=1, "
                "delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)\n")
    return out


def test_sender_volume_against_its_own_usual_hour(tmp_path: Path) -> None:
    """Four ordinary hours (two mails to two domains), then an hour to 30 domains: ten times
    its usual, so flagged; the same 30 domains with no history stay below 100 (an app's bulk
    notices look like that) and are not."""
    usual = "".join(_authed_mail(f"Q{h}{m}", h, m, "carol", [f"a@d{m}.example"])
                    for h in range(8, 12) for m in (10, 20))
    burst = _authed_mail("QB", 12, 30, "carol", [f"x@t{i}.example" for i in range(30)])
    got = run(tmp_path, usual + burst, year=2026)
    assert got["rules"] == ["LOGS-SMTP-SENDER-VOLUME"]
    inc = got["incidents"]["smtp-sender-volume"]
    assert inc["reasons"] == ["30 foreign domains within an hour, usually 2"]
    assert inc["hour_start"] == "2026-03-01T12:30:00Z"
    # hours of activity run from their first delivery: 8:10-9:10 holds three mails
    assert inc["usual_per_hour"] == {"deliveries": 3, "foreign_domains": 2}
    assert run(tmp_path, burst, year=2026)["rules"] == []
    assert run(tmp_path, usual, year=2026)["rules"] == []


def test_incident_keeps_first_samples_and_the_latest_across_pickling() -> None:
    """Events pass their line as a plain tuple; the first three and the latest come back as
    Samples, also from an incident pickled mid-way (as `watch` saves it) and from old state
    whose tail is already a Sample."""
    inc = Incident("proxy-smtp")
    for i in range(1, 6):
        inc.add(float(i), "192.0.2.1", "mx.example:25", ("a.log", i, f"line {i}"))
        if i == 4:
            inc = pickle.loads(pickle.dumps(inc))
    got = inc.samples()
    assert got == [Sample("a.log", 1, "line 1"), Sample("a.log", 2, "line 2"),
                   Sample("a.log", 3, "line 3"), Sample("a.log", 5, "line 5")]
    assert all(isinstance(s, Sample) for s in got)
    inc.add(6.0, "192.0.2.1", "mx.example:25", Sample("a.log", 6, "line 6"))
    assert inc.samples()[-1] == Sample("a.log", 6, "line 6")
    assert inc.to_dict()["samples"][-1] == {"path": "a.log", "line": 6, "text": "line 6"}


@pytest.mark.skipif(detect._fastscan is None, reason="C scanner not built (no compiler)")
@settings(max_examples=1500, deadline=None)
@given(target_text,
       st.sampled_from([None, 0, 99, 100, 200, 204, 299, 300, 304, 399, 400, 403, 499, 500, 502,
                        503, 504, 505, 599, 600, 10**30, -(10**30)]),
       st.sampled_from([None, 0, 1, 512, 10**25]), st.sampled_from([None, 0, 7, 10**25]),
       st.sampled_from(["body", "total", "guess", "other"]))
def test_fuzz_connect_shape_in_c_as_in_python(target: str, status: int | None,
                                              size: int | None, bytes_out: int | None,
                                              unit: str) -> None:
    """What the C says a CONNECT line says is what the Python reference says, value and type
    of every field, or the C leaves the (non-ASCII) target to it."""
    got = detect._fastscan.connect_shape(target, status, size, bytes_out, unit)
    with mock.patch.object(detect, "_fastscan", None), \
            mock.patch.object(detect, "_c_connect_shape", None):
        ref = detect.connect_shape(target, status, size, bytes_out, unit)
    if not target.isascii():
        assert got is None
        return
    assert got == ref
    assert [type(v) for v in got] == [type(v) for v in ref]


connect_row = st.tuples(
    st.sampled_from([None, 1000, 1000.0, 1500.5, 4600, 4600.0, 4601, -2600, 9000, 30000, 500.25,
                     2**53 + 2, 1e300]),
    st.sampled_from(["192.0.2.1", "198.51.100.2", ""]),
    st.sampled_from(["CONNECT"] * 6 + ["GET", None]),  # None: a line that did not parse
    st.sampled_from(["mx.example.net:25", "A.example:443", "[::1]:25", "\u00e9.example:25", "x",
                     "h:587", "mx.example.net.:25", "http://mx.example.net:25/"]),
    st.sampled_from([None, 200, 200, 204, 304, 403, 405, 502, 10**30]),
    st.sampled_from([None, 0, 5, 1234, 10**25]),
    st.sampled_from([None, None, "", "www.Example.com"]),
    st.sampled_from([None, 0, 77]),
    st.integers(1, 10**6),
    st.sampled_from([b"a line", f'1.2.3.4 "{detect.PROBE_USER_AGENT}"'.encode(), b"",
                     f'1.2.3.4 "{detect.PROBE_USER_AGENT}"\r'.encode(), b"\xff\xc3 line\r"]),
).map(lambda r: (r[2] and (r[0], r[1], r[2], r[3], r[4], r[5], r[6], None, None, r[7], None),
                 r[8], r[9]))


def _columns(rows: list) -> tuple[list, list]:
    """`feed_fields`' fields and (line number, raw line) of (fields, number, raw) rows."""
    return [r[0] for r in rows], [(r[1], r[2]) for r in rows]


def _connect_runs(prior: list, rows: list, unit: str, split: int, nearly_full: bool,
                  use_c: bool) -> tuple:
    """The detector after `prior` (Python only), then `rows` in two slices inside
    deferring(), through `connect_run` where it can (use_c) or `_connect_row` and `feed`
    alone: every field of every incident (times' types too), with at most 3 incidents per
    kind."""
    with mock.patch.object(incidents, "MAX_INCIDENTS_PER_KIND", 3), \
            mock.patch.object(detect, "MAX_INCIDENTS_PER_KIND", 3):
        det = detect.ProxyDetector()
        with mock.patch.object(detect, "_c_connect_run", None):
            det.feed_fields(*_columns(prior), unit, "old.log", 0)
        if nearly_full:  # pending stores two short of full
            for inc in det.book.all():
                for j in range(254):
                    inc.add_pending(10_000 + j, "CONNECT x", "h")
        with mock.patch.object(detect, "_c_connect_run",
                               detect._c_connect_run if use_c else None), det.deferring():
            det.feed_fields(*_columns(rows[:split]), unit, "a.log", 1000)
            det.feed_fields(*_columns(rows[split:]), unit, "a.log", 2000)
    book = det.book.all()
    own = det.own_probe
    return ([(i.kind, repr(i.first), repr(i.last), i.events, i.pending, i.seen, i.seen_hosts,
              i.judged, i.outcomes, i.statuses, i.bytes, i.serial, i.head, i.tail,
              i.clients.counts, i.destinations.counts, i.client_count.keys,
              i.smtp_destinations.keys, i.timeline.buckets) for i in book],
            det.size_votes, det.local.smallest, det.learned_names.keys,
            own and (own.requests, own.clients.keys, repr(own.first), repr(own.last)))


needs_connect_run = pytest.mark.skipif(detect._c_connect_run is None,
                                       reason="C scanner not built (no compiler)")


@needs_connect_run
@settings(max_examples=500, deadline=None)
@given(st.lists(connect_row, max_size=8), st.lists(connect_row, min_size=1, max_size=30),
       st.sampled_from(["body", "total", "guess"]), st.integers(0, 30), st.booleans())
def test_fuzz_connect_runs_in_c_as_in_python(prior: list, rows: list, unit: str, split: int,
                                             nearly_full: bool) -> None:
    """`connect_run` (C) takes what it can of a slice of candidate lines and `_connect_row`
    and `feed` the rest: the detector ends as they alone leave it."""
    assert _connect_runs(prior, rows, unit, split, nearly_full, True) == \
        _connect_runs(prior, rows, unit, split, nearly_full, False)


def _row(t: float | None, target: str = "mx.example.net:25", status: int | None = 200,
         size: int | None = None) -> tuple:
    return ((t, "192.0.2.1", "CONNECT", target, status, size, None, None, None, None, None),
            1, b"a line")


@needs_connect_run
@pytest.mark.parametrize(("prior", "rows", "nearly_full"), [
    # a quiet hour to the second, either side of the incident, and a moment more
    *[([_row(1000)], [_row(t), _row(1000)], False) for t in (4600, 4600.5, -2600, -2600.5)],
    ([_row(1000.0), _row(1200)], [_row(-2400.0), _row(-2601), _row(999.5), _row(1000)], False),
    # three incidents, the most a kind keeps here: later times join the last
    ([_row(1000), _row(9000), _row(30000)], [_row(100000), _row(500), _row(30001)], False),
    # the pending store: two more size groups fit, the third settles it first
    ([_row(1000, size=7)], [_row(1001, size=s) for s in (1, 2, 3, 3, 4)], True),
    # four hosts kept per size group
    ([_row(1000)], [_row(1001, target=f"mx{i}.example:25") for i in range(6)], False),
])
def test_connect_runs_at_each_edge_in_c_as_in_python(prior: list, rows: list,
                                                     nearly_full: bool) -> None:
    """Where `connect_run` hands a row back (or must not), with every split of the run."""
    for split in range(len(rows) + 1):
        assert _connect_runs(prior, rows, "body", split, nearly_full, True) == \
            _connect_runs(prior, rows, "body", split, nearly_full, False), split
