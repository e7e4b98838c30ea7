"""A polite async DNS client for blocklist queries: asyncio UDP, dnspython messages.

It talks only to the nameservers it is given (`--resolver`), caps concurrency, paces each
zone to a query rate, retries timeouts and SERVFAIL a bounded number of times, caches answers
for their TTL and never runs past a total deadline. Every outcome comes back as a `DnsAnswer`
value (answer, NXDOMAIN, NODATA, SERVFAIL, REFUSED, timeout); nothing raises to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import socket
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from relayguard.errors import InputError

MAX_CACHE_TTL = 3600
DEFAULT_NEGATIVE_TTL = 300


class Status(StrEnum):
    ANSWER = "answer"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Nameserver:
    """Where queries go: an IP and a port (53 unless `--resolver IP:PORT` says otherwise)."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Nameserver:
        """`IP`, `IP:PORT`, `IPv6` or `[IPv6]:PORT`; InputError when it is none of these."""
        raw = text.strip()
        host, port = raw, "53"
        if raw.startswith("["):
            host, sep, rest = raw[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise InputError("--resolver", f"{text!r} is not IP[:PORT]")
            port = rest[1:] or "53"
        elif raw.count(":") == 1:
            host, port = raw.split(":")
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise InputError("--resolver", f"{text!r} is not an IP address (IP[:PORT]); "
                             "a resolver is named by address, not by name") from None
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError("--resolver", f"{text!r}: port must be 1-65535")
        return cls(addr.compressed, int(port))


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """One question and what came back, kept whole so findings can quote it as evidence."""

    qname: str
    rdtype: str
    status: Status
    values: tuple[str, ...] = ()
    ttl: int = 0
    server: str = ""
    detail: str = ""

    def presentation(self) -> str:
        """Zone-file style lines, e.g. `4.3.2.1.zen.spamhaus.org. 60 IN A 127.0.0.4`."""
        name = self.qname.rstrip(".") + "."
        where = f" (from {self.server})" if self.server else ""
        if self.status is Status.ANSWER:
            return "\n".join(f"{name} {self.ttl} IN {self.rdtype} {v}" for v in self.values)
        extra = f": {self.detail}" if self.detail else ""
        return f"{name} IN {self.rdtype}: {self.status.value.upper()}{extra}{where}"


class DnsClient:
    """Bounded, paced, cached DNS queries to fixed nameservers; see the module docstring."""

    def __init__(self, servers: list[Nameserver], *, timeout: float = 2.0, retries: int = 1,
                 concurrency: int = 64, rate: float = 20.0, deadline: float = 60.0,
                 source: str | None = None) -> None:
        if not servers:
            raise InputError("--resolver", "no nameserver to ask")
        self.servers = list(servers)
        self.source = source
        self.timeout = timeout
        self.retries = max(0, retries)
        self.rate = rate
        self.deadline_seconds = deadline
        self._concurrency = max(1, concurrency)
        self._sem: asyncio.Semaphore | None = None
        self._deadline: float | None = None
        self._next_slot: dict[str, float] = {}
        self._cache: dict[tuple[str, str], tuple[float, DnsAnswer]] = {}
        self.sent = 0
        self.cache_hits = 0
        self._turn = 0
        self._muxes: dict[Nameserver, list[_UdpMux]] = {}
        self._open_locks: dict[Nameserver, asyncio.Lock] = {}

    def start(self) -> None:
        """Begin the total deadline (call inside the running event loop)."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.deadline_seconds
        self._sem = asyncio.Semaphore(self._concurrency)

    def _remaining(self) -> float:
        if self._deadline is None:
            self.start()
        assert self._deadline is not None
        return self._deadline - asyncio.get_running_loop().time()

    async def query(self, qname: str, rdtype: str = "A", *, bucket: str = "") -> DnsAnswer:
        """Ask every configured server in turn, with retries, inside the deadline."""
        key = (qname.lower(), rdtype)
        loop = asyncio.get_running_loop()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > loop.time():
            self.cache_hits += 1
            return hit[1]
        if (self.rate > 0 or self._remaining() <= 0) and not await self._pace(bucket):
            return DnsAnswer(qname, rdtype, Status.TIMEOUT, detail="total deadline reached "
                             "before the query could be sent")
        if self._sem is None:
            self.start()
        assert self._sem is not None
        async with self._sem:
            answer = await self._ask(qname, rdtype)
        if answer.status in (Status.ANSWER, Status.NXDOMAIN, Status.NODATA):
            self._cache[key] = (loop.time() + min(answer.ttl, MAX_CACHE_TTL), answer)
        return answer

    async def _pace(self, bucket: str) -> bool:
        """Wait for this zone's next query slot; False when that slot is past the deadline."""
        remaining = self._remaining()
        if remaining <= 0:
            return False
        if self.rate <= 0:
            return True
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next_slot.get(bucket, now))
        self._next_slot[bucket] = slot + 1.0 / self.rate
        if slot - now >= remaining:
            return False
        if slot > now:
            await asyncio.sleep(slot - now)
        return True

    async def _ask(self, qname: str, rdtype: str) -> DnsAnswer:
        last: DnsAnswer | None = None
        for _attempt in range(self.retries + 1):
            server = self.servers[self._turn % len(self.servers)]
            self._turn += 1
            remaining = self._remaining()
            if remaining <= 0:
                break
            last = await self._once(qname, rdtype, server, min(self.timeout, remaining))
            if last.status not in (Status.TIMEOUT, Status.SERVFAIL, Status.REFUSED,
                                   Status.ERROR):
                return last
            if last.status is Status.REFUSED and len(self.servers) == 1:
                return last
        return last or DnsAnswer(qname, rdtype, Status.TIMEOUT,
                                 detail="total deadline reached")

    async def _once(self, qname: str, rdtype: str, server: Nameserver,
                    timeout: float) -> DnsAnswer:
        self.sent += 1
        where = str(server)
        try:
            wanted = _RDTYPES.get(rdtype) or dns.rdatatype.from_text(rdtype)
            pool = self._muxes.get(server) or await self._open(server)
            mux = pool[_RANDOM.randrange(len(pool))] if len(pool) > 1 else pool[0]
            data = await mux.ask(qname, wanted, timeout)
            answer = parse_reply(data, qname, rdtype, where)
            if answer is not None:
                return answer
            # Truncated: ask again over TCP.
            request = dns.message.make_query(qname, rdtype)
            response = await dns.asyncquery.tcp(request, server.host, timeout=timeout,
                                                port=server.port, source=self.source)
        except TimeoutError:
            return DnsAnswer(qname, rdtype, Status.TIMEOUT, server=where,
                             detail=f"no answer within {timeout:.1f}s")
        except (OSError, dns.exception.DNSException, ValueError) as exc:
            return DnsAnswer(qname, rdtype, Status.ERROR, server=where,
                             detail=f"{type(exc).__name__}: {exc}")
        return _classify(qname, rdtype, response, where)

    async def _open(self, server: Nameserver) -> list[_UdpMux]:
        """One small pool of connected UDP sockets per nameserver, shared by all queries."""
        lock = self._open_locks.setdefault(server, asyncio.Lock())
        async with lock:
            if server in self._muxes:
                return self._muxes[server]
            loop = asyncio.get_running_loop()
            pool: list[_UdpMux] = []
            family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
            local = (self.source, 0) if self.source else None
            for _ in range(_SOCKETS_PER_SERVER):
                transport, mux = await loop.create_datagram_endpoint(
                    _UdpMux, remote_addr=(server.host, server.port), local_addr=local,
                    family=family)
                sock = transport.get_extra_info("socket")
                if sock is not None:  # bursts of answers must not overflow the default buffer
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                pool.append(mux)
            self._muxes[server] = pool
            return pool

    def close(self) -> None:
        """Close the UDP sockets (the event loop that made them must still be running)."""
        for pool in self._muxes.values():
            for mux in pool:
                mux.close()
        self._muxes.clear()
        self._open_locks.clear()


