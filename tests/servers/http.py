"""Raw HTTP from a chosen loopback source address, and a canary that records what reaches it.

`http_request` sends bytes exactly as given (absolute-URI, CONNECT, odd Host headers — what
proxy tests need and HTTP libraries refuse), bound to `source`, and returns the parsed reply.
`HttpCanary` / `TcpCanary` are the third-party destinations a relaying server would reach.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_READ = 1 << 20  # 1 MiB: no test reply is bigger; stops a runaway server


@dataclass
class HttpReply:
    """A reply as it came off the wire: status line, headers (lower-cased names), body."""

    status_line: str
    headers: dict[str, str]
    body: bytes
    raw: bytes

    @property
    def status(self) -> int:
        parts = self.status_line.split(None, 2)
        try:
            return int(parts[1])
        except (IndexError, ValueError):
            return 0

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def connect(host: str, port: int, source: str | None = None,
            timeout: float = 5.0) -> socket.socket:
    """A TCP connection to host:port whose local address is `source` (any port)."""
    return socket.create_connection(
        (host, port), timeout=timeout,
        source_address=(source, 0) if source is not None else None)


def parse_reply(raw: bytes) -> HttpReply:
    """Split raw bytes into status line, headers and body (no chunked decoding)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return HttpReply(lines[0] if lines else "", headers, body, raw)


def http_request(host: str, port: int, request: str | bytes, *,
                 source: str | None = None, timeout: float = 5.0,
                 read_body: bool = True) -> HttpReply:
    """Send one raw request and read the reply until close, Content-Length, or `timeout`.

    A CONNECT that succeeds leaves the tunnel open: use `read_body=False` to return right
    after the response head (or use `connect()` yourself and keep talking).
    """
    data = request.encode("latin-1") if isinstance(request, str) else request
    deadline = time.monotonic() + timeout
    buf = b""
    with connect(host, port, source, timeout) as s:
        s.sendall(data)
        while len(buf) < MAX_READ:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            s.settimeout(remaining)
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            buf += chunk
            if b"\r\n\r\n" in buf:
                reply = parse_reply(buf)
                if not read_body:
                    return reply
                length = reply.headers.get("content-length")
                if length is not None and length.isdigit() and len(reply.body) >= int(length):
                    return reply
    return parse_reply(buf)


def http_get(host: str, port: int, target: str, *, method: str = "GET",
             host_header: str | None = None, headers: dict[str, str] | None = None,
             source: str | None = None, timeout: float = 5.0) -> HttpReply:
    """`METHOD target HTTP/1.1` with Host and `Connection: close`; target may be absolute."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header or f'{host}:{port}'}",
             "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return http_request(host, port, "\r\n".join(lines) + "\r\n\r\n",
                        source=source, timeout=timeout)


@dataclass(frozen=True)
class Hit:
    """One connection that reached a canary: who came, and what they sent."""

    peer: tuple[str, int]
    data: bytes
    method: str = ""
    target: str = ""
    headers: dict[str, str] = field(default_factory=dict)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class _Canary:
    """Common part of both canaries: a threaded listener and the list of hits."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(3.0)
                with contextlib.suppress(OSError):
                    outer._handle(self.request, self.client_address)

        self.server = _Server((host, port), Handler)
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)

    def _handle(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        raise NotImplementedError

    def saw(self, needle: str | bytes) -> list[Hit]:
        """Hits whose received bytes contain `needle`."""
        n = needle.encode() if isinstance(needle, str) else needle
        with self._lock:
            return [h for h in self.hits if n in h.data]

    def wait_for(self, needle: str | bytes, timeout: float = 3.0) -> list[Hit]:
        """Like `saw`, waiting (bounded) for a hit that may still be in flight."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.saw(needle)
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HttpCanary(_Canary):
    """Answers every HTTP request `200 canary <target>` and records it."""

    def _handle(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        buf = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in buf and len(buf) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk
        reply = parse_reply(buf)
        method, _, rest = reply.status_line.partition(" ")
        target = rest.rsplit(" ", 1)[0]
        self._record(Hit(peer, buf, method, target, reply.headers))
        body = f"canary {target}\n".encode("latin-1", "replace")
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class TcpCanary(_Canary):
    """Sends `banner` first (e.g. an SMTP 220), then records what arrives until close/timeout."""

    def __init__(self, host: str, port: int = 0,
                 banner: bytes = b"220 canary.invalid ESMTP relayguard-canary\r\n") -> None:
        self.banner = banner
        super().__init__(host, port)

    def _handle(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        buf = b""
        conn.sendall(self.banner)
        deadline = time.monotonic() + 3.0
        with contextlib.suppress(OSError):
            while len(buf) < 65536 and time.monotonic() < deadline:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk
                self._record_partial(peer, buf)
                if buf.upper().startswith(b"QUIT") or b"\nQUIT" in buf.upper():
                    conn.sendall(b"221 bye\r\n")
                    break
        self._record_partial(peer, buf, final=True)

    def _record_partial(self, peer: tuple[str, int], data: bytes, final: bool = False) -> None:
        # Keep one Hit per connection, updated as bytes arrive, so tests can wait on it.
        with self._lock:
            for i, h in enumerate(self.hits):
                if h.peer == peer:
                    self.hits[i] = Hit(peer, data)
                    return
            self.hits.append(Hit(peer, data))


@contextlib.contextmanager
def http_canary(host: str, port: int = 0) -> Iterator[HttpCanary]:
    """An HttpCanary on host:port (0 = any free port), stopped on exit."""
    c = HttpCanary(host, port)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@contextlib.contextmanager
def tcp_canary(host: str, port: int = 0, banner: bytes | None = None) -> Iterator[TcpCanary]:
    """A TcpCanary (SMTP-like 220 banner by default) on host:port, stopped on exit."""
    c = TcpCanary(host, port) if banner is None else TcpCanary(host, port, banner)
    c.start()
    try:
        yield c
    finally:
        c.stop()
