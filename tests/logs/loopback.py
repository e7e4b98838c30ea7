"""The accept loop shared by the stand-ins the mail tests run on loopback (a remote MX, an
auth server): every connection on its own thread, stopped within a fifth of a second."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import TypeVar


class ThreadedServer:
    """Listens on host:port; `session(conn, peer_ip)` serves one connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self.session, args=(conn, peer[0]), daemon=True).start()

    def session(self, conn: socket.socket, peer_ip: str) -> None:
        raise NotImplementedError


S = TypeVar("S", bound=ThreadedServer)


@contextlib.contextmanager
def running(server: S) -> Iterator[S]:
    """Start `server`, always stop it."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
