"""Cross-service rules: a proxy that reaches the host's own MTA, where the MTA trusts the
address the proxy connects from, relays mail for strangers (CROSS-PROXY-TO-LOCAL-MTA).

Each auditor publishes facts in `AuditResult.facts`; this module only combines them.

`facts["proxy_paths"]` — list of dicts, one per proxy listener and path (the shape
`relayguard.audit.addresses.proxy_path` builds; keys after `clients` are optional extras):
    server           "nginx", "apache", "squid", …
    config           the audited config path
    listen           "addr:port" where clients reach the proxy ("*" = all addresses)
    open_to_outside  bool: the outside client (AuditOptions.outside_client or an Internet
                     address) passes the proxy's ACL and can reach the listener
    reaches_ports    [int]: ports of third-party hosts (of 25, 80, 443, 465, 587) reached
    tunnel_ports     [int]: the subset reached through a raw tunnel (CONNECT, SOCKS, stream)
    reaches_loopback bool: some allowed client reaches 127.0.0.1 (the host itself) through it
    loopback_ports   [int]: ports reachable on 127.0.0.1 through it
    clients          "outside" | "trusted" | "loopback" | "nobody": who may use it
    loopback_tunnel_ports [int]: the loopback ports reached through a raw tunnel; when
                     present it alone decides whether SMTP bytes reach the local MTA
    tunnel           bool: raw bytes flow (to `tunnel_ports`, or every port when that is
                     empty); False for HTTP-level proxying, whose request lines an MTA sees
                     as bogus commands
    targets          ["host:port"] when the config fixes the destination; None = client picks
    source           "addr" the proxy connects from (proxy_bind…); None = 127.0.0.1
    kind             free text ("http-host", "connect", "stream", …)
    evidence         [{"path", "line", "text"}] of the directives that open the path
    edits            [relayguard.findings.Edit] that close the path (become the finding's)

`facts["mta"]` — list of dicts, one per SMTP listener (Postfix smtpd service, Exim daemon):
    server, service     "postfix"/"exim", service name
    listen              ["addr:port", …]
    trusted_networks    ["127.0.0.0/8", "!10.0.0.1/32", …] (relay without auth)
    trusts_loopback     bool: 127.0.0.1 is trusted
    relays_for_trusted  bool: a trusted client really gets RCPT to a foreign domain accepted
    forbids_http_commands  bool: HTTP request lines end the session (Postfix default)
    evidence            [{"path", "line", "text"}] of the trust settings
"""

from __future__ import annotations

import ipaddress
from typing import Any

from relayguard.audit.base import AuditResult
from relayguard.catalogue import Rule
from relayguard.digits import ascii_int
from relayguard.findings import (
    Category,
    Confidence,
    Edit,
    Evidence,
    Finding,
    Location,
    Severity,
)

SMTP_PORTS = (25, 465, 587)

PROXY_TO_LOCAL_MTA = Rule(
    id="CROSS-PROXY-TO-LOCAL-MTA",
    server="cross",
    category=Category.SMTP_VIA_PROXY,
    severity=Severity.CRITICAL,
    title="a proxy reaches the local MTA from an address the MTA trusts: open relay via proxy",
    description="A proxy path (CONNECT, SOCKS, nginx stream, Host-header proxy…) lets a "
    "client open a connection to this host's own SMTP port, and the MTA trusts the address "
    "the proxy connects from (Postfix `mynetworks` with 127.0.0.0/8, the Debian default; "
    "Exim `relay_from_hosts` with 127.0.0.1). The MTA sees a trusted local client and relays.",
    why="The MTA itself is closed, the proxy looks harmless towards third parties, yet "
    "together they relay spam for anybody, logged as coming from localhost. This is both an "
    "smtp-via-proxy path and an open SMTP relay, reported once as one chain.",
    fix="Close the proxy to outside clients (or stop it reaching port 25/465/587), and do "
    "not let the proxy's source address into the MTA's trusted networks (use "
    "`proxy_bind` to an untrusted address, or PROXY protocol).",
    reference="https://www.postfix.org/postconf.5.html#mynetworks",
    also=(Category.OPEN_SMTP_RELAY,),
    bad="# nginx.conf (with the stock Postfix main.cf: mynetworks = 127.0.0.0/8 …)\n"
    "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\npid nginx.pid;\n"
    "error_log error.log;\nevents {}\nstream {\n    server {\n"
    "        listen 2525;\n        proxy_pass 127.0.0.1:25;\n    }\n}\n",
    good="# nginx.conf (with the stock Postfix main.cf: mynetworks = 127.0.0.0/8 …)\n"
    "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\npid nginx.pid;\n"
    "error_log error.log;\nevents {}\nstream {\n    server {\n"
    "        listen 2525;\n        allow 127.0.0.1;\n        deny all;\n"
    "        proxy_pass 127.0.0.1:25;\n    }\n}\n",
)

RULES: tuple[Rule, ...] = (PROXY_TO_LOCAL_MTA,)


