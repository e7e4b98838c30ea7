"""This machine's own addresses, read from /proc (Linux): facts both `audit` and `scan` need.

The audit asks which addresses are the host's own (Postfix `mynetworks_style = host` trusts
exactly those); `scan` asks which are public (blocklists) and whether a target is this machine.
Kept apart from both so neither capability depends on the other. On systems without /proc the
list is empty and callers fall back to what they were told.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
from pathlib import Path

PROC_NET = Path("/proc/net")


def local_addresses(proc_net: Path = PROC_NET) -> list[str]:
    """The host's own IPv4/IPv6 addresses (from /proc/net/fib_trie and if_inet6)."""
    out: list[str] = []
    try:
        lines = (proc_net / "fib_trie").read_text(encoding="ascii").splitlines()
    except OSError:
        lines = []
    for prev, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line:
            addr = prev.strip().split()[-1]
            if addr not in out:
                out.append(addr)
    try:
        for line in (proc_net / "if_inet6").read_text(encoding="ascii").splitlines():
            raw = line.split()[0]
            addr = str(ipaddress.IPv6Address(bytes.fromhex(raw)))
            if addr not in out:
                out.append(addr)
    except (OSError, ValueError, IndexError):
        pass
    return out


def is_local_host(host: str, addresses: list[str] | None = None) -> bool:
    """True when `host` (an address) is this machine: loopback or one of its addresses."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host in ("localhost", socket.gethostname())
    return ip.is_loopback or host in (addresses if addresses is not None else local_addresses())


def public_addresses(addresses: list[str]) -> list[str]:
    """The globally routable ones: what a blocklist could list."""
    return [a for a in addresses if ipaddress.ip_address(a).is_global]
