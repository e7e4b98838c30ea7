"""A listener named `localhost` (or Dante's interface `lo`) is loopback-only: strangers cannot
connect to it, so the proxies behind it are not open to them (they were once reported as
critical open proxies, the name being taken for "could be anything")."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from relayguard.audit import auditor_named
from relayguard.audit.base import AuditOptions
from relayguard.findings import Severity

REAL = Path(__file__).resolve().parents[2].parent / "shared/data/real-configs"
OPEN_DANTE = "external: eth0\nsocksmethod: none\nclient pass {\n from: 0/0 to: 0/0\n}\n" \
    "socks pass {\n from: 0/0 to: 0/0\n}\n"


def privoxy_on_localhost() -> str:
    text = (REAL / "privoxy/config").read_text(encoding="utf-8")
    assert "listen-address  127.0.0.1:8118\n" in text
    return text.replace("listen-address  127.0.0.1:8118\n", "listen-address  localhost:8118\n")


CASES = [
    ("privoxy", "config", privoxy_on_localhost),
    ("squid", "squid.conf", lambda: "http_port localhost:3128\nhttp_access allow all\n"),
    ("dante", "danted.conf", lambda: "internal: lo port = 1080\n" + OPEN_DANTE),
    ("microsocks", "run.sh", lambda: "microsocks -i localhost -p 1080\n"),
    ("nginx", "nginx.conf", lambda: "events {}\nhttp {\n  server {\n    listen localhost:8080;\n"
     "    location / { proxy_pass http://$http_host$request_uri; }\n  }\n}\n"),
]


def test_the_names_are_loopback_here() -> None:
    addrs = {ipaddress.ip_address(a[4][0]) for a in socket.getaddrinfo("localhost", 8118)}
    assert addrs and all(a.is_loopback for a in addrs), addrs
    assert socket.if_nametoindex("lo") > 0


@pytest.mark.parametrize(("server", "name", "text"), CASES, ids=[c[0] for c in CASES])
def test_listener_named_localhost_is_not_open_to_strangers(tmp_path: Path, server: str,
                                                           name: str, text) -> None:
    conf = tmp_path / name
    conf.write_text(text(), encoding="utf-8")
    result = auditor_named(server).audit(conf, AuditOptions())
    assert result.errors == []
    assert [(f.rule, f.title) for f in result.findings if f.severity >= Severity.HIGH] == []
    paths = result.facts.get("proxy_paths", [])
    assert [p["open_to_outside"] for p in paths] == [False] * len(paths)
    # the same config on every address is open: the test can tell the difference
    wide = text().replace("localhost", "0.0.0.0").replace("internal: lo ", "internal: 0.0.0.0 ")
    conf.write_text(wide, encoding="utf-8")
    opened = auditor_named(server).audit(conf, AuditOptions())
    assert any(f.severity is Severity.CRITICAL or f.severity is Severity.HIGH
               for f in opened.findings), opened.findings
