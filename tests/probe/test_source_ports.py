"""`--source-address` does not cost one local port per connection: the port is chosen at
connect(), per destination, not at bind(). In network namespaces the tests create, with an
ephemeral range of a few ports (per namespace: the host's range is untouched)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relayguard.scan.discover import parse_proc_net
from tests.servers.base import Daemon, DaemonError, make_workdir, run_daemon
from tests.servers.netns import namespace, run, veth

ROOT = Path(__file__).resolve().parents[2]
SCANNER = "10.201.7.1"  # the prober's namespace: source address and canary
TARGETS = [f"10.201.7.{i}" for i in range(2, 21)]  # the targets' namespace, one microsocks


def _run(*argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return run(*argv, timeout=timeout, cwd=ROOT)


@contextlib.contextmanager
def prober_and_targets() -> Iterator[tuple[str, str]]:
    """The prober's netns (4 ephemeral ports, SCANNER) linked by a veth pair to the
    targets' netns (TARGETS, normal range: the relays' own connections to the canary must
    not be what runs out)."""
    with namespace("p", (40000, 40003)) as prober, namespace("t") as targets, \
            veth(prober, [SCANNER], targets, TARGETS, "p"):
        yield prober, targets


@contextlib.contextmanager
def microsocks_in(ns: str) -> Iterator[Daemon]:
    """Open microsocks on 0.0.0.0:1080 inside `ns`; ready once its listening socket shows in
    the namespace's /proc/net/tcp (`ip netns exec` execs it, so the pid is microsocks')."""
    wd, _ = make_workdir(None, "microsocks-ns")
    daemon = Daemon(name="microsocks", host="0.0.0.0", port=0, workdir=wd, config=wd)
    argv = ["ip", "netns", "exec", ns, "microsocks", "-i", "0.0.0.0", "-p", "1080"]

    def ready() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert daemon.proc is not None
            if daemon.proc.poll() is not None:
                raise DaemonError("microsocks exited before listening")
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{daemon.proc.pid}/net/tcp").read_text(encoding="ascii")
                if any(s.port == 1080 for s in parse_proc_net(text)):
                    return
            time.sleep(0.05)
        raise DaemonError("microsocks not listening on 1080 in the namespace after 10s")

    with run_daemon(daemon, argv, ready=ready, remove_workdir=True) as d:
        yield d


@pytest.mark.server
def test_nineteen_targets_from_one_source_address_with_four_ephemeral_ports() -> None:
    """Each probe connection used to bind() its own port (held 60s in TIME_WAIT): the 5th
    connection failed with 'no local address/port to use'."""
    targets = [f"{a}:1080" for a in TARGETS]
    with prober_and_targets() as (prober, ns), microsocks_in(ns) as socks:
        done = _run("ip", "netns", "exec", prober, sys.executable, "-m", "relayguard",
                    "probe", *targets, "--source-address", SCANNER, "--canary-host", SCANNER,
                    "--timeout", "2", "--max-time", "90", "--format", "json", timeout=120)
        diagnostics = socks.diagnostics()
    assert done.returncode == 1, done.stderr + diagnostics
    doc = json.loads(done.stdout)
    ours = [e["message"] for e in doc["errors"] if "local address/port" in e["message"]]
    assert ours == [], ours
    confirmed = {f["target"] for f in doc["findings"]
                 if f["rule"] == "PROBE-SOCKS5" and f["confidence"] == "confirmed"}
    assert confirmed == set(targets), (doc["errors"], doc["notes"])
    assert doc["errors"] == []
    assert doc["stats"]["connections"] >= 2 * len(targets)  # far more than the 4 ports


def test_a_relay_on_the_scanners_own_local_port_is_not_the_scanner() -> None:
    """With one ephemeral port, a local relay reaching the canary gets the scanner's very local
    end: its nonce is still proof (not `own`), and the scanner's socket is not 'the canary'."""
    with namespace("s", (40000, 40000)) as ns:
        done = _run("ip", "netns", "exec", ns, sys.executable, "-m",
                    "tests.probe.shared_port_run", timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["relay"] == seen["scanner"] == ["127.0.0.1", 40000]
    assert seen["own"] == [False]
    assert seen["serving"] is None
