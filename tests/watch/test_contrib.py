"""contrib/ cannot go stale: the example config parses, the unit's command line is one the CLI
accepts, and logrotate accepts the snippet."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from relayguard.cli import app
from relayguard.watch.config import ALLOWED_KEYS, parse_config

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


def test_example_watch_toml_parses(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    text = (CONTRIB / "watch.toml").read_text().replace("/etc/relayguard/smtp-password",
                                                        str(pw))
    cfg = parse_config(text, "contrib/watch.toml")
    assert cfg.alerts.channels() == ["stdout", "syslog", "email", "webhook", "command"]
    assert cfg.alerts.email is not None and cfg.alerts.email.password == "secret"
    assert cfg.respond.mode == "nftables" and cfg.respond.dry_run is True
    assert cfg.blocklist.targets == ("203.0.113.25", "example.org")


def _documented(text: str) -> dict[str, set[str]]:
    """Keys per section of an example config, commented-out ones included."""
    out: dict[str, set[str]] = {"": set()}
    section = ""
    for line in text.splitlines():
        head = re.match(r"^#?\s*\[([a-z_.]+)\]\s*$", line)
        if head:
            section = head.group(1)
            out.setdefault(section, set())
            out[section.rpartition(".")[0]].add(section.rpartition(".")[2])
            continue
        key = re.match(r"^#?\s*([a-z_0-9]+)\s*=", line)
        if key:
            out.setdefault(section, set()).add(key.group(1))
    return out


def test_example_watch_toml_documents_every_key() -> None:
    """A key the parser accepts but the example never shows is a key nobody finds."""
    documented = _documented((CONTRIB / "watch.toml").read_text())
    missing = {f"{section}.{key}".lstrip(".") for section, keys in ALLOWED_KEYS.items()
               for key in keys - documented.get(section, set())}
    assert missing == set()
    assert 'tz = "Europe/Berlin"' in (CONTRIB / "watch.toml").read_text()


def test_systemd_unit_uses_real_options() -> None:
    unit = (CONTRIB / "relayguard-watch.service").read_text()
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[1] == "watch"
    help_text = CliRunner().invoke(app, ["watch", "--help"]).output
    for opt in (a for a in argv if a.startswith("--")):
        assert opt in help_text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit


def test_logrotate_accepts_the_snippet(tmp_path: Path) -> None:
    if shutil.which("logrotate") is None:
        pytest.fail("logrotate is not installed (scripts/install-test-deps installs it)")
    conf = tmp_path / "lr.conf"
    conf.write_text((CONTRIB / "logrotate-relayguard-friendly").read_text()
                    .replace("/var/log/apache2", str(tmp_path)))
    (tmp_path / "access.log").write_text("x\n")
    res = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "st"), str(conf)],
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    assert "error" not in res.stderr.lower(), res.stderr
