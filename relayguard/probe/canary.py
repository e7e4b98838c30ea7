"""The scanner's own listeners: proof that a target relayed is the target reaching them.

Every probe carries a fresh nonce (in the URL path, the Host header, or the first bytes sent
through a tunnel). The canary records which nonce reached which of its listeners and from
which address, so a verdict is `confirmed` only when the target really made the connection —
never on a status code. Listeners: HTTP (port 80 if it can bind it), a raw TCP "443-like"
port (443 if possible), and SMTP-banner listeners on 25/465/587 where they can be bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
from collections import Counter
from dataclasses import dataclass, field

from relayguard.hostinfo import tcp_socket_between
from relayguard.probe.net import endpoint

NONCE_RE = re.compile(rb"rg[0-9a-f]{32}")
HANDLER_TIMEOUT = 10.0  # a relaying target gets this long to say its piece
HANDLER_MAX = 64 * 1024
SMTP_PORTS = (25, 465, 587)
STOP_GRACE = 2.0  # seconds for a relaying MTA to finish its delivery when the run ends


def _unused_port(host: str) -> int:
    """A port the kernel just handed out and took back: nothing listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])
    except OSError:
        return 0


def new_nonce() -> str:
    """A fresh 128-bit nonce: `rg` + 32 hex digits (also a valid DNS label and local part)."""
    return "rg" + secrets.token_hex(16)


Endpoint = tuple[str, int]  # (address, port) of one end of a TCP connection, see net.endpoint
Link = tuple[Endpoint, Endpoint]  # a TCP connection as (client end, server end)


def _through_nat(link: Link) -> bool:
    """A connection from one of the scanner's local ends that no socket of this host opened to
    the canary's address: the scanner's own, reaching it through NAT (or a port forward).

    The check is needed because the scanner's ports are picked at connect(), per
    destination: a local relay reaching the canary may use the very same local end
    (net.NO_PORT_OPTION), and its socket then shows in /proc. Unknown (not Linux) counts as
    the scanner's own: no proof from a connection we cannot tell apart.
    """
    return tcp_socket_between(*link) is not True


@dataclass
class ScannerSockets:
    """The scanner's own probe connections, (local end, remote end), counted: the same pair
    can come back while an earlier one's mark is still kept."""

    links: Counter[Link] = field(default_factory=Counter)
    local_ends: Counter[Endpoint] = field(default_factory=Counter)

    def add(self, link: Link) -> None:
        self.links[link] += 1
        self.local_ends[link[0]] += 1

    def drop(self, link: Link) -> None:
        self.links[link] -= 1
        self.local_ends[link[0]] -= 1
        if self.links[link] <= 0:
            del self.links[link]
        if self.local_ends[link[0]] <= 0:
            del self.local_ends[link[0]]

    def carried(self, link: Link) -> bool:
        """True when the canary's connection `link` is one of the scanner's own sockets."""
        return link in self.links or (link[0] in self.local_ends and _through_nat(link))


@dataclass(frozen=True, slots=True)
class CanaryHit:
    """One nonce seen by one listener: where it came from and the line that carried it.

    `own` is set when the connection came from one of the scanner's own probe sockets: the
    probe reached the canary directly (the target *is* the canary), so it proves nothing.
    """

    nonce: str
    listener: str  # "http", "raw", "smtp"
    port: int
    peer: str  # address the target connected from (its egress address)
    line: str
    own: bool = False

    def describe(self) -> str:
        return (f"canary {self.listener} listener on port {self.port} received nonce "
                f"{self.nonce} from {self.peer}: {self.line!r}")


