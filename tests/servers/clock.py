"""A daemon's wall clock set by the test: Debian's libfaketime, stepped through a file.

Some behaviour only shows over many minutes of a real server's life (a rolling baseline of
requests per minute). Rather than wait, the test runs the real daemon under libfaketime and
moves its clock: `clock.at(t)` makes every process of the daemon read `t` (and onwards) from
its next clock call, so the daemon writes its logs with those times itself.

    with fake_clock() as clock, apache(host, port, body, env=clock.env()) as web:
        clock.at(BASE + 60)   # one minute later for Apache
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.base import make_workdir

# Debian's package `faketime` (libfaketime), in the multiarch directory of this machine
LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))),
                   Path("/usr/lib/faketime/libfaketimeMT.so.1"))


class FakeClock:
    """The offset file libfaketime reads on every clock call (FAKETIME_NO_CACHE); it lies
    in a world-readable directory, since daemons read it after dropping privileges."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.write_text("+0\n", encoding="ascii")
        self.path.chmod(0o644)

    def env(self) -> dict[str, str]:
        """What the daemon's environment needs for this clock."""
        return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(self.path),
                "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_RESET": "1"}

    def at(self, epoch: float) -> None:
        """From now on the daemon's clock reads `epoch` (and runs on at normal speed)."""
        tmp = self.path.with_suffix(".new")
        tmp.write_text(f"{epoch - time.time():+.0f}\n", encoding="ascii")
        tmp.chmod(0o644)
        tmp.replace(self.path)  # atomic: a reader never sees a half-written offset


@contextlib.contextmanager
def fake_clock() -> Iterator[FakeClock]:
    """A FakeClock in its own 0755 directory, removed afterwards."""
    if not LIBFAKETIME.is_file():
        pytest.fail("libfaketime is not installed (scripts/install-test-deps installs the "
                    "Debian package faketime)")
    workdir, _created = make_workdir(None, "clock")
    try:
        yield FakeClock(workdir / "offset")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
