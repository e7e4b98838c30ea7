"""Responses: in a network namespace the test creates, nftables really drops the offender's
packets to a real Apache, the allow-listed client keeps working; dry-run touches nothing."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relayguard.logs.incidents import Incident, Sample
from relayguard.watch.config import RespondConfig
from relayguard.watch.metrics import Metrics
from relayguard.watch.respond import Responder
from relayguard.watch.state import StateDB
from tests.servers.apache import preamble
from tests.servers.base import Daemon, make_workdir, run_daemon
from tests.servers.netns import inside, namespace, run, veth
from tests.watch.helpers import state, wait_until, watcher

NS_SERVER = "10.200.9.2"
OFFENDER = "10.200.9.1"
FRIEND = "10.200.9.3"  # allow-listed
PORT = 8080


@contextlib.contextmanager
def server_namespace() -> Iterator[str]:
    """A netns with a veth pair: host side 10.200.9.1 + .3, namespace side 10.200.9.2; skips
    where the kernel refuses nftables there."""
    with namespace("w") as ns, veth(None, [OFFENDER, FRIEND], ns, [NS_SERVER], "w"):
        probe = run(*inside(ns, "nft", "add", "table", "inet", "rgprobe"))
        if probe.returncode != 0:
            pytest.skip(f"the kernel refuses nftables: {probe.stderr.strip()}")
        run(*inside(ns, "nft", "delete", "table", "inet", "rgprobe"))
        yield ns


@contextlib.contextmanager
def apache_in(ns: str) -> Iterator[Daemon]:
    wd, _ = make_workdir(None, "apache-ns")
    (wd / "htdocs").mkdir()
    os.chmod(wd / "htdocs", 0o755)
    (wd / "htdocs" / "index.html").write_text("inside the namespace\n")
    conf = wd / "httpd.conf"
    conf.write_text(preamble(NS_SERVER, PORT, wd))
    (wd / "body.conf").write_text("")
    d = Daemon(name="apache2", host=NS_SERVER, port=PORT, workdir=wd, config=conf,
               logs={"access": wd / "access.log", "error": wd / "error.log"})
    argv = ["ip", "netns", "exec", ns, "apache2", "-f", str(conf), "-DFOREGROUND"]
    with run_daemon(d, argv, remove_workdir=True) as daemon:
        yield daemon


def _request(source: str, raw: bytes, timeout: float = 1.5) -> bytes | None:
    """The reply, or None when the connection cannot be made (dropped)."""
    try:
        with socket.create_connection((NS_SERVER, PORT), timeout=timeout,
                                      source_address=(source, 0)) as s:
            s.sendall(raw)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out
    except OSError:
        return None


GET = b"GET / HTTP/1.0\r\n\r\n"
CONNECT = b"CONNECT mx.victim.example:25 HTTP/1.0\r\n\r\n"


@pytest.mark.server
def test_nftables_block_really_drops_the_offender(tmp_path: Path) -> None:
    with server_namespace() as ns, apache_in(ns) as httpd:
        assert b"inside the namespace" in (_request(OFFENDER, GET) or b"")
        assert b"inside the namespace" in (_request(FRIEND, GET) or b"")
        cfg = tmp_path / "watch.toml"
        cfg.write_text(f"""
