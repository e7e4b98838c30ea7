"""A polite async DNS client for blocklist queries: raw UDP sockets on the asyncio loop.

It talks only to the nameservers it is given (`--resolver`), caps concurrency, paces each
zone to a query rate, retries timeouts and SERVFAIL a bounded number of times, caches answers
for their TTL and never runs past a total deadline. Every outcome comes back as a `DnsAnswer`
value (answer, NXDOMAIN, NODATA, SERVFAIL, REFUSED, timeout); nothing raises to the caller.
Common replies are decoded by `relayguard.blocklist.wire`; dnspython reads everything else
and asks again over TCP when a reply is truncated.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import ipaddress
import os
import random
import socket
from asyncio import Future
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from relayguard.blocklist.wire import query, question, read_reply
from relayguard.digits import is_digits
from relayguard.errors import InputError

# dnspython caches rdata classes per (class, type) on first sight, and a record of class ANY
# caches "generic" for (ANY, type), which it then also uses for class IN: one odd reply would
# turn every later IN A value into "\# 4 7f000002". Loading the IN classes first prevents it.
for _rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.TXT, dns.rdatatype.SOA,
                dns.rdatatype.CNAME):
    dns.rdata.get_rdata_class(dns.rdataclass.IN, _rdtype)

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
        if not is_digits(port) or not 0 < int(port) < 65536:
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
    """Bounded, paced, cached DNS queries to fixed nameservers; see the module docstring.

    The hot path has no task, semaphore or timer per query: `submit` returns a future that a
    socket's reader callback resolves, a FIFO queue holds what exceeds the concurrency cap,
    and one timer per client expires the queries in flight, earliest first.
    """

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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline = 0.0
        self._next_slot: dict[str, float] = {}
        self._cache: dict[tuple[str, str], tuple[float, DnsAnswer]] = {}
        self.sent = 0
        self.cache_hits = 0
        self._turn = 0
        self._pools: dict[Nameserver, list[_UdpSocket]] = {}
        self._pending: deque[_Job] = deque()
        self._inflight = 0
        self._pumping = False
        self._expiry: list[tuple[float, int, _Job, int]] = []  # heap: (when, seq, job, try)
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._tcp_tasks: dict[asyncio.Task[None], _Job] = {}
        self._paced: dict[_Job, asyncio.TimerHandle] = {}  # waiting for their pace slot

    def start(self) -> None:
        """Begin the total deadline (call inside the running event loop)."""
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + self.deadline_seconds

    async def query(self, qname: str, rdtype: str = "A", *, bucket: str = "") -> DnsAnswer:
        """Ask every configured server in turn, with retries, inside the deadline."""
        return await self.submit(qname, rdtype, bucket=bucket)

    def submit(self, qname: str, rdtype: str = "A", *, bucket: str = "") -> Future[DnsAnswer]:
        """Start a query and return the future of its answer (call inside the event loop).

        A cached answer is returned while its TTL lasts; otherwise the query waits for its
        zone's pace slot (`bucket`) and a concurrency slot, then goes out. The future always
        ends with a DnsAnswer, never an exception.
        """
        loop = self._loop
        if loop is None or loop is not asyncio.get_running_loop():
            self.start()
            loop = self._loop
            assert loop is not None
        fut: Future[DnsAnswer] = loop.create_future()
        key = (qname.lower(), rdtype)
        now = loop.time()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self.cache_hits += 1
            fut.set_result(hit[1])
            return fut
        remaining = self._deadline - now
        slot = now
        if remaining > 0 and self.rate > 0:
            slot = max(now, self._next_slot.get(bucket, now))
            self._next_slot[bucket] = slot + 1.0 / self.rate
        if slot - now >= remaining:
            fut.set_result(DnsAnswer(qname, rdtype, Status.TIMEOUT, detail="total deadline "
                                     "reached before the query could be sent"))
            return fut
        try:
            wanted = _RDTYPES.get(rdtype) or dns.rdatatype.from_text(rdtype)
            job = _Job(qname, rdtype, question(qname, wanted), key, fut)
        except (ValueError, dns.exception.DNSException) as exc:
            fut.set_result(DnsAnswer(qname, rdtype, Status.ERROR,
                                     detail=f"{type(exc).__name__}: {exc}"))
            return fut
        if slot > now:
            self._paced[job] = loop.call_at(slot, self._paced_out, job)
        else:
            self._enqueue(job)
        return fut

    def _paced_out(self, job: _Job) -> None:
        """A query's pace slot came: it joins the queue."""
        del self._paced[job]
        self._enqueue(job)

    def _enqueue(self, job: _Job) -> None:
        self._pending.append(job)
        self._pump()

    def _pump(self) -> None:
        """Send queued queries while there is room (a loop, so a burst never recurses)."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._pending and self._inflight < self._concurrency:
                self._inflight += 1
                self._attempt(self._pending.popleft())
        finally:
            self._pumping = False

    def _attempt(self, job: _Job) -> None:
        """Send the job's next try to the next server, or finish it when it may not."""
        assert self._loop is not None
        now = self._loop.time()
        if job.tries > self.retries or now >= self._deadline:
            self._finish(job, job.last or DnsAnswer(job.qname, job.rdtype, Status.TIMEOUT,
                                                    detail="total deadline reached"))
            return
        server = self.servers[self._turn % len(self.servers)]
        self._turn += 1
        job.tries += 1
        job.server = server
        job.timeout = min(self.timeout, self._deadline - now)
        self.sent += 1
        try:
            pool = self._pools.get(server) or self._open(server)
        except OSError as exc:
            self.answered(job, DnsAnswer(job.qname, job.rdtype, Status.ERROR,
                                         server=str(server),
                                         detail=f"{type(exc).__name__}: {exc}"))
            return
        when = now + job.timeout
        self._seq += 1
        heapq.heappush(self._expiry, (when, self._seq, job, job.tries))
        if self._timer is None or when < self._timer_at:
            self._arm(when)
        pool[self.sent % len(pool)].send(job)

    def answered(self, job: _Job, answer: DnsAnswer | None) -> None:
        """One try's outcome (None: truncated, ask over TCP): finish the job or try again."""
        job.sock = None
        if answer is None:
            task = asyncio.ensure_future(self._tcp(job))
            self._tcp_tasks[task] = job
            task.add_done_callback(self._tcp_tasks.pop)
            return
        if answer.status not in _RETRY or (answer.status is Status.REFUSED
                                           and len(self.servers) == 1):
            self._finish(job, answer)
        else:
            job.last = answer
            self._attempt(job)

    def _finish(self, job: _Job, answer: DnsAnswer) -> None:
        if answer.status in _CACHED and self._loop is not None:
            self._cache[job.key] = (self._loop.time() + min(answer.ttl, MAX_CACHE_TTL), answer)
        if not job.fut.done():
            job.fut.set_result(answer)
        self._inflight -= 1
        self._pump()

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._expire)
        self._timer_at = when

    def _expire(self) -> None:
        """Time out every try whose time is up, then sleep until the next one's."""
        assert self._loop is not None
        self._timer = None
        heap = self._expiry
        now = self._loop.time() + _TIMER_SLACK
        while heap and heap[0][0] <= now:
            _when, _seq, job, attempt = heapq.heappop(heap)
            if job.sock is not None and job.tries == attempt:
                job.sock.forget(job)
                self.answered(job, DnsAnswer(job.qname, job.rdtype, Status.TIMEOUT,
                                             server=str(job.server),
                                             detail=f"no answer within {job.timeout:.1f}s"))
        while heap and (heap[0][2].sock is None or heap[0][2].tries != heap[0][3]):
            heapq.heappop(heap)  # answered already: no need to wake for it
        if heap and self._timer is None:
            self._arm(heap[0][0])

    async def _tcp(self, job: _Job) -> None:
        """Ask the server of a truncated UDP answer again over TCP (the same try)."""
        server = job.server
        assert server is not None
        where = str(server)
        try:
            request = dns.message.make_query(job.qname, job.rdtype)
            response = await dns.asyncquery.tcp(request, server.host, timeout=job.timeout,
                                                port=server.port, source=self.source)
            answer = _classify(job.qname, job.rdtype, response, where)
        except (TimeoutError, dns.exception.Timeout):
            answer = DnsAnswer(job.qname, job.rdtype, Status.TIMEOUT, server=where,
                               detail=f"no answer within {job.timeout:.1f}s")
        except (OSError, dns.exception.DNSException, ValueError) as exc:
            answer = DnsAnswer(job.qname, job.rdtype, Status.ERROR, server=where,
                               detail=f"{type(exc).__name__}: {exc}")
        self.answered(job, answer)

    def _open(self, server: Nameserver) -> list[_UdpSocket]:
        """A few connected UDP sockets per nameserver, shared by all queries to it."""
        assert self._loop is not None
        pool: list[_UdpSocket] = []
        try:
            for _ in range(_SOCKETS_PER_SERVER):
                pool.append(_UdpSocket(self, self._loop, server, self.source))
        except OSError:
            for sock in pool:
                sock.close()
            raise
        self._pools[server] = pool
        return pool

    def close(self) -> None:
        """Close the sockets; anything still unanswered ends as an ERROR answer."""
        left = [job for pool in self._pools.values() for s in pool for job in s.waiting.values()]
        left += [*self._pending, *self._tcp_tasks.values(), *self._paced]
        for task in list(self._tcp_tasks):
            task.cancel()
        for handle in self._paced.values():  # else they would go out after the close
            handle.cancel()
        self._paced.clear()
        for pool in self._pools.values():
            for sock in pool:
                sock.close()
        self._pools.clear()
        self._pending.clear()
        self._expiry.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for job in left:
            if not job.fut.done():
                job.fut.set_result(DnsAnswer(job.qname, job.rdtype, Status.ERROR,
                                             detail="the client was closed first"))
        self._inflight = 0


