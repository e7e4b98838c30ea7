"""`scan --inventory`: three real sites, one unreachable; and `--nagios` for monitoring."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import ENV
from tests.scan.conftest import CLOSED_IP, OPEN_IP, UNREACHABLE_IP, Host

pytestmark = pytest.mark.server

# Nagios plugin guidelines: 'label'=value[UOM];[warn];[crit];[min];[max], space separated.
PERF = re.compile(r"^[A-Za-z0-9_.-]+=\d+(\.\d+)?(s|%|B|c)?;[^;\s]*;[^;\s]*;[^;\s]*(;[^;\s]*)?$")


def rg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relayguard", *args], capture_output=True,
                          text=True, timeout=120, env=ENV)


def inventory(tmp_path: Path, open_host: Host, closed_host: Host) -> Path:
    path = tmp_path / "sites.toml"
    open_logs = ", ".join(f'"{p}"' for p in open_host.logs)
    open_cfg = ", ".join(f'"{p}"' for p in open_host.configs)
    closed_cfg = ", ".join(f'"{p}"' for p in closed_host.configs)
    path.write_text(f"""
[defaults]
ports = [25, 8080]

[[site]]
name = "client-open"
host = "{OPEN_IP}"
configs = [{open_cfg}]
logs = [{open_logs}]

[[site]]
name = "client-down"
host = "{UNREACHABLE_IP}"

