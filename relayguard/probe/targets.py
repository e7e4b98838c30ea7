"""Target parsing: host, host:port, IPv4/IPv6 literals, [v6]:port, CIDR (capped).

Only named targets are probed. A CIDR wider than /20 (IPv4, 4096 addresses) or /116 (IPv6)
needs `allow_large`, and nothing above 65536 addresses is ever expanded.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from relayguard.digits import is_digits
from relayguard.errors import InputError, UsageError

LARGE_V4_PREFIX = 20
LARGE_V6_PREFIX = 116
HARD_CAP = 65536
MAX_ADDRESSES_PER_NAME = 16  # a hostile or broken DNS answer must not widen the scan
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?$")


@dataclass(frozen=True, slots=True)
class Target:
    """One host (address or name) and an optional explicit port."""

    host: str
    port: int | None = None


def _port(text: str, original: str) -> int:
    if not is_digits(text) or not 1 <= int(text) <= 65535:
        raise UsageError(f"target {original!r}: port must be 1-65535")
    return int(text)


def _expand_network(text: str, allow_large: bool) -> list[Target]:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise UsageError(f"target {text!r}: {exc}") from None
    limit = LARGE_V4_PREFIX if net.version == 4 else LARGE_V6_PREFIX
    if net.prefixlen < limit and not allow_large:
        raise UsageError(f"target {text!r} has {net.num_addresses} addresses; networks wider "
                         f"than /{limit} need --allow-large")
    if net.num_addresses > HARD_CAP:
        raise UsageError(f"target {text!r} has {net.num_addresses} addresses; at most "
                         f"{HARD_CAP} are ever probed in one run")
    hosts = list(net.hosts()) if net.num_addresses > 2 else list(net)
    return [Target(str(h)) for h in hosts]


def literal(host: str) -> str | None:
    """The canonical form of an IP address literal, None for a name: a literal needs no
    resolver (nor a thread to wait for one)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def addresses_of(host: str) -> tuple[list[str], str | None]:
    """Every distinct address a target name resolves to (A and AAAA, in resolver order, at
    most MAX_ADDRESSES_PER_NAME) and a note naming them when there are several; a literal is
    itself. All of them are the named host: an open proxy on a name's second address is as
    open as on its first. OSError when the name does not resolve."""
    address = literal(host)
    if address is not None:
        return [address], None
    found: list[str] = []
    for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM):
        address = str(info[4][0])
        if address not in found:
            found.append(address)
    kept = found[:MAX_ADDRESSES_PER_NAME]
    if len(kept) < 2:
        return kept, None
    left = f"; {len(found) - len(kept)} more not probed" if len(found) > len(kept) else ""
    return kept, f"{host} resolves to {len(found)} addresses, each probed: " \
                 f"{', '.join(kept)}{left}"


def parse_target(text: str, allow_large: bool = False) -> list[Target]:
    """One command-line target into Targets; UsageError with the reason when malformed."""
    t = text.strip()
    if not t:
        raise UsageError("empty target")
    if "/" in t:
        return _expand_network(t, allow_large)
    m = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", t)
    if m:
        try:
            addr = ipaddress.IPv6Address(m.group(1))
        except ValueError:
            raise UsageError(f"target {text!r}: not an IPv6 address") from None
        return [Target(str(addr), _port(m.group(2), text) if m.group(2) is not None else None)]
    if t.count(":") > 1:
        try:
            return [Target(str(ipaddress.IPv6Address(t)))]
        except ValueError:
            raise UsageError(f"target {text!r}: not an IPv6 address "
                             "(write [addr]:port for a port)") from None
    host, sep, port_text = t.partition(":")
    port = _port(port_text, text) if sep else None
    try:
        return [Target(str(ipaddress.IPv4Address(host)), port)]
    except ValueError:
        pass
    if not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
        raise UsageError(f"target {text!r}: not a host name or IP address")
    return [Target(host.rstrip(".").lower(), port)]


def parse_targets(texts: list[str], allow_large: bool = False) -> list[Target]:
    """All targets, de-duplicated in order."""
    out: dict[Target, None] = {}
    for text in texts:
        for target in parse_target(text, allow_large):
            out[target] = None
    total = len(out)
    if total > HARD_CAP:
        raise UsageError(f"{total} targets; at most {HARD_CAP} are probed in one run")
    return list(out)


def read_targets_file(path: Path) -> list[str]:
    """One target per line; blank lines and `#` comments ignored."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(str(path), f"cannot read targets file: {exc.strerror}") from None
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def parse_ports(text: str) -> tuple[int, ...]:
    """`25,80,8000-8010` into ports; ranges capped at 65535 entries in total."""
    ports: dict[int, None] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        a = _port(lo, text)
        b = _port(hi, text) if sep else a
        if b < a:
            raise UsageError(f"--ports {text!r}: range {part} is backwards")
        for p in range(a, b + 1):
            ports[p] = None
    if not ports:
        raise UsageError("--ports: no port given")
    return tuple(ports)
