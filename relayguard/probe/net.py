"""Bounded socket I/O for probes: every read has a byte cap and a deadline, every byte is logged.

Targets may be hostile (slow drip, endless headers, garbage, resets), so `Conn` never reads
more than MAX_READ bytes per reply and never waits past the step deadline (--timeout) nor,
for a reply of many lines, past the reply's deadline (REPLY_TIMEOUTS × --timeout); failures
raise `NetError` subclasses that the checks turn into error entries. Each connection keeps a
transcript of what went each way, which becomes a finding's evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import re
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field

MAX_READ = 64 * 1024  # per reply: enough for any proxy error page, bounded against tarpits
REPLY_TIMEOUTS = 3  # a whole reply must arrive within this many --timeouts
TRANSCRIPT_BYTES = 2048  # per direction chunk kept in evidence; the rest is summarised
# Linux's IP_BIND_ADDRESS_NO_PORT (24 at IPPROTO_IP, for IPv6 sockets too): bind() to the
# source address leaves the port to connect(), which knows the destination, so one local port
# serves many targets instead of each connection (and its TIME_WAIT) holding one of its own.
NO_PORT_OPTION = getattr(socket, "IP_BIND_ADDRESS_NO_PORT",
                         24 if sys.platform.startswith("linux") else None)


def endpoint(sockaddr: tuple[object, ...] | None) -> tuple[str, int]:
    """(address, port) of a socket address; an IPv4-mapped IPv6 address as plain IPv4, so
    both ends of one connection name it the same way."""
    if not sockaddr:
        return ("?", 0)
    addr = str(sockaddr[0])
    if ":" in addr:
        with contextlib.suppress(ValueError):
            mapped = ipaddress.IPv6Address(addr).ipv4_mapped
            if mapped is not None:
                addr = str(mapped)
    return addr, int(sockaddr[1])  # type: ignore[call-overload]


Deadline = tuple[float, str]  # monotonic time, and how to name that limit in an error


class NetError(Exception):
    """A network step that did not complete; `kind` is stable text for reports."""

    kind = "error"


class StepTimeout(NetError):
    kind = "timeout"


class Closed(NetError):
    """The peer closed cleanly (FIN) before the expected reply was complete."""

    kind = "closed"


class Reset(NetError):
    kind = "reset"


class TooLarge(NetError):
    kind = "too-large"


class Refused(NetError):
    kind = "refused"


# Byte -> text for `printable`: printable ASCII, CR and LF as they are, the rest as \\xNN.
_SHOWN = [chr(b) if b in (10, 13) or 32 <= b < 127 else f"\\x{b:02x}" for b in range(256)]
_PLAIN = re.compile(rb"[^\n\r\x20-\x7e]")


def printable(data: bytes, limit: int = TRANSCRIPT_BYTES) -> str:
    """Bytes as readable text: CRLF kept as line breaks, other controls escaped, capped.

    Runs once per transcript chunk of every finding, so the common all-ASCII chunk is decoded
    in one step rather than byte by byte."""
    shown = data[:limit]
    if _PLAIN.search(shown) is None:
        text = shown.decode("ascii")
    else:
        text = "".join(map(_SHOWN.__getitem__, shown))
    text = text.replace("\r\n", "\n").replace("\r", "\\r\n")
    if len(data) > limit:
        text += f"\n… ({len(data) - limit} more bytes)"
    return text


@dataclass
class Transcript:
    """What went each way on one or more connections, in order, for evidence."""

    entries: list[tuple[str, bytes]] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.entries.append(("#", text.encode("utf-8", "replace")))

    def sent(self, data: bytes) -> None:
        self.entries.append((">", data))

    def received(self, data: bytes) -> None:
        if self.entries and self.entries[-1][0] == "<":
            self.entries[-1] = ("<", self.entries[-1][1] + data)
        else:
            self.entries.append(("<", data))

    def render(self) -> str:
        lines: list[str] = []
        for direction, data in self.entries:
            if direction == "#":
                lines.append(f"# {data.decode('utf-8', 'replace')}")
                continue
            body = printable(data).rstrip("\n")
            lines.extend(f"{direction} {line}" for line in body.split("\n"))
        return "\n".join(lines)


class Conn:
    """One TCP connection with capped, deadline-bounded reads and a transcript."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 transcript: Transcript, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.transcript = transcript
        self.timeout = timeout
        self.buffer = b""  # bytes read but not yet consumed
        self.connect_time = 0.0  # seconds the TCP (and TLS) handshake took
        self.received = 0  # bytes read from the peer so far

    @property
    def local_endpoint(self) -> tuple[str, int]:
        return endpoint(self.writer.get_extra_info("sockname"))

    @property
    def remote_endpoint(self) -> tuple[str, int]:
        return endpoint(self.writer.get_extra_info("peername"))

    async def send(self, data: bytes) -> None:
        self.transcript.sent(data)
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except TimeoutError:
            raise StepTimeout(f"send blocked for {self.timeout:g}s") from None
        except ConnectionResetError:
            raise Reset("connection reset by peer while sending") from None
        except (BrokenPipeError, ConnectionError, OSError) as exc:
            raise Closed(f"cannot send: {exc}") from None

    def reply_deadline(self) -> float:
        """When a whole reply (every line of it) must be in: REPLY_TIMEOUTS × --timeout.

        Per-step deadlines alone let a server that sends one line just inside each --timeout
        hold a port for as many --timeouts as it has lines.
        """
        return time.monotonic() + REPLY_TIMEOUTS * self.timeout

    def _end(self, until: float | None) -> Deadline:
        """One read step's deadline: --timeout from now, or the reply's deadline if sooner."""
        step = time.monotonic() + self.timeout
        if until is not None and until < step:
            return until, f"{REPLY_TIMEOUTS} x {self.timeout:g}s (the limit for a whole reply)"
        return step, f"{self.timeout:g}s"

    async def _fill(self, end: Deadline, what: str) -> None:
        """Read one more chunk into the buffer, or raise on timeout/close/cap."""
        deadline, budget = end
        late = f"no complete {what} within {budget} ({len(self.buffer)} bytes received)"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StepTimeout(late)
        if len(self.buffer) >= MAX_READ:
            raise TooLarge(f"{what} exceeds {MAX_READ // 1024} KiB")
        try:
            async with asyncio.timeout(remaining):
                chunk = await self.reader.read(MAX_READ - len(self.buffer))
        except TimeoutError:
            raise StepTimeout(late) from None
        except ConnectionResetError:
            raise Reset(f"connection reset while reading {what}") from None
        except (ssl.SSLError, OSError) as exc:
            raise Reset(f"connection failed while reading {what}: {exc}") from None
        if not chunk:
            raise Closed(f"connection closed before a complete {what} "
                         f"({len(self.buffer)} bytes received)")
        self.transcript.received(chunk)
        self.received += len(chunk)
        self.buffer += chunk

    async def read_until(self, marker: bytes, what: str = "reply",
                         until: float | None = None) -> bytes:
        """Bytes up to and including `marker`, within the step deadline (and `until`, the
        reply's deadline, when given) and MAX_READ."""
        end = self._end(until)
        while marker not in self.buffer:
            if len(self.buffer) >= MAX_READ:
                raise TooLarge(f"{what} exceeds {MAX_READ // 1024} KiB without end marker")
            await self._fill(end, what)
        cut = self.buffer.index(marker) + len(marker)
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out

    async def read_exact(self, n: int, what: str = "reply", until: float | None = None
                         ) -> bytes:
        end = self._end(until)
        while len(self.buffer) < n:
            await self._fill(end, what)
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    async def read_some(self, wait: float | None = None, what: str = "reply") -> bytes:
        """Whatever arrives first (at least one byte), or b'' when `wait` passes silently.

        Without `wait`, silence until the step deadline raises StepTimeout.
        """
        if self.buffer:
            out, self.buffer = self.buffer, b""
            return out
        end = self._end(None) if wait is None else (time.monotonic() + wait, f"{wait:g}s")
        try:
            await self._fill(end, what)
        except StepTimeout:
            if wait is not None:
                return b""
            raise
        out, self.buffer = self.buffer, b""
        return out

    async def read_to_eof(self, limit: int = MAX_READ, what: str = "reply",
                          until: float | None = None) -> bytes:
        """Everything until the peer closes (bounded); a timeout returns what arrived."""
        end = self._end(until)
        while len(self.buffer) < limit:
            try:
                await self._fill(end, what)
            except (Closed, StepTimeout, TooLarge):
                break
        out, self.buffer = self.buffer, b""
        return out

    async def start_tls(self, server_hostname: str | None = None) -> None:
        """Upgrade to TLS without verifying (we probe behaviour, not identity).

        Plaintext the server sent ahead of the handshake is dropped, never read as if it had
        come inside TLS (the STARTTLS injection of CVE-2011-0411).
        """
        if self.buffer:
            self.transcript.note(f"dropped {len(self.buffer)} bytes sent before the TLS "
                                 "handshake")
            self.buffer = b""
        ctx = unverified_tls_context()
        try:
            async with asyncio.timeout(self.timeout):
                await self.writer.start_tls(ctx, server_hostname=server_hostname)
        except TimeoutError:
            raise StepTimeout(f"TLS handshake timed out after {self.timeout:g}s") from None
        except (ssl.SSLError, OSError) as exc:
            raise Reset(f"TLS handshake failed: {exc}") from None
        self.transcript.note("TLS established")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()


