"""Real third-party logs (shared/data/real-logs, see its SOURCES.md): quiet where nothing
happened, the two refused relay attempts found, inbound RBL rejects never read as "we are
blocklisted", and the secrepo site's own absolute-URI request not reported for its own name."""

from __future__ import annotations

import calendar
import gzip
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from relayguard.logs import detect
from relayguard.logs.analyze import LogOptions, analyse

DATA = Path("/work/shared/data/real-logs")
if not DATA.is_dir():  # the repository's own copy, when the shared tree is not mounted
    DATA = Path(__file__).resolve().parents[1] / "data" / "real-logs"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="real-logs data set not present")


def test_elastic_apache_log_is_quiet_and_fully_parsed() -> None:
    report = analyse([str(DATA / "apache-elastic-2015" / "apache_logs.gz")])
    assert report.findings == () and report.errors == ()
    assert report.stats["lines"] == 10000
    assert report.stats["parsed"] == 10000 and report.stats["unparsed"] == 0
    assert report.stats["by_format"] == {"combined": 10000}
    assert report.stats["incidents"] == []
    # 17-20 May 2015: the per-minute timeline covers exactly that span despite disorder
    points = report.stats["requests_timeline"]["points"]
    assert points[0][0].startswith("2015-05-17") and points[-1][0].startswith("2015-05-20")
    assert sum(n for _, n in points) == 10000


def test_elastic_line_by_line_agrees_with_fast_path() -> None:
    path = str(DATA / "apache-elastic-2015" / "apache_logs.gz")
    fast = analyse([path])
    slow = analyse([path], LogOptions(fast=False))
    assert slow.findings == ()
    assert fast.stats["requests_timeline"] == slow.stats["requests_timeline"]
    assert slow.stats["parsed"] == 10000


def test_secrepo_own_absolute_uri_is_not_reported_with_server_name() -> None:
    path = str(DATA / "apache-secrepo-2018" / "access-2018-12-15.log.gz")
    named = analyse([path], LogOptions(server_names=frozenset({"www.secrepo.com"})))
    assert not [f for f in named.findings if f.category.value != "volume-anomaly"]
    assert named.stats["own_host_absolute_requests"] == 1
    assert named.stats["lines"] == 4961 and named.stats["unparsed"] == 0
    # the scanners' bursts (16 Dec 00:24 and 00:35-00:40 -0800, against ~2 requests/min)
    # are the one thing to tell: volume anomalies, nothing relayed
    spikes = [(i["kind"], i["events"], i["first_seen"], i["last_seen"])
              for i in named.stats["incidents"]]
    assert spikes == [("volume-spike", 302, "2018-12-16T08:24:00Z", "2018-12-16T08:24:59Z"),
                      ("volume-spike", 2607, "2018-12-16T08:35:00Z", "2018-12-16T08:40:59Z")]
    assert [(f.rule, f.severity.label) for f in named.findings] == \
        [("LOGS-VOLUME-SPIKE", "medium")] * 2
    # without the name it is at most informational: its size matches the local icon
    anon = analyse([path])
    assert sorted((f.rule, f.severity.label) for f in anon.findings) == [
        ("LOGS-PROXY-SCAN", "info")] + [("LOGS-VOLUME-SPIKE", "medium")] * 2
    (inc,) = [i for i in anon.stats["incidents"] if i["kind"] != "volume-spike"]
    assert inc["verdict"] == "probably served locally" and inc["events"] == 1
    assert inc["samples"][0]["line"] == 493