_SOCKETS_PER_SERVER = 4
_RDTYPES = {"A": dns.rdatatype.A, "AAAA": dns.rdatatype.AAAA, "TXT": dns.rdatatype.TXT}
# Query IDs only need to be unpredictable to off-path spoofers (the sockets are connected):
# a PRNG seeded from the OS is enough and much cheaper than a urandom call per query.
_RANDOM = random.Random(int.from_bytes(os.urandom(16), "big"))


class _UdpMux(asyncio.DatagramProtocol):
    """Many queries in flight over one connected UDP socket, matched by ID and question.

    dnspython's asyncquery opens a socket per query; sharing a few sockets is what makes
    thousands of DNSBL lookups cheap. The socket is connected, so the kernel drops
    datagrams from anyone but the nameserver; ID and question bytes are checked as well.
    """

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, tuple[bytes, asyncio.Future[bytes]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) < 12 or not data[2] & 0x80:  # too short, or a query rather than a reply
            return
        item = self.waiting.get(int.from_bytes(data[:2], "big"))
        if item is None:
            return
        question, fut = item
        if data[12:12 + len(question)].lower() == question and not fut.done():
            fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # e.g. ICMP port unreachable: nothing listens there, so nothing in flight will answer
        for _question, fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def ask(self, qname: str, rdtype: int, timeout: float) -> bytes:
        if self.transport is None or self.transport.is_closing():
            raise OSError("socket closed")
        loop = asyncio.get_running_loop()
        qid = _RANDOM.randrange(65536)
        while qid in self.waiting:
            qid = _RANDOM.randrange(65536)
        question = _question_wire(qname, rdtype)
        fut: asyncio.Future[bytes] = loop.create_future()
        self.waiting[qid] = (question, fut)
        timer = loop.call_later(timeout, _expire, fut)
        try:
            # header: ID, flags RD, 1 question
            self.transport.sendto(qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00"
                                  b"\x00\x00\x00\x00" + question)
            return await fut
        finally:
            timer.cancel()
            self.waiting.pop(qid, None)