def cross_findings(results: list[AuditResult]) -> list[Finding]:
    """CROSS-PROXY-TO-LOCAL-MTA for every (proxy path, local MTA listener) that chains."""
    paths = [p for r in results for p in r.facts.get("proxy_paths", [])]
    mtas = [m for r in results for m in _as_list(r.facts.get("mta"))]
    out: list[Finding] = []
    for p in paths:
        for m in mtas:
            f = _chain(p, m)
            if f is not None:
                out.append(f)
                break  # one finding per proxy path: the chain, not every MTA listener
    return out


def _as_list(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    return list(value or [])


def _chain(p: dict[str, Any], m: dict[str, Any]) -> Finding | None:
    if not m.get("relays_for_trusted"):
        return None
    if p.get("clients") in ("nobody", "loopback") and not p.get("open_to_outside"):
        return None  # only clients that may already use the MTA directly
    if "loopback_ports" in p:
        reach = list(p.get("loopback_ports") or [])
    else:
        reach = list(p.get("reaches_ports") or []) if p.get("reaches_loopback") else []
    listens = m.get("listen", [])
    usable = [port for port in (_port(x) for x in listens if _on_loopback(x))
              if port and port in reach]
    targets = p.get("targets")
    if targets is not None:
        usable = [x for x in usable
                  if any(_reaches(t, listen, x) for t in targets for listen in listens)]
    if not usable:
        return None
    source = p.get("source") or "127.0.0.1"
    if not _trusted(source, m.get("trusted_networks", [])):
        return None
    tunnelled = [port for port in usable if _tunnels_to(p, port)]
    tunnel = bool(tunnelled)
    if not tunnel and m.get("forbids_http_commands"):
        return None  # HTTP request lines make Postfix hang up (smtpd_forbidden_commands)
    usable = tunnelled or usable
    open_ = bool(p.get("open_to_outside"))
    if open_ and tunnel:
        sev, conf = Severity.CRITICAL, Confidence.LIKELY
    elif tunnel:
        sev, conf = Severity.HIGH, Confidence.LIKELY
    else:
        sev, conf = Severity.MEDIUM, Confidence.POSSIBLE
    evidence = [_ev(e) for e in p.get("evidence", [])] + [_ev(e) for e in m.get("evidence", [])]
    if not p.get("evidence") and p.get("config"):
        evidence.insert(0, Evidence("config", f"{p.get('config')}: {p.get('server')} listening "
                                    f"on {p.get('listen')}", Location(p.get("config"))))
    who = "any client" if open_ else "clients allowed by the proxy's ACL"
    first = (p.get("evidence") or [{"path": p.get("config")}])[0]
    title = (f"{p.get('server', 'proxy')} on {p.get('listen')} lets {who} reach "
             f"{m.get('server', 'the MTA')} on port {usable[0]} from {source}, which it "
             "trusts: open SMTP relay via the proxy")
    edits = [e for e in p.get("edits", []) if isinstance(e, Edit)]
    return PROXY_TO_LOCAL_MTA.finding(
        title, location=Location(first.get("path") or None, first.get("line") or None),
        evidence=evidence, severity=sev, confidence=conf, edits=edits)


def _tunnels_to(p: dict[str, Any], port: int) -> bool:
    """Do raw bytes reach local `port` through this path? A proxy that tunnels to 443 only
    carries nothing but HTTP request lines to port 25, and those are no SMTP session."""
    if "loopback_tunnel_ports" in p:
        return port in (p.get("loopback_tunnel_ports") or [])
    if "tunnel" in p:  # nginx: stream paths tunnel to every port they reach, http paths none
        ports = p.get("tunnel_ports")
        return bool(p["tunnel"]) and (not ports or port in ports)
    return port in (p.get("tunnel_ports") or [])


def _ev(e: dict[str, Any]) -> Evidence:
    path, line = e.get("path") or None, e.get("line") or None
    where = f"{path}:{line}: " if path and line else ""
    return Evidence("config", f"{where}{e.get('text', '')}",
                    Location(path, line) if path else None)


def _reaches(target: str, listen: str, port: int) -> bool:
    """Does a fixed proxy target `host:port` land on this MTA listener?"""
    t_host, _, t_port = target.rpartition(":")
    l_host, _, l_port = listen.rpartition(":")
    if t_port != l_port or int(t_port or 0) != port:
        return False
    t_host, l_host = t_host.strip("[]"), l_host.strip("[]")
    if l_host in ("*", "", "0.0.0.0", "::"):
        return t_host == "localhost" or _is_loopback(t_host)
    return t_host == l_host or (t_host == "localhost" and l_host in ("127.0.0.1", "::1"))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port(listen: str) -> int | None:
    tail = listen.rpartition(":")[2]
    return ascii_int(tail)


def _on_loopback(listen: str) -> bool:
    """Is an MTA listener reachable at a loopback address (wildcards included)?"""
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("*", "", "0.0.0.0", "::", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: assume it may be local


def _trusted(source: str, networks: list[str]) -> bool:
    try:
        addr = ipaddress.ip_address(source.strip("[]"))
    except ValueError:
        return False
    for n in networks:
        neg = n.startswith("!")
        try:
            net = ipaddress.ip_network(n.lstrip("!"), strict=False)
        except ValueError:
            continue
        if addr in net:
            return not neg
    return False