@dataclass
class Canary:
    """Listeners on `bind`, announced to targets as `host` (they differ behind 1:1 NAT, where
    the public address cannot be bound); `start()` binds what it can and says in `problems`
    what it could not."""

    host: str
    http_port: int = 80
    raw_port: int = 443
    smtp_ports: tuple[int, ...] = SMTP_PORTS
    bind: str = ""  # address the listeners bind to ("" = host; may be a wildcard)
    problems: list[str] = field(default_factory=list)
    bound_smtp: dict[int, int] = field(default_factory=dict)  # wanted port -> bound port
    closed_port: int = 0  # a port on `host` nothing listens on (negative control)
    # The scanner's own probe connections (kept by ProbeContext).
    scanner: ScannerSockets = field(default_factory=ScannerSockets)
    _live: dict[Link, str] = field(default_factory=dict)  # connection in progress -> listener
    _servers: list[asyncio.Server] = field(default_factory=list)
    _hits: dict[str, list[CanaryHit]] = field(default_factory=dict)
    _events: dict[str, asyncio.Event] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.bind = self.bind or self.host

    async def _listen(self, port: int, handler: object, fallback: bool, what: str) -> int | None:
        try:
            server = await asyncio.start_server(handler, self.bind, port,  # type: ignore[arg-type]
                                                reuse_address=True, limit=HANDLER_MAX)
        except OSError as exc:
            if not fallback or port == 0:
                self.problems.append(f"canary cannot listen on {self.bind}:{port} for {what}: "
                                     f"{exc.strerror or exc}")
                return None
            self.problems.append(f"canary cannot listen on {self.bind}:{port} for {what} "
                                 f"({exc.strerror or exc}); using a free port instead")
            return await self._listen(0, handler, False, what)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind the listeners; HTTP and raw fall back to free ports, SMTP ports do not."""
        port = await self._listen(self.http_port, self._handle_http, True, "HTTP")
        if port is None:
            hint = ("; if targets reach this host through NAT, give the local address to "
                    "bind with --canary-bind" if self.bind == self.host else "")
            raise OSError(f"canary cannot listen on {self.bind}: {'; '.join(self.problems)}"
                          + hint)
        self.http_port = port
        raw = await self._listen(self.raw_port, self._handle_raw, True, "raw TCP (443-like)")
        self.raw_port = raw if raw is not None else 0
        for wanted in self.smtp_ports:
            bound = await self._listen(wanted, self._handle_smtp, False, "SMTP")
            if bound is not None:
                self.bound_smtp[wanted] = bound
        self.closed_port = _unused_port(self.bind)

    async def stop(self) -> None:
        """Stop listening; let conversations in flight finish (bounded), then cut them."""
        for server in self._servers:
            server.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_GRACE)
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await server.wait_closed()
        self._servers.clear()

    # --- what the checks ask -------------------------------------------------------------

    def seen(self, nonce: str) -> list[CanaryHit]:
        return list(self._hits.get(nonce, ()))

    def listeners(self) -> dict[int, str]:
        """Port -> listener kind, for every port the canary listens on."""
        out = {self.http_port: "http"}
        if self.raw_port:
            out[self.raw_port] = "raw"
        out.update({port: "smtp" for port in self.bound_smtp.values()})
        return out

    def serving(self, local: Endpoint, remote: Endpoint) -> str | None:
        """The listener the scanner's connection `local` -> `remote` is talking to right now,
        if any: a probe whose own socket shows up here reached the canary itself, not a
        target (directly, or through NAT when only its local end matches)."""
        listener = self._live.get((local, remote))
        if listener is not None:
            return listener
        return next((kind for link, kind in self._live.items()
                     if link[0] == local and _through_nat(link)), None)

    async def wait(self, nonce: str, timeout: float) -> list[CanaryHit]:
        """Hits for `nonce`, waiting up to `timeout` for the first one."""
        if nonce not in self._hits:
            event = self._events.setdefault(nonce, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await event.wait()
        return self.seen(nonce)

    # --- listeners -----------------------------------------------------------------------

    def _record(self, data: bytes, listener: str, link: Link) -> list[str]:
        found: list[str] = []
        own = self.scanner.carried(link)
        peer, (_, port) = link
        for m in NONCE_RE.finditer(data):
            nonce = m.group().decode()
            if nonce in found:
                continue
            found.append(nonce)
            start = data.rfind(b"\n", 0, m.start()) + 1
            end = data.find(b"\n", m.end())
            line = data[start:end if end >= 0 else len(data)].strip()
            hit = CanaryHit(nonce, listener, port, peer[0], line[:200].decode("latin-1"), own)
            self._hits.setdefault(nonce, []).append(hit)
            self._events.setdefault(nonce, asyncio.Event()).set()
        return found

    def _track(self, writer: asyncio.StreamWriter, listener: str) -> Link:
        """Register a new conversation (task and live connection); its (peer, our end)."""
        link = (endpoint(writer.get_extra_info("peername")),
                endpoint(writer.get_extra_info("sockname")))
        self._live[link] = listener
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _: self._live.pop(link, None))
        return link

    async def _handle_http(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        link = self._track(writer, "http")
        head = b""
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(HANDLER_TIMEOUT):
                while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < 16384:
                    chunk = await reader.read(4096)
                    if not chunk:
                        break
                    head += chunk
            nonces = self._record(head, "http", link)
            body = f"relayguard-canary {' '.join(nonces) or '-'}\n".encode()
            reply = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"X-Relayguard-Canary: 1\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n")
            if not head.startswith(b"HEAD "):
                reply += body
            writer.write(reply)
            async with asyncio.timeout(2):
                await writer.drain()
        writer.close()

    async def _handle_raw(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        link = self._track(writer, "raw")
        data = b""
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(HANDLER_TIMEOUT):
                while b"\n" not in data and len(data) < 4096:
                    chunk = await reader.read(4096)
                    if not chunk:
                        break
                    data += chunk
            nonces = self._record(data, "raw", link)
            writer.write(f"relayguard-canary {' '.join(nonces) or '-'}\r\n".encode())
            async with asyncio.timeout(2):
                await writer.drain()
        writer.close()

    async def _handle_smtp(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        """Just enough SMTP for a tunnel check (EHLO nonce) or one delivered message."""
        link = self._track(writer, "smtp")
        total = 0
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(HANDLER_TIMEOUT):
                writer.write(b"220 relayguard-canary ESMTP\r\n")
                await writer.drain()
                while total < HANDLER_MAX:
                    line = await reader.readline()
                    if not line:
                        break
                    total += len(line)
                    nonces = self._record(line, "smtp", link)
                    tag = (" " + " ".join(nonces)) if nonces else ""
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        reply = f"250 relayguard-canary{tag}\r\n"
                    elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                        reply = f"250 ok{tag}\r\n"
                    elif verb == b"DATA":
                        writer.write(b"354 go ahead\r\n")
                        await writer.drain()
                        body = b""
                        while not body.endswith(b"\r\n.\r\n") and len(body) < HANDLER_MAX:
                            chunk = await reader.readline()
                            if not chunk:
                                break
                            body += chunk
                        total += len(body)
                        nonces = self._record(body, "smtp", link)
                        reply = f"250 accepted{' ' + ' '.join(nonces) if nonces else ''}\r\n"
                    elif verb == b"QUIT":
                        writer.write(b"221 bye\r\n")
                        await writer.drain()
                        break
                    elif re.match(rb"^[A-Z]+ \S+ HTTP/\d", line):
                        # An HTTP request relayed to an SMTP port: recorded; end it now.
                        writer.write(f"502 relayguard-canary{tag}\r\n".encode())
                        await writer.drain()
                        break
                    else:
                        reply = f"502 relayguard-canary{tag}\r\n"
                    writer.write(reply.encode())
                    await writer.drain()
        writer.close()
