"""Blocklist re-checks against a real rbldnsd: alerts only on listed <-> delisted and on a list
becoming unusable, never for an unchanged answer."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import pytest

from relayguard.errors import InputError
from relayguard.watch.config import BlocklistConfig, parse_config
from relayguard.watch.metrics import Metrics
from relayguard.watch.recheck import Rechecker, _zones
from relayguard.watch.state import StateDB

pytestmark = pytest.mark.server

HOST = "127.0.9.30"
ZONE = "bl.watch.test"


def _free_udp() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Rbl:
    """rbldnsd serving one ip4set zone; `restart(listed)` rewrites it on the same port."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rg-watch-rbl-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.port = _free_udp()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, listed: list[str]) -> None:
        data = ":127.0.0.2:listed by the watch test\n127.0.0.2\n" + "".join(
            f"{ip}\n" for ip in listed)
        (self.dir / "zone.ip4set").write_text(data)
        os.chmod(self.dir / "zone.ip4set", 0o644)
        user = ["-u", "rbldns"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            ["rbldnsd", "-n", *user, "-b", f"{HOST}/{self.port}", "-w", str(self.dir),
             "-t", "60", f"{ZONE}:ip4set:zone.ip4set"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                dns.query.udp(dns.message.make_query(f"2.0.0.127.{ZONE}", "A"), HOST,
                              port=self.port, timeout=0.3)
                return
            except Exception:
                time.sleep(0.05)
        raise AssertionError("rbldnsd did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.proc = None


def test_rechecks_alert_only_on_changes(tmp_path: Path) -> None:
    if shutil.which("rbldnsd") is None:
        pytest.fail("rbldnsd is not installed (scripts/install-test-deps installs it)")
    rbl = Rbl()
    db = StateDB(str(tmp_path / "w.sqlite"))
    cfg = BlocklistConfig(targets=("11.22.33.44", "11.22.33.45"), zones=(ZONE,),
                          resolvers=(f"{HOST}:{rbl.port}",), timeout=0.5)
    metrics = Metrics()
    r = Rechecker(cfg, str(tmp_path / "w.sqlite"), ["webhook"], metrics, on_alert=lambda: None)

    def queued() -> list[tuple[str, str, str | None, str]]:
        rows = db.due("webhook", time.time() + 1)
        db.mark_sent(rows)
        return [(p["target"], p["zone"], p["before"], p["state"])
                for p in (row.payload for row in rows)]

    try:
        rbl.start(["11.22.33.44"])
        assert r.once(db) == 1
        assert queued() == [("11.22.33.44", ZONE, None, "listed")]  # first run: listings only
        assert r.once(db) == 0  # nothing changed, nothing said
        assert queued() == []
        rbl.stop()
        rbl.start([])
        assert r.once(db) == 1
        assert queued() == [("11.22.33.44", ZONE, "listed", "not-listed")]
        rbl.stop()  # the list goes silent: unusable, said once
        assert r.once(db) == 1  # one alert for the list, not one per target
        assert queued() == [("11.22.33.44", ZONE, "not-listed", "unusable")]
        assert r.once(db) == 0
        assert metrics.get("blocklist_checks") == 5
    finally:
        rbl.stop()
        db.close()
        shutil.rmtree(rbl.dir, ignore_errors=True)


def test_zones_are_read_as_blocklist_reads_them() -> None:
    """`[blocklist] zones` take `NAME:domain` as `relayguard blocklist --zones` does (it was
    read as an IP list literally named "dbl.example.test:domain"), and a bad kind is a
    config error at start, not at the first re-check an hour later."""
    cfg = parse_config('[blocklist]\ntargets = ["example.test"]\n'
                       'zones = ["dbl.example.test:domain", "rbl.example.test"]\n', "w.toml")
    zones = _zones(cfg.blocklist)
    assert [(z.name, z.kind.value) for z in zones] == [("dbl.example.test", "domain"),
                                                      ("rbl.example.test", "ip")]
    with pytest.raises(InputError, match=r"w.toml: blocklist.zones: .*kind must be"):
        parse_config('[blocklist]\ntargets = ["example.test"]\nzones = ["x.test:mx"]\n',
                     "w.toml")