def test_kdent_postfix_two_refused_relay_attempts_no_blocklisting() -> None:
    files = [str(DATA / "postfix-kdent-2015" / n) for n in ("mail.log.gz", "mail2.log.gz",
                                                            "mail3.log.gz")]
    report = analyse(files, LogOptions(year=2015))
    assert report.errors == ()
    assert report.stats["lines"] == 6646 + 11061 + 5222 and report.stats["unparsed"] == 0
    # ten days apart: two incidents, one refused attempt each
    assert [(f.rule, f.category.value) for f in report.findings] == \
        [("LOGS-SMTP-RELAY-DENIED", "relay-abuse")] * 2
    first, second = report.stats["incidents"]
    assert (first["events"], first["clients"]) == (1, [("1.163.31.151", 1)])
    assert (second["events"], second["clients"]) == (1, [("104.208.28.248", 1)])
    assert first["first_seen"].startswith("2015-10-22")
    assert second["first_seen"].startswith("2015-11-01")
    assert first["statuses"] == {"554": 1}
    mail = report.stats["mail"]
    assert mail["inbound_blocklist_rejects"] == 1009 and mail["rejects"] == 1715
    assert mail["bounced"] == 8 and mail["sent"] == 1724
    assert not [f for f in report.findings if f.category.value == "blocklisted"]


def test_spb_amavis_open_relay_keyword_is_not_a_relay() -> None:
    report = analyse([str(DATA / "postfix-spb-2024" / "mail.log")], LogOptions(year=2024))
    assert report.findings == () and report.stats["lines"] == 100
    assert report.stats["unparsed"] == 0


def test_sendmail_bulk_from_localhost_is_not_relay_abuse() -> None:
    report = analyse([str(DATA / "postfix-sendmail-2014" / "maillog.gz")], LogOptions(year=2014))
    assert report.findings == ()
    top = report.stats["mail"]["top_senders"]
    assert top[0][0] == "no-reply@grooveshark.com"
    assert report.stats["mail"]["deferred"] == 151 and report.stats["mail"]["bounced"] == 2


def test_kdent_top_senders_are_the_true_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1,994 queued messages from 1,002 distinct envelope senders (mostly one-off spam): the
    # per-sender view must give each sender what qmgr logged for it, not counts a too small
    # top-k table inflated (it once named one-message spammers with 29-30 messages)
    files = [str(DATA / "postfix-kdent-2015" / n) for n in ("mail.log.gz", "mail2.log.gz",
                                                            "mail3.log.gz")]
    mail = analyse(files, LogOptions(year=2015)).stats["mail"]
    assert [tuple(x) for x in mail["top_senders"][:5]] == [
        ("<>", 216), ("NewDentalTips@implanttips.seenewdentalimplantinfo.eu", 28),
        ("BelizeVacations@newvacation.amazingbelizetrips.eu", 16),
        ("YourNewBonus@redeempoints.claimnewonlinebonus.eu", 14), ("jdent@seaglass.com", 14)]
    assert mail["top_senders_approximate"] is False
    assert mail["outbound_by_sender_approximate"] is False
    # a table too small for the senders says its counts are estimates
    monkeypatch.setattr(detect, "SENDER_KEYS", 64)
    small = analyse(files, LogOptions(year=2015)).stats["mail"]
    assert small["top_senders_approximate"] is True


def test_a_window_inside_one_minute_keeps_that_minute() -> None:
    # the scanners' burst of 16 Dec 2018 00:24 -0800: 302 requests in that minute, 241 of them
    # between :10 and :50. The fast path counts whole minutes, so a minute overlapping the
    # window counts whole; it once dropped a minute neither of whose ends was inside
    path = str(DATA / "apache-secrepo-2018" / "access-2018-12-15.log.gz")
    window = LogOptions(since=calendar.timegm((2018, 12, 16, 8, 24, 10)),
                        until=calendar.timegm((2018, 12, 16, 8, 24, 50)))
    fast = analyse([path], window).stats["requests_timeline"]["points"]
    assert [tuple(p) for p in fast] == [("2018-12-16T08:24:00Z", 302)]
    window.fast = False
    slow = analyse([path], window).stats["requests_timeline"]["points"]
    assert [tuple(p) for p in slow] == [("2018-12-16T08:24:00Z", 241)]


