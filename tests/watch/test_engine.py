"""Incident pacing (open, rate-limited update, escalation, close), state round trip, config
errors (fuzzed) and the CLI's refusals."""

from __future__ import annotations

import contextlib
import gzip
import pickle
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from relayguard.cli import app
from relayguard.errors import InputError
from relayguard.findings import Severity
from relayguard.logs.analyze import LogOptions
from relayguard.logs.follow import Batch, Position
from relayguard.logs.formats import SNIFF_LIMIT
from relayguard.watch.alerts import backoff
from relayguard.watch.config import parse_config
from relayguard.watch.engine import Engine
from relayguard.watch.metrics import Metrics, parse_listen
from relayguard.watch.state import StateDB
from tests.watch.helpers import state, wait_until, watcher

REPO_DATA = Path(__file__).resolve().parents[1] / "data" / "real-logs"
LINE = '{ip} - - [25/Nov/2026:08:{m:02d}:00 +0000] "{req}" {status} {size} "-" "-"\n'


def _batch(engine: Engine, lines: list[str], start: int = 1) -> None:
    data = "".join(lines).encode()
    b = Batch("a.log", "a.log", data, start, len(lines), Position("a.log", 1, 1))
    fmt = engine.format_for(b)
    assert fmt is not None and fmt.name == "combined"
    engine.feed(b, fmt)


def _events(alerts: list) -> list[tuple[str, str, int]]:
    return [(a.payload["event"], a.payload["incident"]["kind"],
             a.payload["incident"]["events"]) for a in alerts]


def test_open_update_escalate_close() -> None:
    e = Engine(LogOptions())
    ordinary = [LINE.format(ip="10.0.0.1", m=1, req=f"GET /p{i} HTTP/1.1", status=200,
                            size=100) for i in range(5)]
    _batch(e, ordinary)
    assert _events(e.review(0.0, 60, 300, Severity.LOW)[0]) == []
    refused = LINE.format(ip="198.51.100.9", m=2, req="CONNECT mx.example:25 HTTP/1.1",
                          status=405, size=230)
    _batch(e, [refused], 6)
    assert _events(e.review(1.0, 60, 300, Severity.LOW)[0]) == [("open", "proxy-smtp", 1)]
    _batch(e, [refused], 7)
    assert _events(e.review(2.0, 60, 300, Severity.LOW)[0]) == []  # rate-limited
    relayed = LINE.format(ip="198.51.100.9", m=3, req="CONNECT mx.example:25 HTTP/1.1",
                          status=200, size="-")
    _batch(e, [relayed], 8)
    alerts = e.review(3.0, 60, 300, Severity.LOW)[0]
    assert _events(alerts) == [("update", "proxy-smtp", 3)]  # verdict changed: at once
    assert alerts[0].payload["incident"]["verdict"] == "relayed"
    assert alerts[0].payload["finding"]["rule"] == "LOGS-PROXY-SMTP"
    _batch(e, [relayed], 9)
    assert _events(e.review(10.0, 60, 300, Severity.LOW)[0]) == []
    assert _events(e.review(64.0, 60, 300, Severity.LOW)[0]) == [("update", "proxy-smtp", 4)]
    assert _events(e.review(200.0, 60, 300, Severity.LOW)[0]) == []
    assert _events(e.review(311.0, 60, 300, Severity.LOW)[0]) == [("close", "proxy-smtp", 4)]
    assert _events(e.review(900.0, 60, 300, Severity.LOW)[0]) == []
    _batch(e, [relayed], 10)
    # closed incidents are retired: the next burst is a new incident, not the old one reopened
    alerts = e.review(901.0, 60, 300, Severity.LOW)[0]
    assert _events(alerts) == [("open", "proxy-smtp", 1)]
    assert alerts[0].payload["key"] == "proxy-smtp#1"
    assert e.counters.lines == 10 and e.counters.parsed == 10


