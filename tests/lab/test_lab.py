"""`relayguard lab` end to end: real Apache and Postfix, the hijack, detection, fix, proof —
and afterwards nothing left running, listening, or on disk. Also when interrupted."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from relayguard.findings import Category
from relayguard.lab import servers
from relayguard.lab.run import run_lab
from relayguard.lab.servers import LabError
from tests.cli.test_cli import ENV, sigint_default
from tests.servers.base import port_open

pytestmark = pytest.mark.server

ADDRESS = "127.0.10.1"  # the lab's default address, in this suite's range


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not running
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


def _on_lo(address: str) -> bool:
    shown = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                           text=True, check=False).stdout
    return f" {address}/" in shown


def test_lab_catches_fixes_and_cleans_up() -> None:
    lines: list[str] = []
    result = run_lab(lines.append, address=ADDRESS)
    text = "\n".join(lines)
    # the hijack happened: spammers got a foreign RCPT accepted through the proxy
    assert sum(a.relayed for a in result.attempts_before) == 4
    assert all(a.proxy_status.endswith("200 OK") for a in result.attempts_before
               if a.actor == "visitor")
    # the detection, by every kind of evidence, as one story
    before = result.before
    assert before is not None and before.stats["verdict"] == "OPEN"
    rules = {f.rule for f in before.findings}
    assert {"APACHE-OPEN-FORWARD-PROXY", "APACHE-CONNECT-SMTP-PORT", "CROSS-PROXY-TO-LOCAL-MTA",
            "PROBE-CONNECT-SMTP", "LOGS-PROXY-SMTP"} <= rules
    assert [s["evidence"] for s in before.stats["stories"]] == [["audit", "probe", "logs"]]
    # the fix is the real patch, verified before it was written
    assert "-ProxyRequests On\n-AllowCONNECT 443 25\n+ProxyRequests Off\n+AllowCONNECT 443\n" \
        in result.diff
    assert len(result.backups) == 1
    # proven closed: spammers refused, visitors still served, probe finds no relay path
    assert result.closed
    spam_after = [a for a in result.attempts_after if a.actor == "spammer"]
    assert spam_after and all(a.proxy_status.startswith("HTTP/1.1 405") for a in spam_after)
    after = result.after
    assert after is not None
    assert not [f for f in after.findings if f.category in (
        Category.OPEN_HTTP_PROXY, Category.OPEN_CONNECT_PROXY, Category.SMTP_VIA_PROXY)]
    assert "RESULT: the hole is closed" in text
    # final state: nothing running, listening, configured or on disk
    assert result.pids and not any(_alive(p) for p in result.pids)
    assert not port_open(ADDRESS, 8080) and not port_open(ADDRESS, 25)
    assert not Path(result.workdir).exists()
    assert not _on_lo(ADDRESS) or not result.added_address
    assert text.rstrip().endswith("work directory removed.")


def _sessions_alive(sids: set[int]) -> list[str]:
    """Processes still running in any of these sessions (the lab starts each daemon in its
    own session, so every child it forked is found, not only the pids it printed)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) in sids:
            out.append(stat.parent.name)
    return out


@pytest.mark.parametrize("step", ["2. ", "3. ", "4. "])
def test_lab_command_ctrl_c_cleans_up(step: str) -> None:
    """SIGINT while the spammers play (2), while scanning (3) and while fixing (4): exit 130,
    every process the lab started gone, its address off `lo`, its files removed."""
    on_lo_before = _on_lo(ADDRESS)
    proc = subprocess.Popen([sys.executable, "-m", "relayguard", "lab"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=sigint_default)
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(step):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=60)
    text = "".join(seen) + out
    assert any(line.startswith(step) for line in seen), text + err
    assert proc.returncode == 130, text + err
    assert "interrupted; everything it started is stopped" in err
    assert "Traceback" not in err, err
    assert "Cleaned up: daemons stopped" in text
    pids = {int(p) for p in re.findall(r"\(pid (\d+)\)", text)}
    assert len(pids) >= 2, text
    assert _sessions_alive(pids) == []
    assert not port_open(ADDRESS, 8080) and not port_open(ADDRESS, 25)
    assert _on_lo(ADDRESS) == on_lo_before  # the address it added is gone again
    assert not list(Path("/tmp").glob("relayguard-lab-*"))


