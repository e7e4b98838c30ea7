"""The real `--fix --write` pipeline for daemon tests: run the CLI on a running daemon's config,
then restart that daemon on the patched files to show the hole is closed for real.

    doc = fix_write(d.config, outside=STRANGER)      # the CLI's JSON after writing the patch
    with restarted(d) as again: ...                  # same command line, same files
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.servers.base import Daemon, run_daemon, wait_port_closed


def fix_write(*paths: Path | str, outside: str, cwd: Path | None = None) -> dict:
    """`relayguard audit PATHS --outside-client OUTSIDE --fix --write --format json`; asserts
    that a verified patch was written and nothing above info remains."""
    proc = subprocess.run([sys.executable, "-m", "relayguard", "audit", *map(str, paths),
                           "--outside-client", outside, "--fix", "--write", "--format", "json"],
                          capture_output=True, text=True, timeout=300, check=False, cwd=cwd)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    doc = json.loads(proc.stdout)
    assert any(p["diff"] for p in doc["stats"]["fixes"]), doc["notes"]
    assert any(n.startswith("patched; backup kept at") for n in doc["notes"]), doc["notes"]
    left = [(f["rule"], f["title"]) for f in doc["findings"] if f["severity"] != "info"]
    assert left == [], (left, doc["notes"])
    return doc


@contextlib.contextmanager
def restarted(d: Daemon, timeout: float = 20.0) -> Iterator[Daemon]:
    """Start the (stopped) daemon again with its own command line on its patched files. First
    wait (bounded) until nothing listens on its port: a dying child may still hold the socket
    (Postfix's smtpd), and the new daemon would then fail to bind while the wait for its port
    is fooled by the old one."""
    assert d.proc is not None and d.proc.poll() is not None, "stop the daemon first"
    wait_port_closed(d.host, d.port)
    again = Daemon(name=d.name, host=d.host, port=d.port, workdir=d.workdir, config=d.config,
                   logs=d.logs, extra=d.extra)
    with run_daemon(again, [str(a) for a in d.proc.args], timeout=timeout) as r:
        yield r
