"""What to ask a blocklist: targets parsed from user input and RFC 5782 query names.

IPv4 is asked octet-reversed, IPv6 as 32 reversed nibbles (RFC 5782 §2.4) built from
`ipaddress`, never `dns.reversename`, which turns `::ffff:a.b.c.d` into an IPv4 name and so
would ask the IPv4 test point twice and the IPv6 one never. Domains are asked as IDNA A-labels.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from relayguard.digits import is_digits
from relayguard.errors import InputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class TargetKind(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    NAME = "name"  # a domain or hostname: checked on domain lists, resolved for IP lists


@dataclass(frozen=True, slots=True)
class Target:
    """One thing the user asked about, normalised: an address or an A-label name."""

    text: str  # as the user typed it
    kind: TargetKind
    value: str  # compressed address or lower-case A-label name, no trailing dot
    resolve: bool = True  # a name: also check its A/AAAA on IP lists (False: domain lists only)

    @property
    def address(self) -> IPAddress:
        return ipaddress.ip_address(self.value)


def parse_target(text: str) -> Target:
    """Read an IPv4, IPv6 or domain/hostname; raise InputError naming what is wrong."""
    raw = text.strip()
    if not raw:
        raise InputError("target", "empty target")
    candidate = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    try:
        addr = ipaddress.ip_address(candidate)
    except ValueError:
        try:
            return Target(raw, TargetKind.NAME, to_alabel(raw))
        except InputError:
            _name_the_mistake(raw)  # a pasted range, host:port or URL: say what it is
            raise
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        # A server reached through a mapped address *is* that IPv4 host.
        addr = addr.ipv4_mapped
    kind = TargetKind.IPV4 if addr.version == 4 else TargetKind.IPV6
    return Target(raw, kind, addr.compressed)


def _name_the_mistake(text: str) -> None:
    """An InputError that says what a pasted CIDR range, host:port or URL is, rather than
    reporting it as a domain with a bad label."""
    if "://" in text:
        raise InputError(text, "a URL is not a target: give its host name")
    if "/" in text:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            return
        raise InputError(text, "a network range is not a target: blocklists list single "
                         "addresses, so give each address to check")
    host, sep, port = text.rpartition(":")
    if sep and is_digits(port):
        try:
            ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
        except ValueError:
            if "." not in host or ":" in host:
                return
        raise InputError(text, "a port is not part of a target: blocklists list addresses "
                         f"and names, not services; give {host.strip('[]')} alone")


def to_alabel(name: str) -> str:
    """A domain as DNS carries it: lower-case IDNA A-labels, no trailing dot, validated."""
    text = name.strip().rstrip(".")
    if not text or len(text) > 253:
        raise InputError(name, "not a valid domain name (empty or longer than 253 characters)")
    labels = []
    for label in text.split("."):
        try:
            ascii_label = label.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise InputError(name, f"not a valid domain name: label {label!r} cannot be "
                             "encoded as IDNA") from None
        if not _LABEL.match(ascii_label):
            raise InputError(name, f"not a valid domain name: bad label {label!r}")
        labels.append(ascii_label)
    if labels[-1].isdigit():
        raise InputError(name, "not a valid IP address or domain name")
    out = ".".join(labels)
    if len(out) > 253:
        raise InputError(name, "not a valid domain name (longer than 253 characters)")
    return out


def skip_reason(addr: IPAddress) -> str | None:
    """Why an address cannot be on a public blocklist (private, loopback, ...), else None."""
    if addr.is_global:
        return None
    for attr, why in (("is_loopback", "loopback"), ("is_link_local", "link-local"),
                      ("is_multicast", "multicast"), ("is_unspecified", "unspecified"),
                      ("is_reserved", "reserved"), ("is_private", "private")):
        if getattr(addr, attr):
            return why
    return "not globally routable"


def ip_query_name(addr: IPAddress, zone: str) -> str:
    """RFC 5782 §2.1/§2.4: reversed octets or reversed full nibbles, then the zone.

    An IPv4-mapped IPv6 address is asked in nibble form here (the RFC's IPv6 test points
    are mapped addresses); map real targets to IPv4 before calling (parse_target does).
    """
    return f"{reversed_labels(addr)}.{zone}"


def reversed_labels(addr: IPAddress) -> str:
    """The zone-independent part of an RFC 5782 name: `4.3.2.1` or 32 reversed nibbles."""
    if addr.version == 4:
        return ".".join(reversed(str(addr).split(".")))
    return ".".join(reversed(addr.exploded.replace(":", "")))


def domain_query_name(domain: str, zone: str) -> str:
    """RFC 5782 §3: the A-label name itself, prepended to the zone."""
    return f"{to_alabel(domain)}.{zone}"
