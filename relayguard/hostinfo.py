"""This machine's own addresses, read from /proc (Linux): facts both `audit` and `scan` need.

The audit asks which addresses are the host's own (Postfix `mynetworks_style = host` trusts
exactly those); `scan` asks which are public (blocklists) and whether a target is this machine.
Kept apart from both so neither capability depends on the other. On systems without /proc the
list is empty and callers fall back to what they were told. The probe's canary asks whether a
TCP socket of this host runs between two endpoints (`tcp_socket_between`).
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import struct
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


def bind_error(address: str) -> str | None:
    """Why `address` cannot be bound here (it is not this host's), or None when it can: the
    one test of "is this mine" that also holds for addresses /proc does not list."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


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


def proc_address(text: str) -> str:
    """/proc/net/tcp{,6} hex address (host byte order per 32-bit word) to text."""
    raw = bytes.fromhex(text)
    if len(raw) not in (4, 16):
        raise ValueError(f"not an address: {text!r}")
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", struct.unpack(">I", raw)[0]))
    words = struct.unpack(">4I", raw)
    packed = b"".join(struct.pack("<I", w) for w in words)
    addr = ipaddress.IPv6Address(packed)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)


def tcp_socket_between(local: tuple[str, int], remote: tuple[str, int],
                       proc_net: Path = PROC_NET) -> bool | None:
    """Whether a TCP socket of this network namespace runs from `local` to `remote` (in any
    state), from /proc/net/tcp{,6}; None when neither can be read (not Linux)."""
    ports = (f":{local[1]:04X}", f":{remote[1]:04X}")
    wanted = (ipaddress.ip_address(local[0]), ipaddress.ip_address(remote[0]))
    readable = False
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) < 3 or not (fields[1].endswith(ports[0])
                                       and fields[2].endswith(ports[1])):
                continue  # the cheap test first: most sockets differ in their ports
            try:
                ends = tuple(ipaddress.ip_address(proc_address(f[:-5])) for f in fields[1:3])
            except ValueError:
                continue
            if ends == wanted:
                return True
    return False if readable else None