def unverified_tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(ssl.SSLError):
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def _source_socket(family: socket.AddressFamily, source: str) -> socket.socket:
    """A non-blocking TCP socket bound to `source` whose port connect() will pick (where the
    kernel can defer it): a scan of thousands of targets then never runs out of ports."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if NO_PORT_OPTION is not None:
            with contextlib.suppress(OSError):  # older kernels: bind() picks the port
                sock.setsockopt(socket.IPPROTO_IP, NO_PORT_OPTION, 1)
        sock.setblocking(False)
        sock.bind((source, 0))
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect(host: str, port: int, source: str | None, family: socket.AddressFamily
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """TCP connect, from `source` when given; the socket is closed on any failure."""
    if not source:
        return await asyncio.open_connection(host, port, family=family, limit=MAX_READ)
    sock = _source_socket(family, source)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        return await asyncio.open_connection(sock=sock, limit=MAX_READ)
    except BaseException:  # cancelled by the timeout, too
        sock.close()
        raise


async def open_conn(host: str, port: int, *, source: str | None, timeout: float,
                    transcript: Transcript, tls: bool = False) -> Conn:
    """Connect (bound to `source` when given) within `timeout`, then, for implicit TLS, do
    the handshake within another `timeout`; map failures to NetError naming the step."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _connect(host, port, source, family)
    except TimeoutError:
        raise StepTimeout(f"connect to {host}:{port} timed out after {timeout:g}s") from None
    except ConnectionRefusedError:
        raise Refused(f"connection to {host}:{port} refused") from None
    except ConnectionResetError:  # accepted, then reset at once: open, not closed
        raise Reset(f"connection to {host}:{port} reset right after it was accepted") from None
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):  # our side, not the target's
            raise NetError(f"cannot connect to {host}:{port} from {source or 'this host'}: "
                           f"{exc.strerror or exc} (no local address/port to use)") from None
        raise Refused(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    conn = Conn(reader, writer, transcript, timeout)
    conn.connect_time = time.monotonic() - started
    if tls:
        try:
            await conn.start_tls()
        except NetError:
            await conn.close()
            raise
    return conn
