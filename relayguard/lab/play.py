"""The lab's actors: spammers relaying through the proxy, and ordinary visitors.

A spammer does what the incident's spammers did: `CONNECT mx:25` through the web server's
proxy, then talks SMTP to the MTA behind it, which sees a loopback client it trusts and
accepts a foreign recipient. The spammer stops at RCPT (RSET, QUIT): no message is ever
sent, and the lab's MTA could not deliver one anyway. Every socket has a timeout; every loop
is bounded.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

TIMEOUT = 5.0
MAX_LINES = 50


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one actor got: the proxy's answer and, for spammers, the MTA's RCPT answer."""

    actor: str
    source: str
    proxy_status: str
    rcpt_reply: str = ""

    @property
    def relayed(self) -> bool:
        """The MTA accepted a foreign recipient through the proxy."""
        return self.rcpt_reply.startswith("250")


def _line(f: socket.SocketIO | object) -> str:
    data = f.readline()  # type: ignore[attr-defined]
    return data.decode("utf-8", "replace").rstrip("\r\n")


def _reply(f: object) -> str:
    """The last line of a (possibly multi-line) SMTP reply."""
    for _ in range(MAX_LINES):
        line = _line(f)
        if line[3:4] != "-":
            return line
    return ""


def spammer(proxy: tuple[str, int], mx: tuple[str, int], source: str, victim: str) -> Attempt:
    """CONNECT to the MTA through the proxy and try one foreign RCPT (no DATA, ever)."""
    with socket.create_connection(proxy, timeout=TIMEOUT, source_address=(source, 0)) as s, \
            s.makefile("rwb") as f:
        f.write(f"CONNECT {mx[0]}:{mx[1]} HTTP/1.1\r\nHost: {mx[0]}:{mx[1]}\r\n\r\n".encode())
        f.flush()
        status = _line(f)
        for _ in range(MAX_LINES):  # the rest of the proxy's header block
            if not _line(f):
                break
        if " 200 " not in f"{status} ":
            return Attempt("spammer", source, status)
        rcpt = ""
        if _reply(f).startswith("220"):
            for command in ("EHLO bulk-mailer.example", "MAIL FROM:<offers@bulk-mailer.example>",
                            f"RCPT TO:<{victim}>"):
                f.write(command.encode() + b"\r\n")
                f.flush()
                rcpt = _reply(f)
            with contextlib.suppress(OSError):
                f.write(b"RSET\r\nQUIT\r\n")
                f.flush()
        return Attempt("spammer", source, status, rcpt)


def visitor(site: tuple[str, int], source: str, path: str = "/") -> Attempt:
    """An ordinary visitor fetching a page of the web site."""
    with socket.create_connection(site, timeout=TIMEOUT, source_address=(source, 0)) as s, \
            s.makefile("rwb") as f:
        f.write(f"GET {path} HTTP/1.1\r\nHost: www.lab.relayguard.invalid\r\n"
                "User-Agent: Mozilla/5.0 (lab visitor)\r\nConnection: close\r\n\r\n".encode())
        f.flush()
        return Attempt("visitor", source, _line(f))


def play(proxy: tuple[str, int], mx: tuple[str, int], spammers: list[str],
         visitors: list[str]) -> list[Attempt]:
    """Interleave visitors and spammers (each list bounded by the caller)."""
    out: list[Attempt] = []
    for i in range(max(len(spammers), len(visitors))):
        if i < len(visitors):
            try:
                out.append(visitor(proxy, visitors[i], "/" if i % 2 == 0 else "/index.html"))
            except OSError as exc:
                out.append(Attempt("visitor", visitors[i], f"error: {exc}"))
        if i < len(spammers):
            try:
                out.append(spammer(proxy, mx, spammers[i], f"victim{i}@mx.victim.example"))
            except OSError as exc:
                out.append(Attempt("spammer", spammers[i], f"error: {exc}"))
    return out
