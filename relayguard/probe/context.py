"""What every check shares: options, the canary, connection limits, and its results.

`ProbeContext.connection()` is the only way checks open sockets, so the global concurrency
cap, the per-host cap, the connection rate and the source address apply to all of them.
`PortResult` collects what one host:port produced: findings, errors, notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from relayguard.findings import ErrorEntry, Evidence, Finding, Location
from relayguard.probe.canary import HANDLER_TIMEOUT, Canary, CanaryHit
from relayguard.probe.net import Conn, Transcript, open_conn

CANARY_GRACE = 0.3  # seconds to wait for a canary hit after the target's reply
CANARY_GRACE_FLOOR = 0.05  # … never less than this, however near the target

DEFAULT_PORTS: tuple[int, ...] = (
    25, 80, 81, 443, 465, 587, 1080, 2525, 3128, 3129, 8000, 8008, 8080, 8081, 8118, 8123,
    8888, 9050,
)


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """Everything `relayguard probe` lets the user tune; defaults are polite and bounded."""

    ports: tuple[int, ...] = DEFAULT_PORTS
    timeout: float = 5.0  # per step: connect, one reply
    banner_wait: float = 0.5  # silence after connect before a port counts as client-first
    concurrency: int = 64  # connections open at once, in total
    per_host: int = 4  # connections open at once to one host
    rate: float = 0.0  # new connections per second, in total (0 = no limit)
    source: str | None = None  # bind outgoing connections to this address
    canary_host: str | None = None  # address targets use to reach the canary
    canary_bind: str | None = None  # address the canary listens on (default: canary_host)
    canary_http_port: int = 80
    canary_raw_port: int = 443
    canary_smtp_ports: tuple[int, ...] = (25, 465, 587)
    smtp_check_target: tuple[str, int] | None = None  # a real MTA, when no SMTP canary port
    confirm_delivery: bool = False  # send one tiny message through an accepting relay
    target_time: float = 120.0  # deadline for all checks of one host:port
    max_time: float = 1800.0  # deadline for the whole run
    allow_large: bool = False


@dataclass
class PortResult:
    """What one host:port produced."""

    host: str
    port: int
    service: str = "closed"  # closed, smtp, http, socks5, socks4, silent, unknown, error
    findings: list[Finding] = field(default_factory=list)
    errors: list[ErrorEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return str(Location(host=self.host, port=self.port))

    def error(self, message: str) -> None:
        self.errors.append(ErrorEntry(source=self.where, message=message))

    def note(self, message: str) -> None:
        self.notes.append(f"{self.where}: {message}")


class RateLimiter:
    """At most `rate` acquisitions per second overall (simple spacing, no bursts)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


class ProbeContext:
    """Shared state of one run: options, canary, limits."""

    def __init__(self, options: ProbeOptions, canary: Canary) -> None:
        self.options = options
        self.canary = canary
        self._global = asyncio.Semaphore(max(1, options.concurrency))
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._rate = RateLimiter(options.rate)
        self.connections = 0
        self.rtt: dict[str, float] = {}  # host -> fastest connect seen (a round-trip estimate)

    @contextlib.asynccontextmanager
    async def connection(self, host: str, port: int, transcript: Transcript, *,
                         tls: bool = False) -> AsyncIterator[Conn]:
        """An open connection counted against every limit; closed on exit."""
        per_host = self._hosts.setdefault(host, asyncio.Semaphore(max(1, self.options.per_host)))
        async with per_host, self._global:
            await self._rate.acquire()
            self.connections += 1
            transcript.note(f"connect {Location(host=host, port=port)}"
                            + (" (TLS)" if tls else ""))
            conn = await open_conn(host, port, source=self.options.source,
                                   timeout=self.options.timeout, transcript=transcript,
                                   tls=tls)
            if not tls:
                self.rtt[host] = min(self.rtt.get(host, conn.connect_time), conn.connect_time)
            # The canary marks hits over our own sockets; keep the mark until it cannot
            # still be reading what this connection sent.
            mine = (conn.local_endpoint, conn.remote_endpoint)
            self.canary.scanner.add(mine)
            try:
                yield conn
            finally:
                await conn.close()
                asyncio.get_running_loop().call_later(
                    HANDLER_TIMEOUT, self.canary.scanner.drop, mine)

    def kept(self, host: str, port: int, *, tls: bool = False) -> KeptConnection:
        """A connection to host:port that sequential checks may share (see KeptConnection)."""
        return KeptConnection(self, host, port, tls)

    async def canary_hits(self, nonce: str, settle: bool = True,
                          host: str | None = None) -> list[CanaryHit]:
        """Hits for `nonce`.

        When the target answered with what only the canary could have sent (an HTTP reply,
        a tunnel echo), the hit is already recorded: `settle=False` just lets pending canary
        callbacks run. After errors, or when an HTTP request went to an SMTP port (the proxy
        may answer us before the canary has read the request), wait a short grace — shorter
        on a near network (`host`'s round trip).
        """
        if not settle:
            await asyncio.sleep(0)
            return self.canary.seen(nonce)
        grace = min(CANARY_GRACE, self.options.timeout)
        if host is not None and host in self.rtt:
            grace = min(grace, max(CANARY_GRACE_FLOOR, 20 * self.rtt[host]))
        return await self.canary.wait(nonce, grace)