[watch]
poll_interval = 0.1
start = "beginning"
[alerts]
stdout = true
[respond]
mode = "nftables"
dry_run = false
timeout = 600
allow = ["{FRIEND}/32"]
verdicts = ["relayed", "unknown", "refused"]
nft = ["ip", "netns", "exec", "{ns}", "nft"]
""")
        db = tmp_path / "w.sqlite"
        log = httpd.logs["access"]
        with watcher(tmp_path, [str(log), "-c", str(cfg), "--state", str(db)]) as w:
            assert wait_until(lambda: state(db).get("lines") == 2, 10), w.stderr()
            assert _request(FRIEND, CONNECT) is not None
            assert _request(OFFENDER, CONNECT) is not None
            blocked = wait_until(lambda: [a for a in state(db).get("actions", [])
                                          if a["action"] == "block"], 10)
            assert [(a["address"], a["dry_run"]) for a in blocked] == [(OFFENDER, 0)], \
                w.stderr()
            t0 = time.monotonic()
            assert _request(OFFENDER, GET, timeout=1.5) is None  # SYN dropped: no answer
            assert time.monotonic() - t0 >= 1.0
            assert b"inside the namespace" in (_request(FRIEND, GET) or b"")
            listed = run(*inside(ns, "nft", "list", "set", "inet", "relayguard",
                                 "blocked4")).stdout
            assert OFFENDER in listed and FRIEND not in listed and "timeout" in listed
            actions = {a["action"]: a["address"] for a in state(db)["actions"]}
            assert actions["allowed"] == FRIEND
            # The admin trusts the offender after all: SIGHUP lifts the block at once rather
            # than leaving a now-trusted client locked out for the rest of its 600 s.
            cfg.write_text(cfg.read_text().replace(
                "[watch]\n", f'[watch]\ntrusted_clients = ["{OFFENDER}"]\n'))
            w.signal(signal.SIGHUP)
            assert wait_until(lambda: [a for a in state(db).get("actions", [])
                                       if a["action"] == "unblock"], 10), w.stderr()
            assert b"inside the namespace" in (_request(OFFENDER, GET) or b"")
            listed = run(*inside(ns, "nft", "list", "set", "inet", "relayguard",
                                 "blocked4")).stdout
            assert OFFENDER not in listed
            assert w.terminate() == 0
            assert f"blocked {OFFENDER} for 600s" in w.stderr()
            assert f"not blocking {FRIEND}: allow-listed" in w.stderr()
            assert f"unblocked {OFFENDER} before its timeout (a trusted client now)" in w.stderr()


def test_dry_run_records_but_never_runs_nft(tmp_path: Path) -> None:
    db = StateDB(str(tmp_path / "s.sqlite"))
    cfg = RespondConfig(mode="nftables", timeout=1, nft=("false",))  # dry_run by default
    r = Responder(cfg, db, Metrics())
    inc = Incident("proxy-smtp")
    for ip in ("198.51.100.7", "127.0.0.5", "not-an-ip"):
        inc.add(1.0, ip, "mx:25", Sample("a.log", 1, "x"), outcome="relayed")

    class F:
        rule = "LOGS-PROXY-SMTP"

    assert r.consider(inc, F()) == ["198.51.100.7"]  # type: ignore[arg-type]
    assert r.consider(inc, F()) == []  # already blocked: not again
    time.sleep(1.1)
    r.expire()
    acts = [(a["action"], a["address"], a["dry_run"]) for a in db.actions()]
    assert acts == [("allowed", "127.0.0.5", 1), ("block", "198.51.100.7", 1),
                    ("unblock", "198.51.100.7", 1)]
    db.close()


def test_a_client_allow_listed_since_its_block_is_released_at_start(tmp_path: Path) -> None:
    """Blocks are saved across restarts; one on an address the new allow-list covers is lifted
    when the responder starts, others stay (dry-run, so only the records say so)."""
    db = StateDB(str(tmp_path / "s.sqlite"))
    inc = Incident("proxy-smtp")
    for ip in ("198.51.100.7", "198.51.100.8"):
        inc.add(1.0, ip, "mx:25", Sample("a.log", 1, "x"), outcome="relayed")

    class F:
        rule = "LOGS-PROXY-SMTP"

    first = Responder(RespondConfig(mode="nftables", timeout=600, nft=("false",)), db, Metrics())
    assert sorted(first.consider(inc, F())) == ["198.51.100.7", "198.51.100.8"]  # type: ignore[arg-type]
    allowed = ipaddress.ip_network("198.51.100.7/32")
    again = Responder(RespondConfig(mode="nftables", timeout=600, nft=("false",),
                                    allow=(allowed,)), db, Metrics())
    again.release_exempt(frozenset({"127.0.0.1"}))
    assert sorted(again.blocked) == ["198.51.100.8"]
    released = [(a["action"], a["address"], a["reason"]) for a in db.actions()
                if a["action"] == "unblock"]
    assert released == [("unblock", "198.51.100.7", "allow-listed now")]
    db.close()