def test_min_severity_filters_scans() -> None:
    e = Engine(LogOptions())
    _batch(e, [LINE.format(ip="198.51.100.9", m=2, req="CONNECT mx.example:25 HTTP/1.1",
                           status=405, size=230)])
    assert e.review(0.0, 60, 300, Severity.HIGH)[0] == []  # a refused scan is low


def test_engine_survives_the_state_database(tmp_path: Path) -> None:
    e = Engine(LogOptions(), line_digest=True)
    _batch(e, [LINE.format(ip="198.51.100.9", m=2, req="CONNECT mx.example:25 HTTP/1.1",
                           status=200, size="-")])
    e.review(0.0, 60, 300, Severity.LOW)
    db = StateDB(str(tmp_path / "s.sqlite"))
    pos = Position("a.log", 1, 2, offset=120, head="ab", head_len=120, lineno=1)
    db.checkpoint({"a.log": [pos]}, e, [("id1", {"x": 1})], ["stdout", "email"])
    db.close()
    db = StateDB(str(tmp_path / "s.sqlite"))
    back = db.load_detectors()
    assert isinstance(back, Engine) and back.counters.digest == e.counters.digest
    assert [i.to_dict() for i in back.analysis.incidents()] == \
        [i.to_dict() for i in e.analysis.incidents()]
    assert back.review(1.0, 60, 300, Severity.LOW)[0] == []  # same incident: no new "open"
    assert db.load_positions() == {"a.log": [pos]}
    assert db.pending_count() == {"email": 1, "stdout": 1}
    db.checkpoint({}, e, [("id1", {"x": 1})], ["stdout", "email"])  # the same alert again
    assert db.pending_count() == {"email": 1, "stdout": 1}  # deduplicated
    db.set_meta("detectors", pickle.dumps("garbage"))
    with pytest.raises(InputError):
        db.load_detectors()
    db.close()


def test_backoff_doubles_and_caps() -> None:
    assert [backoff(n, 1.0, 10.0) for n in range(6)] == [1, 2, 4, 8, 10, 10]


def test_metrics_text_format() -> None:
    m = Metrics()
    m.inc("alerts_sent", 2, channel="email")
    m.set("lag_seconds", 0.25)
    text = m.render()
    assert 'relayguard_watch_alerts_sent_total{channel="email"} 2' in text
    assert "# TYPE relayguard_watch_alerts_sent_total counter" in text
    assert "relayguard_watch_lag_seconds 0.25" in text
    with pytest.raises(InputError):
        parse_listen("nope")
    assert parse_listen("[::1]:9100") == ("::1", 9100)


def test_config_reads_every_section() -> None:
    cfg = parse_config("""
[watch]
files = ["/var/log/apache2/access.log"]
formats = { "/var/log/apache2/access.log" = "vhost_combined" }
[incidents]
min_severity = "high"
[alerts]
[alerts.webhook]
url = "https://hooks.example/x"
[respond]
mode = "nftables"
allow = ["192.0.2.0/24", "2001:db8::1"]
[blocklist]
targets = ["192.0.2.10"]
interval = 600
""")
    assert cfg.alerts.channels() == ["webhook"] and cfg.alerts.min_severity == Severity.HIGH
    assert cfg.respond.dry_run is True and len(cfg.respond.allow) == 2
    assert cfg.blocklist.interval == 600.0


@pytest.mark.parametrize(("text", "message"), [
    ("[watch]\nfilez = []\n", "unknown key(s) in [watch]: filez"),
    ("[watch]\npoll_interval = 0\n", "watch.poll_interval: must be > 0"),
    ("[alerts.webhook]\nurl = \"ftp://x\"\n", "alerts.webhook.url"),
    ("[respond]\nmode = \"iptables\"\n", "respond.mode"),
    ("[respond]\nallow = [\"10.0.0.300\"]\n", "respond.allow"),
    ("[alerts.email]\nhost = \"mx\"\n", "alerts.email: needs host and to"),
    ("[watch\n", "not valid TOML"),
    ("[incidents]\nmin_severity = \"dire\"\n", "unknown severity"),
])
def test_config_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        parse_config(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_config_parser_never_crashes(text: str) -> None:
    with contextlib.suppress(InputError):
        parse_config(text)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["watch", "alerts", "respond", "incidents"]),
                       st.dictionaries(st.sampled_from(
                           ["files", "poll_interval", "stdout", "mode", "allow", "quiet",
                            "timeout", "start", "dry_run"]),
                           st.one_of(st.integers(-5, 5), st.text(max_size=5), st.booleans(),
                                     st.lists(st.text(max_size=5), max_size=2))), max_size=3))