def _expire(fut: asyncio.Future[bytes]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def _question_wire(qname: str, rdtype: int) -> bytes:
    """The question section for an ASCII name (lower-case, so answers compare directly)."""
    labels = qname.rstrip(".").lower().encode("ascii").split(b".")
    if not all(0 < len(label) < 64 for label in labels):
        raise ValueError(f"bad label in {qname!r}")
    wire = b"".join([bytes((len(label),)) + label for label in labels])
    if len(wire) > 254:
        raise ValueError(f"name too long: {qname!r}")
    return wire + b"\x00" + rdtype.to_bytes(2, "big") + b"\x00\x01"


def parse_reply(data: bytes, qname: str, rdtype: str, where: str) -> DnsAnswer | None:
    """A reply datagram as a DnsAnswer; None when truncated (ask over TCP).

    The bytes come from the network, so any parse failure becomes an ERROR answer.
    """
    # Fast path for the common answer: NXDOMAIN with nothing else to read.
    if len(data) >= 12 and data[3] & 0x0F == dns.rcode.NXDOMAIN and data[6:12] == bytes(6):
        return DnsAnswer(qname, rdtype, Status.NXDOMAIN, ttl=DEFAULT_NEGATIVE_TTL, server=where)
    try:
        response = dns.message.from_wire(data)
        if response.flags & dns.flags.TC:
            return None
        return _classify(qname, rdtype, response, where)
    except Exception as exc:  # outside input: every failure is a malformed reply
        return DnsAnswer(qname, rdtype, Status.ERROR, server=where,
                         detail=f"malformed reply ({type(exc).__name__}: {exc})")


def _classify(qname: str, rdtype: str, response: dns.message.Message, where: str) -> DnsAnswer:
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return DnsAnswer(qname, rdtype, Status.NXDOMAIN, ttl=_negative_ttl(response),
                         server=where)
    if rcode == dns.rcode.SERVFAIL:
        return DnsAnswer(qname, rdtype, Status.SERVFAIL, server=where)
    if rcode == dns.rcode.REFUSED:
        return DnsAnswer(qname, rdtype, Status.REFUSED, server=where)
    if rcode != dns.rcode.NOERROR:
        return DnsAnswer(qname, rdtype, Status.ERROR, server=where,
                         detail=f"rcode {dns.rcode.to_text(rcode)}")
    wanted = dns.rdatatype.from_text(rdtype)
    values: list[str] = []
    ttl = MAX_CACHE_TTL
    for rrset in response.answer:
        if rrset.rdtype != wanted:
            continue  # CNAME chains: keep only the records asked for
        ttl = min(ttl, rrset.ttl)
        for rdata in rrset:
            if wanted == dns.rdatatype.TXT:
                values.append(b"".join(rdata.strings).decode("utf-8", "replace"))
            else:
                values.append(rdata.to_text())
    if not values:
        return DnsAnswer(qname, rdtype, Status.NODATA, ttl=_negative_ttl(response),
                         server=where, detail="NOERROR with no records")
    return DnsAnswer(qname, rdtype, Status.ANSWER, tuple(values), ttl, where)


def _negative_ttl(response: dns.message.Message) -> int:
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(min(rrset.ttl, rrset[0].minimum))
    return DEFAULT_NEGATIVE_TTL