def test_a_narrow_window_judges_with_the_whole_logs_own_pages() -> None:
    # secrepo's one absolute-URI request (line 493, 01:57:30Z) got the size of the site's own
    # icon: served locally. The line-by-line path (formats with a Host field, ISO stamps)
    # learned the site's pages only inside --since/--until, so a window around the request
    # turned it into a possible proxy use; both paths must judge it as the whole log does
    path = str(DATA / "apache-secrepo-2018" / "access-2018-12-15.log.gz")
    moment = calendar.timegm((2018, 12, 16, 1, 57, 30))
    for fast in (True, False):
        report = analyse([path], LogOptions(since=moment, until=moment, fast=fast))
        assert [(f.rule, f.severity.label) for f in report.findings] == [
            ("LOGS-PROXY-SCAN", "info")], fast
        (inc,) = report.stats["incidents"]
        assert inc["verdict"] == "probably served locally" and inc["samples"][0]["line"] == 493
        assert report.stats["own_host_absolute_requests"] == 0


def test_mail_accepted_before_the_window_and_delivered_in_it_keeps_its_story() -> None:
    # kdent's first message: smtpd `client=` and qmgr `from=` at 02:30:02-03 -0700, the smtp
    # delivery at 02:30:05. A window from :05 on once dropped the message's client and sender
    # (they were outside it), so its delivery belonged to nobody; queued mail is often
    # delivered long after it was accepted (retries), so that would lose relay evidence
    path = str(DATA / "postfix-kdent-2015" / "mail.log.gz")
    sender = "bounce-7674096_HTML-718167168-58077078-10194953-2@bounce.vetstreetmail.com"
    opts = LogOptions(year=2015, tz=ZoneInfo("America/Los_Angeles"),
                      since=calendar.timegm((2015, 10, 22, 9, 30, 5)),
                      until=calendar.timegm((2015, 10, 22, 9, 31, 0)))
    mail = analyse([path], opts).stats["mail"]
    assert mail["sent"] == 1
    assert [tuple(x) for x in mail["outbound_by_sender"]] == [(sender, 1)]
    # events stay in the window: the sender's queueing (02:30:03) is not one of them
    assert mail["top_senders"] == [] and mail["rejects"] == 0


def test_one_file_named_twice_is_read_once(tmp_path: Path) -> None:
    # `access.log ./access.log`, a symlinked log directory (/var/log/httpd ->
    # /var/log/apache2), a relative and an absolute path: one file, counted once
    path = DATA / "apache-secrepo-2018" / "access-2018-12-15.log.gz"
    link = tmp_path / "access.log.gz"
    link.symlink_to(path)
    report = analyse([str(path), str(link), f"{path.parent}/./{path.name}"])
    assert report.errors == ()
    assert report.stats["lines"] == 4961 and len(report.stats["files"]) == 1
    (inc,) = [i for i in report.stats["incidents"] if i["kind"] == "proxy-http"]
    assert inc["events"] == 1
    assert [i["events"] for i in report.stats["incidents"] if i["kind"] == "volume-spike"] == \
        [302, 2607]
    assert sum(f"the same file as {path}" in n for n in report.notes) == 2