_SOCKETS_PER_SERVER = 4
_TIMER_SLACK = 0.001  # expire up to 1 ms early rather than spin on the clock's resolution
_RDTYPES = {"A": dns.rdatatype.A, "AAAA": dns.rdatatype.AAAA, "TXT": dns.rdatatype.TXT}
_RETRY = frozenset((Status.TIMEOUT, Status.SERVFAIL, Status.REFUSED, Status.ERROR))
_CACHED = frozenset((Status.ANSWER, Status.NXDOMAIN, Status.NODATA))
# Query IDs only need to be unpredictable to off-path spoofers (the sockets are connected):
# a PRNG seeded from the OS is enough and much cheaper than a urandom call per query.
_RANDOM = random.Random(int.from_bytes(os.urandom(16), "big"))


class _Job:
    """One query from submit to answer: its question, future and tries so far."""

    __slots__ = ("fut", "key", "last", "qid", "qname", "question", "rdtype", "server", "sock",
                 "timeout", "tries")

    def __init__(self, qname: str, rdtype: str, question_wire: bytes, key: tuple[str, str],
                 fut: Future[DnsAnswer]) -> None:
        self.qname = qname
        self.rdtype = rdtype
        self.question = question_wire
        self.key = key
        self.fut = fut
        self.tries = 0
        self.last: DnsAnswer | None = None
        self.timeout = 0.0
        self.server: Nameserver | None = None
        self.sock: _UdpSocket | None = None  # set while a UDP try waits for its answer
        self.qid = 0


