"""Syslog stamps have no year. A real Postfix, its clock set to New Year's Eve (libfaketime),
refuses one relay attempt before midnight and one after: with `--year` naming the year the
log starts in, the January lines belong to the next year, in one file and across a rotated
pair, as they do when the year is inferred from the file's date."""

from __future__ import annotations

import calendar
import os
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest

from relayguard.logs.analyze import LogOptions, analyse
from tests.logs.test_real_servers import _smtp, _wait_log
from tests.servers.clock import fake_clock
from tests.servers.postfix import postfix

pytestmark = pytest.mark.server

MTA, CLIENT = "127.0.5.91", "127.0.5.92"
EVE = calendar.timegm((2025, 12, 31, 23, 59, 50))
# the daemons Postfix's master starts get only the environment it imports
FAKETIME_ENV = ("import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C "
                "POSTLOG_SERVICE POSTLOG_HOSTNAME LD_PRELOAD FAKETIME_TIMESTAMP_FILE "
                "FAKETIME_NO_CACHE FAKETIME_DONT_RESET\n")


@pytest.fixture(scope="module")
def new_year_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    keep = tmp_path_factory.mktemp("newyear") / "mail.log"
    saved = dict(os.environ)
    with fake_clock() as clock:
        clock.at(EVE)
        os.environ.update({**clock.env(), "TZ": "UTC"})  # what master and its daemons inherit
        try:
            with postfix(MTA, 2525, "mynetworks = 127.0.0.1/32\n" + FAKETIME_ENV) as mta:
                os.environ.clear()
                os.environ.update(saved)
                for n, at in enumerate((EVE, EVE + 20)):
                    clock.at(at)
                    replies = _smtp(MTA, 2525, CLIENT, [f"x{n}@far.test"])
                    assert replies[3].startswith("454 4.7.1"), replies
                _wait_log(lambda: mta.log("mail"), "Relay access denied", 2)
                keep.write_bytes(mta.logs["mail"].read_bytes())
        finally:
            os.environ.clear()
            os.environ.update(saved)
    text = keep.read_text()
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