def test_lab_command_exits_0_when_the_hole_is_closed() -> None:
    on_lo_before = _on_lo(ADDRESS)
    done = subprocess.run([sys.executable, "-m", "relayguard", "lab"], capture_output=True,
                          text=True, env=ENV, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RESULT: the hole is closed" in done.stdout
    pids = {int(p) for p in re.findall(r"\(pid (\d+)\)", done.stdout)}
    assert len(pids) == 3  # Postfix, Apache, the restarted Apache
    assert _sessions_alive(pids) == []
    assert _on_lo(ADDRESS) == on_lo_before
    assert done.stdout.rstrip().endswith("work directory removed.")


def test_lab_refuses_a_non_loopback_address() -> None:
    done = subprocess.run([sys.executable, "-m", "relayguard", "lab", "--address", "192.0.2.9"],
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 2
    assert "the lab runs on loopback only" in done.stderr


def test_lab_names_exactly_the_missing_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    from relayguard.lab import servers
    from relayguard.lab.run import check_requirements
    from relayguard.lab.servers import LabError

    monkeypatch.setattr(servers, "REQUIREMENTS", (
        ("apache2", "/usr/sbin/apache2"), ("postfix", "/nonexistent/master"),
        ("iproute2", "/nonexistent/ip"), ("postfix", "/nonexistent/postfix")))
    with pytest.raises(LabError) as err:
        check_requirements()
    assert str(err.value) == (
        "relayguard lab needs these Debian packages, which are not installed: postfix iproute2\n"
        "install them with: sudo apt-get install --no-install-recommends postfix iproute2")


def _accepting(host: str, port: int) -> socket.socket:
    """A stranger's server: listens, never answers (stands in for the machine's real MTA)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    sock.setblocking(False)
    return sock


def test_lab_refuses_when_something_already_serves_its_ports() -> None:
    stranger = _accepting(ADDRESS, 8080)
    try:
        lines: list[str] = []
        with pytest.raises(LabError) as err:
            run_lab(lines.append, address=ADDRESS)
        assert str(err.value).startswith(f"{ADDRESS}:8080 is already served by {ADDRESS}:8080: "
                                         "the lab's own server could not listen there")
        assert "--address 127.0.N.M" in str(err.value)
        with pytest.raises(BlockingIOError):
            stranger.accept()  # nobody talked to the stranger's server
        assert lines == []  # refused before starting anything
    finally:
        stranger.close()


def test_a_wildcard_listener_counts_as_taken() -> None:
    """A real MTA on *:25 answers connections to every loopback address."""
    with socket.socket() as wildcard:
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        port = wildcard.getsockname()[1]
        with pytest.raises(LabError) as err:
            servers.ensure_free("127.0.10.7", (port,))
        assert f"127.0.10.7:{port} is already served by 0.0.0.0:{port}" in str(err.value)
    servers.ensure_free("127.0.10.7", (port,))  # free again once it is gone


def test_a_daemon_is_ready_only_when_it_is_the_labs_own() -> None:
    """Apache cannot bind where a stranger listens; a successful connect to the stranger
    must not pass for the lab's Apache being up (its pid file and marker are checked)."""
    host, port = "127.0.10.8", 18080
    with tempfile.TemporaryDirectory(prefix="rg-labtest-") as tmp:
        os.chmod(tmp, 0o755)  # Apache's www-data children read the page
        _ready_only_when_own(Path(tmp), host, port)


def _ready_only_when_own(workdir: Path, host: str, port: int) -> None:
    stranger = _accepting(host, port)
    try:
        web = servers.apache(workdir, host, port)
        try:
            with pytest.raises(LabError):
                web.start()
        finally:
            web.stop()
    finally:
        stranger.close()
    # the same daemon where nothing else listens: ready by its own pid file and marker
    web = servers.apache(workdir, host, port)
    try:
        web.start()
        assert web.proc is not None and web.ready()
    finally:
        web.stop()
