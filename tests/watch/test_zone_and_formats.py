"""`watch` reads syslog stamps in the zone it is told (`[watch] tz`, `--tz`), as `logs --tz`
does, and a followed file its format does not parse is an alert and a metric, never silence.

Real logs: the kdent Postfix log (written at UTC-7 in October 2015) and the elastic Apache
log, from /work/shared/data/real-logs.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relayguard.findings import Severity
from relayguard.logs.analyze import LogOptions, analyse
from relayguard.logs.follow import Batch, Position
from relayguard.watch.config import parse_config
from relayguard.watch.daemon import Watcher
from relayguard.watch.engine import Engine
from tests.watch.helpers import REPO

DATA = REPO.parent / "shared/data/real-logs"
KDENT = DATA / "postfix-kdent-2015/mail.log.gz"
ELASTIC = DATA / "apache-elastic-2015/apache_logs.gz"
# mail.log line 4896, `Oct 22 13:29:42 conch postfix/smtpd[29528]: … Relay access denied`,
# written at UTC-7 (Pacific daylight time)
DENIED_LOCAL, DENIED_UTC = "-10-22T13:29:42Z", "-10-22T20:29:42Z"


def _unzip(src: Path, dest: Path, lines: int | None = None) -> Path:
    with gzip.open(src, "rt", encoding="utf-8", errors="surrogateescape") as fh:
        text = fh.read()
    if lines is not None:
        text = "".join(text.splitlines(keepends=True)[:lines])
    dest.write_text(text, encoding="utf-8", errors="surrogateescape")
    return dest


def _rg(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a process whose own zone is UTC: only `tz` can move the stamps."""
    return subprocess.run([sys.executable, "-m", "relayguard", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env={**os.environ, "TZ": "UTC"},
                          check=False)


def _denied_first_seen(tmp_path: Path, name: str, config: str, *args: str) -> str:
    """Watch the kdent log once with `config` (and CLI `args`); the refused relay's time."""
    log = tmp_path / "mail.log"
    if not log.exists():
        _unzip(KDENT, log)
    toml = tmp_path / f"{name}.toml"
    toml.write_text(config, encoding="utf-8")
    state = str(tmp_path / f"{name}.sqlite")
    done = _rg("watch", str(log), "--config", str(toml), "--state", state, "--from-beginning",
               "--once", *args)
    assert done.returncode == 0, done.stderr
    doc = json.loads(_rg("watch", "--status", "--state", state).stdout)
    (denied,) = [i for i in doc["incidents"] if i["kind"] == "smtp-relay-denied"]
    assert [tuple(c) for c in denied["clients"]] == [("1.163.31.151", 1)]
    return str(denied["first_seen"])


def test_tz_reads_mail_stamps_in_the_zone_they_were_written_in(tmp_path: Path) -> None:
    quiet = "[alerts]\nstdout = false\n"
    assert _denied_first_seen(tmp_path, "none", quiet)[4:] == DENIED_LOCAL
    told = _denied_first_seen(tmp_path, "cfg",
                              '[watch]\ntz = "America/Los_Angeles"\n' + quiet)
    assert told[4:] == DENIED_UTC
    # --tz overrides the config, as --state and --metrics do
    cli = _denied_first_seen(tmp_path, "cli", '[watch]\ntz = "Asia/Kathmandu"\n' + quiet,
                             "--tz", "America/Los_Angeles")
    assert cli == told
    # the same code as `logs --tz`: the same instant
    logs = json.loads(_rg("logs", str(tmp_path / "mail.log"), "--tz", "America/Los_Angeles",
                          "--year", told[:4], "-f", "json").stdout)
    (denied,) = [i for i in logs["incidents"] if i["kind"] == "smtp-relay-denied"]
    assert denied["first_seen"] == told


def test_a_bad_zone_is_refused_in_plain_words(tmp_path: Path) -> None:
    toml = tmp_path / "w.toml"
    toml.write_text('[watch]\ntz = "Mars/Olympus"\n', encoding="utf-8")
    done = _rg("watch", "x.log", "--config", str(toml))
    assert done.returncode == 2 and "watch.tz: unknown time zone 'Mars/Olympus'" in done.stderr
    done = _rg("watch", "x.log", "--tz", "Mars/Olympus", "--state", str(tmp_path / "s"))
    assert done.returncode == 2 and "unknown time zone 'Mars/Olympus'" in done.stderr
    assert "Traceback" not in done.stderr


def _feed(engine: Engine, path: Path, lines: list[str], first: int) -> None:
    data = "".join(lines).encode("utf-8", "surrogateescape")
    batch = Batch(str(path), str(path), data, first, len(lines), Position(str(path), 1, 1))
    fmt = engine.format_for(batch)
    assert fmt is not None
    engine.feed(batch, fmt)


@pytest.mark.parametrize("good", [0, 1, 2])
def test_the_threshold_is_the_logs_command_s_own(tmp_path: Path, good: int) -> None:
    """One real Apache line in 21 or fewer parsing under a forced `combined`: watch alerts
    exactly when `logs --log-format combined` makes it an error."""
    web = _unzip(ELASTIC, tmp_path / "web.log", 2).read_text().splitlines(keepends=True)
    mail = _unzip(KDENT, tmp_path / "m.log", 40).read_text().splitlines(keepends=True)
    lines = web[:good] + mail[:21 - good]
    mixed = tmp_path / "mixed.log"
    mixed.write_text("".join(lines), encoding="utf-8")
    engine = Engine(LogOptions(), {str(mixed): "combined"})
    _feed(engine, mixed, lines, 1)
    alerts, _changed = engine.review(0.0, 60, 300, Severity.LOW)
    logs = json.loads(_rg("logs", str(mixed), "--log-format", "combined", "-f", "json").stdout)
    error = any("line(s) parse as" in e["message"] for e in logs["errors"])
    assert error is (good < 2)  # 1 of 21 is under one in twenty; 2 of 21 is not
    assert [a.payload["type"] for a in alerts] == (["format"] if error else [])
    assert engine.unparsable == ([str(mixed)] if error else [])


def test_a_forced_format_that_parses_nothing_alerts_and_counts(tmp_path: Path) -> None:
    access = _unzip(ELASTIC, tmp_path / "access.log", 200)
    out = io.StringIO()
    cfg = parse_config(f'[watch]\nfiles = ["{access}"]\nstart = "beginning"\n'
                       f'state = "{tmp_path / "w.sqlite"}"\n'
                       f'formats = {{ "{access}" = "squid" }}\n[alerts]\nstdout = true\n')
    watcher = Watcher(cfg, stdout=out)
    watcher.run(once=True)
    alerts = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(a["type"], a["event"], a["path"], a["format"]) for a in alerts] == [
        ("format", "unparsed", str(access), "squid")]
    assert alerts[0]["title"] == (f"{access}: only 0 of 200 line(s) parse as squid (the "
                                  "format set in [watch] formats); the rest is not being "
                                  "watched")
    assert watcher.metrics.get("unparsable_files") == 1
    assert "unparsable_files 1" in watcher.metrics.render()
    doc = json.loads(_rg("watch", "--status", "--state", str(tmp_path / "w.sqlite")).stdout)
    assert doc["unparsable"] == [str(access)]