def test_config_wrong_types_are_input_errors(doc: dict) -> None:
    import tomllib

    def dump(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.encode("unicode_escape").decode().replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(dump(x) for x in v) + "]"
        return str(v)

    text = "".join(f"[{sec}]\n" + "".join(f"{k} = {dump(v)}\n" for k, v in body.items())
                   for sec, body in doc.items())
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    with contextlib.suppress(InputError):
        parse_config(text)


def test_cli_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["watch", "--state", str(tmp_path / "s.sqlite")])
    assert res.exit_code == 2 and "no file to follow" in res.output
    bad = tmp_path / "w.toml"
    bad.write_text("[respond]\nmode = 1\n")
    res = runner.invoke(app, ["watch", "x.log", "--config", str(bad)])
    assert res.exit_code == 2 and "respond.mode: expected str" in res.output
    res = runner.invoke(app, ["watch", "x.log", "--state", str(tmp_path / "s2.sqlite"),
                              "--metrics", "nope"])
    assert res.exit_code == 2 and "ADDR:PORT" in res.output
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    res = runner.invoke(app, ["watch", "--status", "--state", str(tmp_path / "junk.sqlite")])
    assert res.exit_code == 2 and "cannot open the state database" in res.output
    # the log directory instead of its logs: a usage error, not a traceback
    res = runner.invoke(app, ["watch", str(tmp_path), "--state", str(tmp_path / "s3.sqlite"),
                              "--once"])
    assert res.exit_code == 2 and "is a directory" in res.output \
        and str(tmp_path / "access.log") in res.output


