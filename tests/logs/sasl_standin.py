"""A password checker speaking Dovecot's auth protocol, for a real Postfix's SASL
(`smtpd_sasl_type = dovecot`, `smtpd_sasl_path = inet:HOST:PORT`).

Why a stand-in: Dovecot is not installed here, and Cyrus SASL's sasldb needs `saslpasswd2`
(sasl2-bin, not installed) to hold a password. Postfix itself is real and writes the real
`client=…, sasl_method=PLAIN, sasl_username=…` lines; only the yes/no on the password comes
from here. Protocol: Dovecot's auth-protocol v1 (handshake, `AUTH … resp=`, `OK`/`FAIL`).
"""

from __future__ import annotations

import base64
import contextlib
import socket
from collections.abc import Iterator, Mapping

from tests.logs.loopback import ThreadedServer, running


class DovecotAuth(ThreadedServer):
    """Checks PLAIN credentials against `users`."""

    def __init__(self, host: str, port: int, users: Mapping[str, str]) -> None:
        super().__init__(host, port)
        self.users = dict(users)
        self.attempts: list[tuple[str, bool]] = []

    def session(self, conn: socket.socket, peer_ip: str) -> None:
        conn.settimeout(30)
        with contextlib.suppress(OSError), conn, conn.makefile("rwb") as f:
            f.write(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\n"
                    b"COOKIE\t" + b"0" * 32 + b"\nDONE\n")
            f.flush()
            for _ in range(10000):
                line = f.readline(65536)
                if not line:
                    return
                fields = line.rstrip(b"\n").decode("utf-8", "replace").split("\t")
                if fields[0] != "AUTH" or len(fields) < 3:
                    continue  # VERSION, CPID
                f.write(self._auth(fields).encode() + b"\n")
                f.flush()

    def _auth(self, fields: list[str]) -> str:
        req_id, mech = fields[1], fields[2].upper()
        resp = next((x[5:] for x in fields[3:] if x.startswith("resp=")), None)
        if mech != "PLAIN" or resp is None:
            return f"FAIL\t{req_id}\treason=PLAIN with an initial response only"
        try:
            _authz, user, password = base64.b64decode(resp).decode().split("\0")
        except ValueError:
            return f"FAIL\t{req_id}"
        ok = self.users.get(user) == password
        self.attempts.append((user, ok))
        return f"OK\t{req_id}\tuser={user}" if ok else f"FAIL\t{req_id}\tuser={user}"


@contextlib.contextmanager
def dovecot_auth(host: str, port: int, users: Mapping[str, str]) -> Iterator[DovecotAuth]:
    """A DovecotAuth on host:port, always stopped."""
    with running(DovecotAuth(host, port, users)) as server:
        yield server
