"""A tiny threaded SMTP server on loopback that plays a remote MX for Postfix under test.

No Debian package gives a scriptable remote MX, so this is the one stand-in in these tests:
`accept` answers every command like a normal MX; `blocklisted` answers RCPT with the kind of
554 a real MX sends to a listed IP (so the real Postfix logs a real blocklist bounce);
`greeting_block` refuses at the greeting with that 554, as Spamhaus-using MXes often do (the
real Postfix then logs `refused to talk to me: 554 …`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from tests.logs.loopback import ThreadedServer, running

BLOCK_REPLY = (b"554 5.7.1 Service unavailable; Client host [{ip}] blocked using "
               b"zen.spamhaus.org; https://www.spamhaus.org/query/ip/{ip}\r\n")


class SmtpSink(ThreadedServer):
    """Accepts SMTP sessions; counts accepted messages; optionally refuses RCPT (blocklist)."""

    def __init__(self, host: str, port: int, *, blocklisted: bool = False,
                 greeting_block: bool = False) -> None:
        super().__init__(host, port)
        self.blocklisted = blocklisted
        self.greeting_block = greeting_block
        self.sessions = 0
        self.messages = 0
        self.rcpts: list[str] = []
        self._lock = threading.Lock()

    def session(self, conn: socket.socket, peer_ip: str) -> None:
        conn.settimeout(10)
        with contextlib.suppress(OSError), conn, conn.makefile("rwb") as f:
            with self._lock:
                self.sessions += 1
            if self.greeting_block:
                f.write(BLOCK_REPLY.replace(b"{ip}", peer_ip.encode()))
                f.flush()
                f.readline(65536)  # the client's QUIT, if it sends one
                return
            f.write(b"220 sink.test ESMTP\r\n")
            f.flush()
            in_data = False
            for _ in range(10000):
                line = f.readline(65536)
                if not line:
                    return
                if in_data:
                    if line in (b".\r\n", b".\n"):
                        in_data = False
                        with self._lock:
                            self.messages += 1
                        f.write(b"250 2.0.0 Ok: queued\r\n")
                        f.flush()
                    continue
                cmd = line[:4].upper()
                if cmd in (b"EHLO", b"HELO"):
                    f.write(b"250-sink.test\r\n250 8BITMIME\r\n")
                elif cmd == b"RCPT":
                    if self.blocklisted:
                        f.write(BLOCK_REPLY.replace(b"{ip}", peer_ip.encode()))
                    else:
                        with self._lock:
                            self.rcpts.append(line.decode("latin-1").strip())
                        f.write(b"250 2.1.5 Ok\r\n")
                elif cmd == b"DATA":
                    in_data = True
                    f.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                elif cmd == b"QUIT":
                    f.write(b"221 2.0.0 Bye\r\n")
                    f.flush()
                    return
                else:
                    f.write(b"250 2.0.0 Ok\r\n")
                f.flush()


@contextlib.contextmanager
def smtp_sink(host: str, port: int, *, blocklisted: bool = False,
              greeting_block: bool = False) -> Iterator[SmtpSink]:
    """An SmtpSink on host:port, always stopped."""
    with running(SmtpSink(host, port, blocklisted=blocklisted,
                          greeting_block=greeting_block)) as sink:
        yield sink