def test_cli_once_and_status(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(LINE.format(ip="198.51.100.9", m=2, req="CONNECT mx.example:25 HTTP/1.1",
                               status=200, size="-") * 3)
    db = str(tmp_path / "s.sqlite")
    runner = CliRunner()
    res = runner.invoke(app, ["watch", str(log), "--state", db, "--from-beginning", "--once"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["watch", "--status", "--state", db])
    import json

    doc = json.loads(res.stdout)
    assert doc["lines"] == 3 and doc["incidents"][0]["events"] == 3
    assert doc["positions"][str(log)][0]["offset"] == log.stat().st_size


def test_once_fails_while_an_alert_is_undelivered_and_delivers_it_next_run(tmp_path: Path
                                                                          ) -> None:
    """`watch --once` from cron: an alert its channel refused makes the run exit 2 and say
    so (before: exit 0, the failure only in a retry warning); the alert stays queued in the
    state file and goes out on the next run once the channel works."""
    log = tmp_path / "access.log"
    log.write_text(LINE.format(ip="198.51.100.9", m=2, req="CONNECT mx.example:25 HTTP/1.1",
                               status=200, size="-"))
    got = tmp_path / "got.json"
    broken, working = tmp_path / "broken.toml", tmp_path / "working.toml"
    broken.write_text('[alerts]\ncommand = { argv = ["sh", "-c", "exit 3"] }\n')
    working.write_text(f'[alerts]\ncommand = {{ argv = ["sh", "-c", "cat >> {got}"] }}\n')
    args = [str(log), "--state", str(tmp_path / "s.sqlite"), "--from-beginning", "--once"]
    runner = CliRunner()
    res = runner.invoke(app, ["watch", "-c", str(broken), *args])
    assert res.exit_code == 2, res.output
    assert "1 alert(s) could not be delivered" in res.output and not got.exists()
    # a channel taken out of the config leaves its queue behind: not a failure of this run
    res = runner.invoke(app, ["watch", *args])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["watch", "-c", str(working), *args])
    assert res.exit_code == 0, res.output
    assert got.read_text().count('"event": "open"') == 1  # delivered once, not re-raised


def test_a_log_behind_a_run_of_nuls_is_watched_and_endless_junk_is_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A copytruncate hole of NULs longer than a read made the first batch undecidable, and
    the file was called "not a log format" and left unwatched for good: now junk-only
    batches are counted as unparsed and the format is decided by the first real lines. A
    file that is junk for more than SNIFF_LIMIT bytes is still named as unknown."""
    real = Path("/work/shared/data/real-logs/apache-secrepo-2018/access-2018-12-15.log.gz")
    if not real.exists():
        real = REPO_DATA / "apache-secrepo-2018" / "access-2018-12-15.log.gz"
    holed, junk = tmp_path / "access.log", tmp_path / "junk.log"
    holed.write_bytes(b"\0" * (5 << 20) + gzip.decompress(real.read_bytes()))
    junk.write_bytes(b"\0" * (SNIFF_LIMIT + (1 << 20)))
    db = tmp_path / "s.sqlite"
    res = CliRunner().invoke(app, ["watch", str(holed), str(junk), "--state", str(db),
                                   "--from-beginning", "--once"])
    assert res.exit_code == 0, res.output
    doc = state(db)
    assert doc["formats"] == {str(holed): "access:combined", str(junk): "unknown:unknown"}
    assert doc["parsed"] == 4961  # every line of the real log
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert said == [f"{junk}: not a log format relayguard knows (set [watch.formats])"]


def test_a_second_watcher_on_the_same_state_is_refused(tmp_path: Path) -> None:
    """Two watchers on one state file would read the same lines and overwrite each other's
    positions: the second is a usage error while the first runs, `--status` still reads the
    state, and once the first is killed (-9: no clean-up) a new watcher starts."""
    log = tmp_path / "access.log"
    log.write_text(LINE.format(ip="198.51.100.9", m=2, req="GET / HTTP/1.1", status=200,
                               size=10))
    db = tmp_path / "s.sqlite"
    args = [str(log), "--state", str(db), "--from-beginning"]
    runner = CliRunner()
    with watcher(tmp_path, args) as first:
        assert wait_until(lambda: state(db).get("lines") == 1, 20)
        res = runner.invoke(app, ["watch", *args, "--once"])
        assert res.exit_code == 2 and "in use by another `relayguard watch`" in res.output
        res = runner.invoke(app, ["watch", "--status", "--state", str(db)])
        assert res.exit_code == 0 and '"lines": 1' in res.output
        first.kill9()
    res = runner.invoke(app, ["watch", *args, "--once"])
    assert res.exit_code == 0, res.output


def test_a_volume_spike_opens_an_incident_and_alerts() -> None:
    """Requests per minute far above the baseline: watch alerts, as `logs` reports it."""
    e = Engine(LogOptions())
    for m in range(12):
        _batch(e, [LINE.format(ip="10.0.0.1", m=m, req=f"GET /p{i} HTTP/1.1", status=200,
                               size=100) for i in range(5)], 1 + 5 * m)
    assert _events(e.review(0.0, 60, 300, Severity.LOW)[0]) == []
    flood = [LINE.format(ip="10.0.0.2", m=12, req="GET / HTTP/1.1", status=200, size=100)] * 400
    _batch(e, flood, 61)
    alerts = e.review(1.0, 60, 300, Severity.LOW)[0]
    assert _events(alerts) == [("open", "volume-spike", 400)]
    assert alerts[0].payload["finding"]["rule"] == "LOGS-VOLUME-SPIKE"
    assert alerts[0].payload["finding"]["category"] == "volume-anomaly"
    _batch(e, flood, 461)  # the same minute grows: the same incident
    assert _events(e.review(62.0, 60, 300, Severity.LOW)[0]) == [("update", "volume-spike", 800)]