class KeptConnection:
    """One connection shared by checks that run one after another on the same port.

    A check that leaves the connection clean (a refusal read in full, HTTP keep-alive; an SMTP
    banner and nothing else) calls `keep(why)`; the next check then reuses it instead of
    paying another TCP handshake (and, for SMTP, another greeting). Anything else (a tunnel,
    an error, a reply of unknown length) closes it, and the next check gets a fresh one.
    Until closed it counts against every limit like any other connection.
    """

    def __init__(self, ctx: ProbeContext, host: str, port: int, tls: bool = False) -> None:
        self._ctx, self._host, self._port, self._tls = ctx, host, port, tls
        self._stack = contextlib.AsyncExitStack()
        self._conn: Conn | None = None
        self._why: str | None = None  # set while the connection is kept for the next check
        self.reused = False  # whether the last `get()` returned a kept connection

    async def get(self, transcript: Transcript) -> Conn:
        """The kept connection, now logging to `transcript`; else a new one."""
        if self._conn is not None and self._why is not None:
            if self._conn.transcript is not transcript:
                transcript.note(f"same connection to "
                                f"{Location(host=self._host, port=self._port)} ({self._why})")
            self._conn.transcript = transcript
            self._why = None
            self.reused = True
            return self._conn
        await self.close()
        self.reused = False
        self._conn = await self._stack.enter_async_context(
            self._ctx.connection(self._host, self._port, transcript, tls=self._tls))
        return self._conn

    def keep(self, why: str) -> None:
        """The current connection is clean: the next `get()` may reuse it (`why` is noted)."""
        self._why = why if self._conn is not None else None

    async def close(self) -> None:
        self._conn, self._why = None, None
        await self._stack.aclose()


def transcript_evidence(result: PortResult, transcript: Transcript,
                        hits: list[CanaryHit]) -> tuple[Evidence, ...]:
    """The full transcript plus what the canary saw, as a finding's evidence."""
    where = Location(host=result.host, port=result.port)
    out = [Evidence(kind="transcript", text=transcript.render(), location=where)]
    out += [Evidence(kind="note", text=h.describe()) for h in hits]
    return tuple(out)


def split_hits(hits: list[CanaryHit], listener: str, port: int
               ) -> tuple[list[CanaryHit], list[CanaryHit], list[CanaryHit]]:
    """Hits on the canary listener a probe asked for, hits that landed on another listener,
    and hits that came over the scanner's own socket.

    Only the first are proof of the probe's rule: `http://canary:25/` arriving on the HTTP
    listener (a proxy that drops the port) shows an HTTP proxy, not a path to SMTP; a nonce
    the scanner itself delivered to the canary shows nothing at all.
    """
    own = [h for h in hits if h.own]
    proof = [h for h in hits if not h.own and h.listener == listener and h.port == port]
    return proof, [h for h in hits if h not in proof and not h.own], own
