"""Syslog stamps have no year. A real Postfix, its clock set by the test (libfaketime),
refuses relay attempts at chosen times. Across New Year's Eve, with `--year` naming the year
the log starts in, the January lines belong to the next year, in one file and across a
rotated pair, as they do when the year is inferred from the file's date. A clock that jumps
back to 1 January for a moment (a machine booting without a real-time clock, until NTP sets
it) is no New Year: the lines after it keep their year."""

from __future__ import annotations

import calendar
import os
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from relayguard.logs.analyze import LogOptions, analyse
from tests.logs.test_real_servers import _smtp, _wait_log
from tests.servers.clock import fake_clock
from tests.servers.postfix import postfix

pytestmark = pytest.mark.server

MTA, CLIENT = "127.0.5.91", "127.0.5.92"
EVE = calendar.timegm((2025, 12, 31, 23, 59, 50))
JUNE = calendar.timegm((2026, 6, 14, 12, 0, 0))
BOOT = calendar.timegm((2026, 1, 1, 0, 0, 12))  # the clock before NTP set it
# the daemons Postfix's master starts get only the environment it imports
FAKETIME_ENV = ("import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C "
                "POSTLOG_SERVICE POSTLOG_HOSTNAME LD_PRELOAD FAKETIME_TIMESTAMP_FILE "
                "FAKETIME_NO_CACHE FAKETIME_DONT_RESET\n")


def _refusals_at(times: tuple[float, ...], keep: Path, tz: str = "UTC") -> str:
    """The maillog of a closed Postfix, in zone `tz`, refusing one relay attempt at each of
    `times`."""
    saved = dict(os.environ)
    with fake_clock() as clock:
        clock.at(times[0])
        os.environ.update({**clock.env(), "TZ": tz})  # what master and its daemons inherit
        try:
            with postfix(MTA, 2525, "mynetworks = 127.0.0.1/32\n" + FAKETIME_ENV) as mta:
                os.environ.clear()
                os.environ.update(saved)
                for n, at in enumerate(times):
                    clock.at(at)
                    replies = _smtp(MTA, 2525, CLIENT, [f"x{n}@far.test"])
                    assert replies[3].startswith("454 4.7.1"), replies
                _wait_log(lambda: mta.log("mail"), "Relay access denied", len(times))
                keep.write_bytes(mta.logs["mail"].read_bytes())
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return keep.read_text()


@pytest.fixture(scope="module")
def new_year_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    keep = tmp_path_factory.mktemp("newyear") / "mail.log"
    text = _refusals_at((EVE, EVE + 20), keep)
    assert "Dec 31 23:59:" in text and "Jan 01 00:00:" in text, text
    yield keep


def _attempts(paths: list[Path], year: int | None) -> tuple[str, str, int]:
    report = analyse([str(p) for p in paths], LogOptions(year=year, tz=UTC))
    (inc,) = [i for i in report.stats["incidents"] if i["kind"] == "smtp-relay-denied"]
    return inc["first_seen"][:16], inc["last_seen"][:16], inc["events"]


def test_year_rolls_over_within_a_file(new_year_log: Path) -> None:
    want = ("2025-12-31T23:59", "2026-01-01T00:00", 2)
    assert _attempts([new_year_log], 2025) == want
    assert _attempts([new_year_log], None) == want  # from the file's date (December 2026)


def test_year_rolls_over_across_a_rotated_pair(new_year_log: Path, tmp_path: Path) -> None:
    # rotated at midnight: December in mail.log.1, January in mail.log
    lines = new_year_log.read_text().splitlines(keepends=True)
    cut = next(i for i, ln in enumerate(lines) if ln.startswith("Jan "))
    (tmp_path / "mail.log.1").write_text("".join(lines[:cut]))
    (tmp_path / "mail.log").write_text("".join(lines[cut:]))
    pair = [tmp_path / "mail.log", tmp_path / "mail.log.1"]
    assert _attempts(pair, 2025) == ("2025-12-31T23:59", "2026-01-01T00:00", 2)


def test_a_clock_reset_to_january_is_no_new_year(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    text = _refusals_at((JUNE + 30, BOOT, JUNE + 330), log)
    assert "Jun 14 12:00:" in text and "Jan 01 00:00:" in text and "Jun 14 12:05:" in text
    os.utime(log, (JUNE + 3600, JUNE + 3600))  # the file's date: that afternoon
    report = analyse([str(log)], LogOptions(tz=UTC))
    got = sorted((i["first_seen"][:16], i["last_seen"][:16], i["events"])
                 for i in report.stats["incidents"] if i["kind"] == "smtp-relay-denied")
    # the boot line is read as this year's 1 January; the June lines after it stay in 2026
    # (they once moved to June 2027, after the file was written), one incident apart from it
    assert got == [("2026-01-01T00:00", "2026-01-01T00:00", 1),
                   ("2026-06-14T12:00", "2026-06-14T12:05", 2)]


def test_new_years_morning_east_of_utc_is_the_new_year(tmp_path: Path) -> None:
    # Auckland (UTC+13 in summer): a refusal at 00:10 on 1 January 2026, local time, in a file
    # last written at 01:30 local, which is still 31 December 2025 in UTC. The file's date
    # was read in UTC, so its "Jan 01" lines were taken for January 2025, a year early
    log = tmp_path / "mail.log"
    at = calendar.timegm((2025, 12, 31, 11, 10, 0))  # 2026-01-01 00:10 NZDT
    text = _refusals_at((at,), log, tz="Pacific/Auckland")
    assert "Jan 01 00:10:" in text or "Jan 01 00:09:" in text, text
    os.utime(log, (at + 4800, at + 4800))  # 01:30 NZDT, 12:30 UTC on 31 December
    report = analyse([str(log)], LogOptions(tz=ZoneInfo("Pacific/Auckland")))
    (inc,) = [i for i in report.stats["incidents"] if i["kind"] == "smtp-relay-denied"]
    assert inc["first_seen"][:15] in ("2025-12-31T11:1", "2025-12-31T11:0")
