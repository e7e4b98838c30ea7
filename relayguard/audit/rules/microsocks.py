"""microsocks rules (rofl0r/microsocks README; Debian 1.0.3).

Without `-u`/`-P` microsocks relays SOCKS5 CONNECT for anyone who reaches its `-i` address
(default 0.0.0.0), to any host and port — SMTP included; it has no ACL and no port list.
With `-1` a source address that authenticated once is trusted from then on.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from relayguard.audit.addresses import (
    PROBE_PORTS,
    listener_reachable,
    outside_client,
    proxy_path,
)
from relayguard.audit.base import AuditOptions
from relayguard.audit.microsocks import Invocation, MicrosocksConfig
from relayguard.catalogue import Rule
from relayguard.findings import Category, Confidence, Edit, Evidence, Finding, Severity

REF = "https://github.com/rofl0r/microsocks#readme"
_UNIT = "[Unit]\nDescription=microsocks SOCKS5 server\n\n[Service]\nExecStart={}\n\n" \
        "[Install]\nWantedBy=multi-user.target\n"

NO_AUTH = Rule(
    id="MICROSOCKS-NO-AUTH", server="microsocks", category=Category.OPEN_SOCKS_PROXY,
    severity=Severity.CRITICAL,
    title="microsocks runs without a password on a reachable address",
    description="The microsocks command line has no `-u USER -P PASSWORD`, and `-i` is not "
                "a loopback address (the default is 0.0.0.0): anyone who reaches the port "
                "gets SOCKS5 tunnels to any host and port, 25 included.",
    why="microsocks has no access list and no port filter; an exposed instance is an open "
        "SOCKS proxy and an open path to every mail server on port 25.",
    fix="Listen on loopback (`microsocks -i 127.0.0.1`) or require credentials "
        "(`-u USER -P <long random password>`).",
    reference=REF,
    bad=_UNIT.format("/usr/bin/microsocks -p 1080"),
    good=_UNIT.format("/usr/bin/microsocks -i 127.0.0.1 -p 1080"),
)
AUTH_ONCE = Rule(
    id="MICROSOCKS-AUTH-ONCE", server="microsocks", category=Category.OPEN_SOCKS_PROXY,
    severity=Severity.MEDIUM,
    title="microsocks -1 trusts an address forever after one login",
    description="With `-1`, once a client authenticated its IP address is whitelisted and "
                "later connections from it need no password.",
    why="Everyone behind the same NAT, VPN exit or shared host then uses the proxy without "
        "credentials.",
    fix="Drop `-1`.",
    reference=REF,
    bad=_UNIT.format("/usr/bin/microsocks -1 -u relay -P secret-passphrase-42"),
    good=_UNIT.format("/usr/bin/microsocks -u relay -P secret-passphrase-42"),
)

RULES: tuple[Rule, ...] = (NO_AUTH, AUTH_ONCE)


def _edit_listen(inv: Invocation) -> Edit:
    """Make microsocks listen on 127.0.0.1: change a literal `-i X`, else append
    `-i 127.0.0.1` to the command (microsocks takes the last -i it is given)."""
    d = inv.directive
    lines = list(d.lines)
    for n, line in enumerate(lines):
        for tok in (f"-i {inv.listen}", f"-i{inv.listen}"):
            if re.search(re.escape(tok) + r"(\s|$)", line):
                lines[n] = line.replace(tok, "-i 127.0.0.1", 1)
                return d.replace(*lines)
    lines[-1] = lines[-1].rstrip() + " -i 127.0.0.1"
    return d.replace(*lines)


def _edit_drop_once(inv: Invocation) -> Edit:
    d = inv.directive
    lines = [ln.replace(" -1 ", " ").replace(" -1", "") if " -1" in ln else ln
             for ln in d.lines]
    return d.replace(*lines)


def check(cfg: MicrosocksConfig, options: AuditOptions) -> tuple[list[Finding], dict[str, Any]]:
    """Every microsocks finding for the command lines in this file, and `proxy_paths`."""
    findings: list[Finding] = []
    stranger = outside_client(options, [])
    paths = []
    for inv in cfg.invocations:
        d = inv.directive
        conf = Confidence.POSSIBLE if inv.unresolved else Confidence.LIKELY
        ev = [d.evidence(), Evidence("note", "effective: " + shlex.join(inv.argv))]
        if inv.unresolved:
            ev.append(Evidence("note", "unresolved variables: " + ", ".join(inv.unresolved)))
        reachable = listener_reachable(inv.listen, stranger)
        is_open = reachable and not inv.authenticated
        if is_open:
            findings.append(NO_AUTH.finding(
                f"microsocks on {inv.listen}:{inv.port} relays SOCKS5 for anyone "
                f"(e.g. {stranger}) to any host and port, 25 included",
                location=d.location, evidence=ev, confidence=conf,
                edits=[_edit_listen(inv)]))
        if inv.auth_once and inv.authenticated:
            findings.append(AUTH_ONCE.finding(
                "microsocks -1: one login whitelists the client's address",
                location=d.location, evidence=ev, confidence=Confidence.CONFIRMED,
                edits=[_edit_drop_once(inv)]))
        host = inv.listen
        listen = f"[{host}]:{inv.port}" if ":" in host else f"{host}:{inv.port}"
        clients = "outside" if is_open else ("loopback" if not reachable else "trusted")
        paths.append(proxy_path("microsocks", cfg.path, listen, open_to_outside=is_open,
                                reaches_ports=PROBE_PORTS, loopback_ports=PROBE_PORTS,
                                clients=clients, evidence=[d]))
    is_any_open = any(p["open_to_outside"] for p in paths)
    verdicts = {f"SOCKS {p}": is_any_open for p in PROBE_PORTS}
    return findings, {"proxy_paths": paths, "outside_client": str(stranger),
                      "outside_verdicts": verdicts}
