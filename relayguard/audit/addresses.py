"""Address reasoning the proxy auditors share: who counts as a stranger, who can reach a
listener, which networks are local, and the `proxy_paths` fact the cross-service rule reads.

`proxy_paths` (in `AuditResult.facts`) is a list of dicts, one per listener:
    {"server": "squid", "listen": "127.0.0.1:3128", "config": "/etc/squid/squid.conf",
     "open_to_outside": bool,          # the outside client gets anything relayed at all
     "reaches_ports": [25, 443, ...],  # PROBE_PORTS a client allowed to use it reaches on a
                                       # third-party host (the outside client when open)
     "tunnel_ports": [25, ...],        # the subset reached through a raw tunnel (CONNECT,
                                       # SOCKS) rather than as a forwarded HTTP request
     "reaches_loopback": bool,         # some allowed client reaches 127.0.0.1 through it
     "loopback_ports": [25, ...],      # PROBE_PORTS reachable on 127.0.0.1 through it
     "loopback_tunnel_ports": [443],   # the subset of those reached through a raw tunnel:
                                       # only these carry SMTP to the local MTA (Postfix
                                       # hangs up on the request lines of plain HTTP)
     "clients": "outside" | "trusted" | "loopback" | "nobody"}

Each proxy auditor also records `outside_verdicts`: {"GET 80": bool, "CONNECT 25": bool, …}
(`SOCKS 25` for SOCKS servers) — what the outside client gets for a third-party host; the
daemon agreement tests compare exactly these with the real daemon.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from relayguard.audit.base import AuditOptions, IPAddress
from relayguard.audit.directive import Directive

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SMTP_PORTS: tuple[int, ...] = (25, 465, 587)
PROBE_PORTS: tuple[int, ...] = (25, 80, 443, 465, 587)

# Documentation / well-known public addresses tried as "a stranger on the Internet".
_OUTSIDE_CANDIDATES = ("198.51.100.77", "203.0.113.77", "192.0.2.77", "45.33.32.77",
                       "81.2.69.77")
# What a site may legitimately call "its own network": loopback, RFC 1918, CGN, link-local,
# "this network", ULA. Anything else in an allow list lets strangers in.
_LOCAL_NETS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7", "fe80::/10"))
LOOPBACK = ipaddress.ip_address("127.0.0.1")
# Listener names that can only mean loopback: the standard hosts entries, and the loopback
# interface (Dante's `internal: lo`).
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "lo")
THIRD_PARTY = ipaddress.ip_address("203.0.113.25")  # the relay target we reason about


def is_local_net(net: IPNetwork) -> bool:
    """True if `net` lies inside loopback/private/link-local space (a plausible LAN)."""
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None \
            and net.prefixlen >= 96:
        mapped = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
        return is_local_net(mapped)
    return any(net.version == n.version and net.subnet_of(n) for n in _LOCAL_NETS)  # type: ignore[arg-type]


def outside_client(options: AuditOptions, mentioned: Iterable[IPNetwork]) -> IPAddress:
    """The client to evaluate: the user's choice, else an Internet address no narrow ACL names."""
    if options.outside_client is not None:
        return options.outside_client
    narrow = [n for n in mentioned if n.prefixlen >= (8 if n.version == 4 else 16)]
    for text in _OUTSIDE_CANDIDATES:
        addr = ipaddress.ip_address(text)
        if not any(addr.version == n.version and addr in n for n in narrow):
            return addr
    return ipaddress.ip_address(_OUTSIDE_CANDIDATES[0])


def representatives(nets: Iterable[IPNetwork], limit: int = 12) -> list[IPAddress]:
    """One address inside each local network (the "trusted clients" an ACL admits)."""
    out: list[IPAddress] = [LOOPBACK]
    for net in nets:
        if not is_local_net(net):
            continue
        addr = net.network_address + 1 if net.num_addresses > 2 else net.network_address
        if addr not in out:
            out.append(addr)
        if len(out) >= limit:
            break
    return out


def listener_reachable(host: str | None, client: IPAddress) -> bool:
    """Can `client` open a TCP connection to a socket bound to `host` (None = all addresses)?"""
    if not host or host in ("*", "0.0.0.0", "::", "[::]"):
        return True
    if host.lower() in _LOOPBACK_NAMES:  # resolved (or, for `lo`, bound) to loopback
        return client.is_loopback
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True  # a name or interface: assume reachable, that is the safe assumption
    if addr.is_loopback:
        return client.is_loopback
    return True


def parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def parse_net(text: str) -> IPNetwork | None:
    """`10.0.0.0/8`, `10.0.0.0/255.0.0.0`, `::1`, `[::1]/128` -> network (None if not one)."""
    t = text.strip()
    if t.startswith("["):
        t = t[1:].replace("]", "", 1)
    try:
        return ipaddress.ip_network(t, strict=False)
    except ValueError:
        return None


def who_uses(open_to_outside: bool, users: Iterable[IPAddress]) -> str:
    """Label for the clients a proxy serves: outside / trusted (non-loopback) / loopback."""
    if open_to_outside:
        return "outside"
    users = list(users)
    if not users:
        return "nobody"
    return "loopback" if all(u.is_loopback for u in users) else "trusted"


def proxy_path(server: str, config: str, listen: str, *, open_to_outside: bool,
               reaches_ports: Iterable[int], loopback_ports: Iterable[int],
               clients: str, tunnel_ports: Iterable[int] | None = None,
               loopback_tunnel_ports: Iterable[int] | None = None,
               evidence: Iterable[Directive | None] = ()) -> dict[str, Any]:
    """One `proxy_paths` fact (see the module docstring). Tunnel ports default to every
    reached port; loopback tunnel ports to the loopback ports that are tunnel ports too.
    `evidence` are the lines that open the path (the listener first): the cross-service
    finding cites them as its file:line."""
    lp = sorted(set(loopback_ports))
    reach = sorted(set(reaches_ports))
    tunnel = reach if tunnel_ports is None else sorted(set(tunnel_ports))
    loop_tunnel = set(lp) & set(tunnel) if loopback_tunnel_ports is None \
        else set(loopback_tunnel_ports)
    return {"server": server, "config": config, "listen": listen,
            "open_to_outside": open_to_outside, "reaches_ports": reach,
            "tunnel_ports": tunnel, "reaches_loopback": bool(lp), "loopback_ports": lp,
            "loopback_tunnel_ports": sorted(loop_tunnel), "clients": clients,
            "evidence": [{"path": d.path, "line": d.line,
                          "text": " ".join(part.strip() for part in d.lines)}
                         for d in dict.fromkeys(evidence) if d is not None]}
