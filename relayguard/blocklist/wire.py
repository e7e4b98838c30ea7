"""Lean DNS wire handling for the blocklist client's hot path: query packets, common replies.

dnspython's `Message.from_wire` builds a whole object graph per reply; a DNSBL reply is
nearly always NXDOMAIN, or one A or TXT RRset, with at most one SOA in the authority
section. `read_reply` decodes exactly those shapes, following dnspython's own rules (name
compression, label and length limits, trailing bytes), and returns None for anything else so
the caller falls back to dnspython. Whatever it does decode equals dnspython's reading; the
tests fuzz the two against each other.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from dns.name import MAX_COMPRESSION_POINTER_CHAIN as _MAX_HOPS  # dnspython's own limit

A, SOA, TXT, IN = 1, 6, 16, 1
_TC, _OPCODE = 0x0200, 0x7800
_RCODES = frozenset((0, 2, 3, 5))  # NOERROR, SERVFAIL, NXDOMAIN, REFUSED
_MAX_TTL = 0x7FFFFFFF  # dnspython reads larger TTLs as 0 (RFC 2181 §8)
_RR = struct.Struct("!HHIH")
_COUNTS = struct.Struct("!HHHH")
_LENGTH = [bytes((size,)) for size in range(64)]  # a label's length byte, by length
_QUERY_FLAGS = b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"  # RD; one question


class Reply(NamedTuple):
    """A reply as the blocklist client needs it."""

    rcode: int
    values: tuple[str, ...]  # the A addresses or joined TXT strings, deduplicated, in order
    ttl: int  # the lowest TTL among those records (0 when there are none)
    negative_ttl: int | None  # min(SOA TTL, SOA minimum) from the authority section, if any


class _Malformed(Exception):
    """The reply breaks a rule dnspython enforces (it would reject the packet as well)."""


def question(qname: str, rdtype: int) -> bytes:
    """The question section for an ASCII name, lower-cased so answers compare directly."""
    labels = qname.rstrip(".").lower().encode("ascii").split(b".")
    try:
        wire = b"".join([_LENGTH[len(label)] + label for label in labels])
    except IndexError:
        raise ValueError(f"label longer than 63 bytes in {qname!r}") from None
    if b"" in labels:
        raise ValueError(f"empty label in {qname!r}")
    if len(wire) > 254:
        raise ValueError(f"name too long: {qname!r}")
    return wire + b"\x00" + rdtype.to_bytes(2, "big") + b"\x00\x01"


def query(qid: int, question_wire: bytes) -> bytes:
    """A recursive query datagram: the ID, flags RD, one question."""
    return qid.to_bytes(2, "big") + _QUERY_FLAGS + question_wire


def read_reply(data: bytes, rdtype: int) -> Reply | None:
    """The reply's rcode, A/TXT values and TTLs; None when dnspython must read it instead.

    None covers truncation, other opcodes and rcodes, record types other than the one asked
    (CNAME chains, NS, OPT), several owner names, and anything malformed.
    """
    n = len(data)
    if n < 12 or rdtype not in (A, TXT):
        return None
    flags = data[2] << 8 | data[3]
    rcode = flags & 0x0F
    if flags & (_TC | _OPCODE) or rcode not in _RCODES:
        return None
    qdcount, ancount, nscount, arcount = _COUNTS.unpack_from(data, 4)
    if qdcount != 1 or nscount > 1 or arcount:
        return None
    try:
        pos = _name_end(data, 12, n) + 4
        values: list[str] = []
        seen: set[bytes] = set()
        ttl: int | None = None
        owner = b""
        for i in range(ancount):
            start = pos
            pos = _name_end(data, pos, n)
            if i == 0:
                owner = data[start:pos]
            elif data[start:pos] != owner:
                return None  # dnspython groups by owner name: leave that to it
            rtype, rclass, rttl, rdlen = _RR.unpack_from(data, pos)
            pos += 10
            end = pos + rdlen
            if rtype != rdtype or rclass != IN or end > n:
                return None
            raw = data[pos:end]
            value = _a_text(raw) if rtype == A else _txt_text(raw)
            rttl = 0 if rttl > _MAX_TTL else rttl
            ttl = rttl if ttl is None else min(ttl, rttl)
            if raw not in seen:  # an RRset holds each rdata once
                seen.add(raw)
                values.append(value)
            pos = end
        negative = None
        if nscount:
            pos = _name_end(data, pos, n)
            rtype, rclass, rttl, rdlen = _RR.unpack_from(data, pos)
            pos += 10
            end = pos + rdlen
            if rtype != SOA or rclass != IN or end > n:
                return None
            pos = _name_end(data, _name_end(data, pos, end), end)  # MNAME, RNAME
            if pos + 20 != end:
                raise _Malformed("SOA rdata length")
            negative = min(0 if rttl > _MAX_TTL else rttl,
                           int.from_bytes(data[end - 4:end], "big"))
            pos = end
        if pos != n:
            raise _Malformed("trailing bytes")
    except (_Malformed, struct.error, IndexError):
        return None
    return Reply(rcode, tuple(values), ttl or 0, negative)


def _name_end(data: bytes, pos: int, limit: int) -> int:
    """Where the (possibly compressed) name at `pos` ends, checked as dnspython checks it:
    pointers only backwards and never into the name itself, at most 16 hops, 255 bytes."""
    biggest = start = pos
    end = limit
    after = -1
    total = 1
    hops = 0
    while True:
        if pos >= end:
            raise _Malformed("name runs past its end")
        count = data[pos]
        pos += 1
        if count == 0:
            break
        if count < 64:
            pos += count
            if pos > end:
                raise _Malformed("label runs past its end")
            total += count + 1
        elif count >= 192:
            if pos >= end:
                raise _Malformed("pointer runs past its end")
            target = (count & 0x3F) << 8 | data[pos]
            pos += 1
            if target >= biggest:
                raise _Malformed("pointer does not point backwards")
            if after < 0:
                after = pos
            hops += 1
            if hops > _MAX_HOPS:
                raise _Malformed("pointer chain too long")
            end = start  # the target must not run into the part that pointed to it
            biggest = start = pos = target
        else:
            raise _Malformed("bad label type")
    if total > 255:
        raise _Malformed("name too long")
    return pos if after < 0 else after


def _a_text(raw: bytes) -> str:
    if len(raw) != 4:
        raise _Malformed("A rdata is not 4 bytes")
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def _txt_text(raw: bytes) -> str:
    """The TXT strings joined and decoded as the client reports them."""
    strings: list[bytes] = []
    pos, n = 0, len(raw)
    if not n:
        raise _Malformed("TXT without strings")
    while pos < n:
        size = raw[pos]
        pos += 1 + size
        if pos > n:
            raise _Malformed("TXT string runs past the rdata")
        strings.append(raw[pos - size:pos])
    return b"".join(strings).decode("utf-8", "replace")