def test_a_window_that_ends_before_it_starts_is_a_usage_error() -> None:
    # swapped dates would select nothing and say "no findings", exit 0: a clean result from
    # a question that cannot have an answer
    path = str(DATA / "apache-secrepo-2018" / "access-2018-12-15.log.gz")
    proc = subprocess.run([sys.executable, "-m", "relayguard", "logs", path, "-f", "json",
                           "--since", "2018-12-17", "--until", "2018-12-16"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--until" in proc.stderr and "before --since" in proc.stderr


def test_a_log_that_starts_with_a_run_of_nuls_is_still_recognised(tmp_path: Path) -> None:
    """copytruncate under a writer without O_APPEND leaves a hole of NULs before the first
    new line; 1 MiB of them (16 sniffs' worth) made the whole file "not a log format", its
    incidents unreported. Plain and gzipped alike, it now reads as the log it is."""
    real = DATA / "apache-secrepo-2018" / "access-2018-12-15.log.gz"
    original = analyse([str(real)])
    holed = tmp_path / "access.log"
    holed.write_bytes(b"\0" * (1 << 20) + gzip.decompress(real.read_bytes()))
    packed = tmp_path / "access.log.1.gz"
    packed.write_bytes(gzip.compress(holed.read_bytes()))
    for path in (holed, packed):
        got = analyse([str(path)])
        assert got.errors == (), got.errors
        for key in ("lines", "parsed", "by_format"):
            assert got.stats[key] == original.stats[key], key

        def told(stats: dict) -> list:  # the incidents without the file name (in samples, ids)
            return [({k: v for k, v in i.items() if k not in ("samples", "finding")},
                     [(x["line"], x["text"]) for x in i["samples"]]) for i in stats["incidents"]]
        assert told(got.stats) == told(original.stats) and told(got.stats)


@pytest.mark.parametrize("stamp", ["-2015-10-22", ".2015-10-22", "-20151022"])
def test_rotated_files_with_dashed_dates_are_read_oldest_first(stamp: str,
                                                                tmp_path: Path) -> None:
    # logrotate's `dateformat -%Y-%m-%d` (or `.%Y-%m-%d`, as secrepo publishes its logs)
    # next to the live file, in the order a shell glob gives them: the live file (kdent's
    # 1-2 November) sorts first. Read in that order, the 22 October refusal fell behind the
    # November incident and joined it: one incident spanning ten days
    live = tmp_path / "mail.log"
    live.symlink_to(DATA / "postfix-kdent-2015" / "mail2.log.gz")
    old = tmp_path / f"mail.log{stamp}.gz"
    old.symlink_to(DATA / "postfix-kdent-2015" / "mail.log.gz")
    report = analyse(sorted([str(live), str(old)]), LogOptions(year=2015))
    assert [f["path"] for f in report.stats["files"]] == [str(old), str(live)]
    denied = [(i["first_seen"][:10], i["events"]) for i in report.stats["incidents"]
              if i["kind"] == "smtp-relay-denied"]
    assert denied == [("2015-10-22", 1), ("2015-11-02", 1)] or \
        denied == [("2015-10-22", 1), ("2015-11-01", 1)]


def test_an_earlier_log_read_later_opens_its_own_incident() -> None:
    # two servers' logs (or sets named apart) are read in the order given: here November's
    # before October's. October's refusal, ten days before the November incident, once
    # joined it (a step back in time was taken for the disorder within a busy log)
    names = ("mail2.log.gz", "mail.log.gz")
    report = analyse([str(DATA / "postfix-kdent-2015" / n) for n in names],
                     LogOptions(year=2015))
    denied = sorted((i["first_seen"][:10], i["last_seen"][:10], i["events"], i["clients"])
                    for i in report.stats["incidents"] if i["kind"] == "smtp-relay-denied")
    assert [(a, b, n) for a, b, n, _ in denied] in (
        [("2015-10-22", "2015-10-22", 1), ("2015-11-01", "2015-11-01", 1)],
        [("2015-10-22", "2015-10-22", 1), ("2015-11-02", "2015-11-02", 1)])
    assert [c for *_, c in denied] == [[("1.163.31.151", 1)], [("104.208.28.248", 1)]]
    assert len(report.findings) == 2


@pytest.mark.parametrize("value", ["10.0.0.0/8", "mail.example.com"])
def test_a_trusted_client_that_is_no_address_is_a_usage_error(value: str) -> None:
    # it was matched as a literal string against client IPs: a network (as Postfix's
    # mynetworks is written) or a name trusted nothing, silently
    path = str(DATA / "postfix-kdent-2015" / "mail.log.gz")
    proc = subprocess.run([sys.executable, "-m", "relayguard", "logs", path, "-f", "json",
                           "--trusted-client", value],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"--trusted-client {value!r} is not an IP address" in proc.stderr


def test_crlf_logs_give_evidence_without_carriage_returns(tmp_path: Path) -> None:
    # a log copied through a Windows machine ends its lines with CR LF; the CR is no part of
    # the line, and printed in a sample it sends the terminal back to the start of the line,
    # over the client's address
    originals = {}
    for name, source in (("access.log", "apache-secrepo-2018/access-2018-12-15.log.gz"),
                         ("mail.log", "postfix-kdent-2015/mail.log.gz")):
        data = gzip.decompress((DATA / source).read_bytes())
        originals[name] = data.decode().split("\n")
        (tmp_path / name).write_bytes(data.replace(b"\n", b"\r\n"))
    web, mail = tmp_path / "access.log", tmp_path / "mail.log"
    for fast in (True, False):
        report = analyse([str(web), str(mail)], LogOptions(year=2015, fast=fast))
        samples = {i["kind"]: i["samples"][0] for i in report.stats["incidents"]
                   if i["kind"] in ("proxy-http", "smtp-relay-denied")}
        assert samples["proxy-http"]["line"] == 493
        assert samples["proxy-http"]["text"] == originals["access.log"][492]
        assert samples["smtp-relay-denied"]["line"] == 4896
        assert samples["smtp-relay-denied"]["text"] == originals["mail.log"][4895]
        assert report.stats["unparsed"] == 0
        # Postfix's delivery lines end `status=sent (…)`: with the CR they were not read
        mail_counts = report.stats["mail"]
        assert (mail_counts["sent"], mail_counts["deferred"], mail_counts["bounced"]) == \
            (504, 91, 7)


def test_a_volume_spike_names_the_file_that_holds_it(tmp_path: Path) -> None:
    # secrepo's log rotated at line 1200: the 00:24 burst (lines 761-1062) is in
    # access.log.1, the 00:35-00:40 one (lines 1679-4452) in access.log. A spike is counted
    # per minute, so it has no line to point at, but the file is known and was not given
    lines = gzip.decompress(
        (DATA / "apache-secrepo-2018" / "access-2018-12-15.log.gz").read_bytes()
    ).splitlines(keepends=True)
    older, newer = tmp_path / "access.log.1", tmp_path / "access.log"
    older.write_bytes(b"".join(lines[:1200]))
    newer.write_bytes(b"".join(lines[1200:]))
    for fast in (True, False):
        report = analyse([str(newer), str(older)], LogOptions(fast=fast))
        spikes = [f for f in report.findings if f.rule == "LOGS-VOLUME-SPIKE"]
        assert [(f.location.path, f.location.line) for f in spikes] == [
            (str(older), None), (str(newer), None)], fast
        assert f"in {older}" in spikes[0].evidence[0].text


def test_analysis_state_pickled_before_this_version_still_runs() -> None:
    # `watch` keeps its LogAnalysis pickled across restarts and upgrades: state from before
    # the per-file spans, per-set years, reject_warnings count and distinct-client count
    # existed must load and go on
    import pickle

    from relayguard.logs.analyze import LogAnalysis

    old = LogAnalysis(LogOptions(year=2015))
    old.analyse_path(str(DATA / "postfix-kdent-2015" / "mail.log.gz"))
    for name in ("spans", "_years"):
        del old.__dict__[name]
    del old.mail.counts["reject_warnings"]
    for incidents in old.mail.book.by_kind.values():
        for inc in incidents:
            del inc.__dict__["client_count"]
    revived = pickle.loads(pickle.dumps(old))
    revived.analyse_path(str(DATA / "postfix-kdent-2015" / "mail2.log.gz"))
    revived.analyse_path(str(DATA / "apache-secrepo-2018" / "access-2018-12-15.log.gz"))
    report = revived.report()
    assert report.errors == () and report.stats["mail"]["rejects"] == 606 + 698
    assert [f.rule for f in report.findings].count("LOGS-SMTP-RELAY-DENIED") == 2
    assert [f.location.path for f in report.findings if f.rule == "LOGS-VOLUME-SPIKE"] == \
        [str(DATA / "apache-secrepo-2018" / "access-2018-12-15.log.gz")] * 2
