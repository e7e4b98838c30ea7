"""What this machine listens on, read from /proc (Linux).

`scan` probes only the TCP ports something actually listens on (no guessing, no port sweep).
Reading /proc keeps this dependency-free; on other systems the list is empty and the caller
falls back to the probe's default ports. The host's own addresses are `relayguard.hostinfo`'s.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from relayguard.hostinfo import PROC_NET, proc_address

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening TCP socket: the address it is bound to (0.0.0.0/:: = all) and port."""

    address: str
    port: int

    @property
    def wildcard(self) -> bool:
        return self.address in ("0.0.0.0", "::")

    def serves(self, host: str) -> bool:
        """True when a connection to `host` on this port reaches this socket."""
        if self.wildcard:  # `::` is dual-stack on Linux by default
            return self.address == "::" or ":" not in host
        return ipaddress.ip_address(self.address) == ipaddress.ip_address(host)


def parse_proc_net(text: str) -> list[Listener]:
    """Listening sockets from the text of /proc/net/tcp or tcp6 (header line skipped)."""
    out: list[Listener] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != _LISTEN:
            continue
        addr, _, port = fields[1].partition(":")
        try:
            number = int(port, 16)
            if not 0 < number < 65536:
                continue
            out.append(Listener(proc_address(addr), number))
        except ValueError:
            continue
    return out


def listeners(proc_net: Path = PROC_NET) -> list[Listener]:
    """Every listening TCP socket on this machine (both families), deduplicated, sorted."""
    found: set[Listener] = set()
    for name in ("tcp", "tcp6"):
        try:
            found.update(parse_proc_net((proc_net / name).read_text(encoding="ascii")))
        except OSError:
            continue
    return sorted(found, key=lambda s: (s.port, s.address))


def ports_serving(host: str, socks: list[Listener]) -> list[int]:
    """The ports on which a connection to `host` reaches a listener."""
    return sorted({s.port for s in socks if s.serves(host)})


def other_addresses(address: str, socks: list[Listener]) -> tuple[list[tuple[str, int]], str]:
    """Services bound to another specific, non-loopback address of this machine than
    `address` (the one strangers reach by default): they are just as reachable from outside,
    so they are probed at their own address. Returns the (address, port) pairs and a note.

    Link-local IPv6 sockets need a scope id to reach, so they are named, not probed.
    """
    out: list[tuple[str, int]] = []
    scoped: list[str] = []
    for s in socks:
        if s.wildcard or s.serves(address):
            continue
        ip = ipaddress.ip_address(s.address)
        if ip.is_loopback:
            continue
        if ip.is_link_local:
            scoped.append(f"[{s.address}]:{s.port}")
        else:
            out.append((s.address, s.port))
    parts = []
    if out:
        shown = ", ".join(f"[{a}]:{p}" if ":" in a else f"{a}:{p}" for a, p in out)
        parts.append(f"also probed at their own address (bound to another address of this "
                     f"machine than {address}): {shown}")
    if scoped:
        parts.append(f"bound to link-local addresses, not probed (they need an interface "
                     f"scope): {', '.join(scoped)}")
    return out, "; ".join(parts)