class _UdpSocket:
    """Many queries in flight over one connected UDP socket, matched by ID and question.

    dnspython's asyncquery opens a socket per query; sharing a few sockets is what makes
    thousands of DNSBL lookups cheap. The socket is connected, so the kernel drops
    datagrams from anyone but the nameserver; ID and question bytes are checked as well.
    A readable socket is drained in one callback, not one event-loop turn per datagram.
    """

    def __init__(self, client: DnsClient, loop: asyncio.AbstractEventLoop, server: Nameserver,
                 source: str | None) -> None:
        family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if source:
                sock.bind((source, 0))
            sock.connect((server.host, server.port))
            with contextlib.suppress(OSError):  # bursts of answers must not overflow it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            loop.add_reader(sock.fileno(), self._readable)
        except (OSError, ValueError) as exc:
            sock.close()
            raise OSError(f"cannot open a UDP socket to {server}: {exc}") from exc
        self.client = client
        self.loop = loop
        self.sock = sock
        self.where = str(server)
        self.waiting: dict[int, _Job] = {}

    def send(self, job: _Job) -> None:
        qid = _RANDOM.getrandbits(16)
        while qid in self.waiting:
            qid = _RANDOM.getrandbits(16)
        job.qid, job.sock = qid, self
        self.waiting[qid] = job
        try:
            self.sock.send(query(qid, job.question))
        except (BlockingIOError, InterruptedError):
            pass  # a full send buffer drops it like the network would: the timeout retries
        except OSError as exc:  # e.g. an earlier ICMP unreachable: nothing here will answer
            self._fail(exc)

    def forget(self, job: _Job) -> None:
        if self.waiting.get(job.qid) is job:
            del self.waiting[job.qid]

    def _readable(self) -> None:
        waiting = self.waiting
        for _ in range(_MAX_DRAIN):
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(exc)
                return
            if len(data) < 12 or not data[2] & 0x80:  # too short, or a query, not a reply
                continue
            job = waiting.get(data[0] << 8 | data[1])
            if job is None or data[12:12 + len(job.question)].lower() != job.question:
                continue
            del waiting[job.qid]
            self.client.answered(job, parse_reply(data, job.qname, job.rdtype, self.where))

    def _fail(self, exc: OSError) -> None:
        """Every query in flight here fails with `exc` (each retried at most its tries)."""
        jobs = list(self.waiting.values())
        self.waiting.clear()
        for job in jobs:
            self.client.answered(job, DnsAnswer(job.qname, job.rdtype, Status.ERROR,
                                                server=self.where,
                                                detail=f"{type(exc).__name__}: {exc}"))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