def test_a_file_that_parses_again_is_said_and_can_alert_again(tmp_path: Path) -> None:
    web = _unzip(ELASTIC, tmp_path / "web.log", 40).read_text().splitlines(keepends=True)
    mail = _unzip(KDENT, tmp_path / "m.log", 40).read_text().splitlines(keepends=True)
    path = tmp_path / "access.log"
    engine = Engine(LogOptions(), {str(path): "combined"})
    _feed(engine, path, mail[:10], 1)
    assert engine.unparsable == [str(path)]
    _feed(engine, path, web[:10], 11)
    assert engine.unparsable == [] and engine.errors[-1] == \
        f"{path}: lines parse as combined again"
    _feed(engine, path, mail[10:20], 21)
    alerts = engine.review(0.0, 60, 300, Severity.LOW)[0]
    assert [a.payload["lines"] for a in alerts if a.payload["type"] == "format"] == [10, 10]
    # a state saved before parse windows existed still loads and judges
    state = engine.__getstate__()
    for key in ("parse_windows", "queued_alerts"):
        state.pop(key)
    old = Engine.__new__(Engine)
    old.__setstate__(state)
    _feed(old, path, mail[20:30], 31)
    assert old.unparsable == [str(path)]


def test_a_lone_cr_inside_a_line_neither_splits_it_nor_shifts_line_numbers(tmp_path: Path
                                                                         ) -> None:
    """The real kdent log up to its refused relay (line 4896) with a bare CR put inside line
    10: watch split batches with `bytes.splitlines()`, which breaks at a lone CR, so it saw
    4897 lines and named line 4897 as the evidence; `logs` (split at newlines) says 4896."""
    log = _unzip(KDENT, tmp_path / "mail.log", lines=4896)
    lines = log.read_bytes().split(b"\n")
    lines[9] = lines[9].replace(b" ", b"\r", 1)
    data = b"\n".join(lines)
    log.write_bytes(data)
    engine = Engine(LogOptions(year=2015))
    batch = Batch(str(log), str(log), data, 1, data.count(b"\n"), Position(str(log), 1, 1))
    fmt = engine.format_for(batch)
    assert fmt is not None and fmt.kind == "mail"
    engine.feed(batch, fmt)
    (denied,) = [i for i in engine.analysis.incidents() if i.kind == "smtp-relay-denied"]
    assert [s.line for s in denied.samples()] == [4896]
    report = analyse([str(log)], LogOptions(year=2015))
    assert report.stats["lines"] == engine.counters.lines == 4896
    assert report.stats["parsed"] == engine.counters.parsed