[[site]]
name = "client-closed"
host = "{CLOSED_IP}"
configs = [{closed_cfg}]
""")
    return path


@pytest.fixture(scope="module")
def fleet(open_host: Host, closed_host: Host,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str],
                                                             Path]:
    tmp = tmp_path_factory.mktemp("fleet")
    done = rg("scan", "--inventory", str(inventory(tmp, open_host, closed_host)),
              "--no-blocklist", "--format", "json", "--output-dir", str(tmp / "sites"),
              "--db", f"sqlite:///{tmp}/h.sqlite", "--jobs", "3")
    return done, tmp


def test_fleet_reports_every_site_and_survives_a_broken_one(
        fleet: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, _ = fleet
    assert done.returncode == 2, done.stderr  # a site could not be checked: never "all clean"
    doc: dict[str, Any] = json.loads(done.stdout)
    rows = {r["site"]: r for r in doc["stats"]["fleet"]}
    assert list(rows) == ["client-open", "client-down", "client-closed"]
    assert rows["client-open"]["verdict"] == "OPEN"
    assert rows["client-down"]["verdict"] == "INCOMPLETE"
    assert rows["client-closed"]["verdict"] == "CLEAN"
    assert doc["stats"]["verdict"] == "OPEN"
    assert doc["stats"]["verdicts"] == {"OPEN": 1, "INCOMPLETE": 1, "CLEAN": 1}
    sites = {s["stats"]["site"]: s for s in doc["sites"]}
    down = sites["client-down"]
    assert down["findings"] == []
    assert [e["source"] for e in down["errors"]] == [UNREACHABLE_IP]
    assert "unreachable" in down["errors"][0]["message"]
    assert {f["rule"] for f in sites["client-open"]["findings"]} >= {
        "PROBE-CONNECT-SMTP", "APACHE-OPEN-FORWARD-PROXY", "LOGS-PROXY-SMTP"}
    # every finding of the open site is about the open site, none leaked to the others
    assert all(f["target"] in (None, f"{OPEN_IP}:8080", f"{OPEN_IP}:25")
               for f in sites["client-open"]["findings"])
    assert [f["rule"] for f in sites["client-closed"]["findings"]] == [
        "APACHE-PROXY-MODULES-UNUSED"]
    assert len(doc["findings"]) == sum(len(s["findings"]) for s in doc["sites"])


def test_fleet_writes_one_report_per_site(
        fleet: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, tmp = fleet
    files = sorted(p.name for p in (tmp / "sites").iterdir())
    assert files == ["client-closed.json", "client-down.json", "client-open.json"]
    one = json.loads((tmp / "sites" / "client-open.json").read_text())
    assert one["command"] == "scan" and one["stats"]["verdict"] == "OPEN"


def test_fleet_text_summary_table(open_host: Host, closed_host: Host, tmp_path: Path) -> None:
    done = rg("scan", "--inventory", str(inventory(tmp_path, open_host, closed_host)),
              "--no-blocklist", "--no-logs", "--no-history")
    lines = done.stdout.splitlines()
    assert lines[0] == "relayguard fleet scan: 3 site(s), overall OPEN"
    assert re.match(r"  client-open\s+127\.0\.10\.10\s+OPEN\s+\d+ finding", lines[2])
    assert re.match(r"  client-down\s+127\.0\.10\.99\s+INCOMPLETE\s+0 finding\(s\)\s+1 error",
                    lines[3])
    assert re.match(r"  client-closed\s+127\.0\.10\.20\s+CLEAN\s+1 finding", lines[4])


def test_fleet_html_and_sarif(open_host: Host, closed_host: Host, tmp_path: Path) -> None:
    inv = str(inventory(tmp_path, open_host, closed_host))
    done = rg("scan", "--inventory", inv, "--no-blocklist", "--no-logs", "--no-history",
              "--format", "html")
    page = done.stdout
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert page.count('<h2 id="site-') == 3
    assert '<a href="#site-1">client-down</a>' in page
    sarif = json.loads(rg("scan", "--inventory", inv, "--no-blocklist", "--no-logs",
                          "--no-history", "--format", "sarif").stdout)
    assert "PROBE-CONNECT-SMTP" in {r["ruleId"] for r in sarif["runs"][0]["results"]}


def _nagios(*args: str) -> tuple[int, str, list[str]]:
    done = rg("scan", *args, "--nagios", "--no-blocklist", "--no-history")
    assert done.stdout.count("\n") == 1, done.stdout  # exactly one line
    text, _, perf = done.stdout.rstrip("\n").partition(" | ")
    for item in perf.split():
        assert PERF.match(item), item
    return done.returncode, text, perf.split()


def test_nagios_critical_for_an_open_relay(open_host: Host) -> None:
    code, text, perf = _nagios(*open_host.cli_args())
    assert code == 2
    assert text.startswith(f"RELAYGUARD CRITICAL - {OPEN_IP} OPEN: Strangers can relay "
                           "through an open proxy")
    assert "critical=" in " ".join(perf) and perf[0].startswith("findings=")
    assert next(p for p in perf if p.startswith("high=")).split(";")[2] == "1"  # crit threshold


def test_nagios_ok_for_a_closed_host(closed_host: Host) -> None:
    code, text, perf = _nagios(*closed_host.cli_args())
    assert code == 0
    assert text == (f"RELAYGUARD OK - {CLOSED_IP}: no relay path for strangers (not run: "
                    "blocklist)")  # _nagios passes --no-blocklist
    assert "critical=0;;;0" in perf and "errors=0;;;0" in perf


def test_nagios_unknown_when_unreachable() -> None:
    code, text, perf = _nagios(UNREACHABLE_IP, "--ports", "8080", "--no-audit", "--no-logs")
    assert code == 3
    assert text.startswith(f"RELAYGUARD UNKNOWN - {UNREACHABLE_IP}: 1 check(s) could not run "
                           f"({UNREACHABLE_IP}: unreachable")
    assert "errors=1;;;0" in perf


def test_nagios_unknown_on_usage_error() -> None:
    done = rg("scan", "127.0.10.99", "--nagios", "--timeout", "0")
    assert done.returncode == 3
    assert done.stdout == "RELAYGUARD UNKNOWN - --timeout must be between 0.05 and 120\n"


def test_nagios_fleet(open_host: Host, closed_host: Host, tmp_path: Path) -> None:
    code, text, perf = _nagios("--inventory", str(inventory(tmp_path, open_host,
                                                           closed_host)), "--no-logs")
    assert code == 2
    assert text == "RELAYGUARD CRITICAL - 1 of 3 sites with findings (client-open); " \
                   "1 check(s) could not run"
    assert "sites=3;;;0" in perf


@pytest.mark.parametrize(("args", "message"), [
    (["--bogus"], "RELAYGUARD UNKNOWN - No such option '--bogus'"),
    (["--jobs", "abc"], "RELAYGUARD UNKNOWN - Invalid value for '--jobs' / '-j'"),
    (["--fail-on", "nope"], "RELAYGUARD UNKNOWN - "),
])
def test_nagios_unknown_on_click_parse_errors(args: list[str], message: str) -> None:
    """click's own parse errors exit 2 (CRITICAL to Nagios) with nothing on stdout; under
    --nagios they are UNKNOWN with one status line, wherever --nagios stands."""
    for order in ([UNREACHABLE_IP, "--nagios", *args], [UNREACHABLE_IP, *args, "--nagios"]):
        done = rg("scan", *order)
        assert done.returncode == 3, (order, done.stdout, done.stderr)
        assert done.stdout.startswith(message) and done.stdout.count("\n") == 1, done.stdout
    plain = rg("scan", UNREACHABLE_IP, *args)
    assert plain.returncode == 2 and plain.stdout == ""  # without --nagios: click's usage error


def test_nagios_unknown_on_an_uncaught_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug that escapes the scan is UNKNOWN (3), not Python's exit 1 (WARNING). Injected:
    nothing real crashes the scan on purpose."""
    from click.testing import CliRunner

    import relayguard.scan as scan_pkg
    from relayguard.cli import app

    def crash(*_args: object, **_kw: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(scan_pkg, "scan_sites", crash)
    args = ["scan", UNREACHABLE_IP, "--no-history", "--no-blocklist"]
    done = CliRunner().invoke(app, [*args, "--nagios"])
    assert done.exit_code == 3
    assert done.stdout == "RELAYGUARD UNKNOWN - internal error: RuntimeError: boom\n"
    plain = CliRunner().invoke(app, args)
    assert isinstance(plain.exception, RuntimeError)  # without --nagios the bug is not hidden


def test_output_dir_keeps_every_site_when_names_clean_up_alike(tmp_path: Path) -> None:
    """`client a` and `client_a` both become `client_a` as file names: neither report may
    overwrite the other."""
    empty = tmp_path / "backup"
    empty.mkdir()
    inv = tmp_path / "sites.toml"
    inv.write_text("".join(f'[[site]]\nname = "{name}"\nhost = "{UNREACHABLE_IP}"\n'
                           f'config_root = "{empty}"\n\n' for name in ("client a", "client_a")))
    out = tmp_path / "sites"
    done = rg("scan", "--inventory", str(inv), "--no-probe", "--no-logs", "--no-blocklist",
              "--no-history", "--format", "json", "--output-dir", str(out))
    assert done.returncode == 2, done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 2, files
    sites = {json.loads(p.read_text())["stats"]["site"] for p in out.iterdir()}
    assert sites == {"client a", "client_a"}