_MAX_DRAIN = 256  # datagrams read per wake-up before other callbacks get a turn


def parse_reply(data: bytes, qname: str, rdtype: str, where: str) -> DnsAnswer | None:
    """A reply datagram as a DnsAnswer; None when truncated (ask over TCP).

    The bytes come from the network, so any parse failure becomes an ERROR answer.
    """
    fast = _fast_answer(data, qname, rdtype, where)
    return fast if fast is not None else _dnspython_answer(data, qname, rdtype, where)


def _fast_answer(data: bytes, qname: str, rdtype: str, where: str) -> DnsAnswer | None:
    """The common replies through the lean decoder; None: let dnspython read it."""
    reply = read_reply(data, _RDTYPES.get(rdtype, 0))
    if reply is None:
        return None
    return _answer(qname, rdtype, where, reply.rcode, lambda: (reply.values, reply.ttl),
                   lambda: reply.negative_ttl)


def _dnspython_answer(data: bytes, qname: str, rdtype: str, where: str) -> DnsAnswer | None:
    try:
        response = dns.message.from_wire(data)
        if response.flags & dns.flags.TC:
            return None
        return _classify(qname, rdtype, response, where)
    except Exception as exc:  # outside input: every failure is a malformed reply
        return DnsAnswer(qname, rdtype, Status.ERROR, server=where,
                         detail=f"malformed reply ({type(exc).__name__}: {exc})")


def _classify(qname: str, rdtype: str, response: dns.message.Message, where: str) -> DnsAnswer:
    return _answer(qname, rdtype, where, response.rcode(), lambda: _records(response, rdtype),
                   lambda: _negative_ttl(response))


def _answer(qname: str, rdtype: str, where: str, rcode: int,
            records: Callable[[], tuple[tuple[str, ...], int]],
            negative_ttl: Callable[[], int | None]) -> DnsAnswer:
    """What a reply's rcode and records mean, one mapping for both decoders so they agree.

    `records` (the values asked for and their lowest TTL) and `negative_ttl` are read only
    when the rcode needs them, so a section the answer does not use cannot spoil it.
    """
    if rcode == dns.rcode.NXDOMAIN:
        return DnsAnswer(qname, rdtype, Status.NXDOMAIN, server=where,
                         ttl=_or_default(negative_ttl()))
    if rcode == dns.rcode.SERVFAIL:
        return DnsAnswer(qname, rdtype, Status.SERVFAIL, server=where)
    if rcode == dns.rcode.REFUSED:
        return DnsAnswer(qname, rdtype, Status.REFUSED, server=where)
    if rcode != dns.rcode.NOERROR:
        return DnsAnswer(qname, rdtype, Status.ERROR, server=where,
                         detail=f"rcode {dns.rcode.to_text(rcode)}")
    values, ttl = records()
    if not values:
        return DnsAnswer(qname, rdtype, Status.NODATA, server=where,
                         ttl=_or_default(negative_ttl()), detail="NOERROR with no records")
    return DnsAnswer(qname, rdtype, Status.ANSWER, values, min(ttl, MAX_CACHE_TTL), where)


def _records(response: dns.message.Message, rdtype: str) -> tuple[tuple[str, ...], int]:
    """The answer section's records of the type asked for, and their lowest TTL."""
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
    return tuple(values), ttl


def _or_default(negative_ttl: int | None) -> int:
    return DEFAULT_NEGATIVE_TTL if negative_ttl is None else negative_ttl


def _negative_ttl(response: dns.message.Message) -> int | None:
    """min(SOA TTL, SOA minimum) from the authority section; None without an SOA."""
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(min(rrset.ttl, rrset[0].minimum))
    return None
