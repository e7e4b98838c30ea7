"""A minimal blocking SOCKS4/5 client for tests: does the daemon grant a tunnel to a stranger?

`socks5_connect` / `socks4_connect` return the server's reply code and, when granted, the
open socket (caller closes it). Codes: SOCKS5 0 = granted, 0xFF = no acceptable auth
method; SOCKS4 0x5A = granted, 0x5B = rejected.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from tests.servers.http import connect


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def socks5_connect(host: str, port: int, dst_host: str, dst_port: int, *,
                   source: str | None = None, user: str | None = None,
                   password: str | None = None,
                   timeout: float = 5.0) -> tuple[int, socket.socket | None]:
    """SOCKS5 CONNECT (no-auth, or user/pass when given); (code, socket or None)."""
    s = connect(host, port, source, timeout)
    try:
        methods = b"\x00\x02" if user is not None else b"\x00"
        s.sendall(b"\x05" + bytes([len(methods)]) + methods)
        _ver, method = _recv_exact(s, 2)
        if method == 0xFF:
            s.close()
            return 0xFF, None
        if method == 2:
            u, p = (user or "").encode(), (password or "").encode()
            s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
            if _recv_exact(s, 2)[1] != 0:
                s.close()
                return 0xFE, None
        try:
            addr = ipaddress.ip_address(dst_host)
            atyp = b"\x01" if addr.version == 4 else b"\x04"
            dst = atyp + addr.packed
        except ValueError:
            dst = b"\x03" + bytes([len(dst_host)]) + dst_host.encode()
        s.sendall(b"\x05\x01\x00" + dst + struct.pack("!H", dst_port))
        head = _recv_exact(s, 4)
        rest = {1: 4, 4: 16}.get(head[3])
        _recv_exact(s, (rest if rest is not None else _recv_exact(s, 1)[0]) + 2)
        if head[1] != 0:
            s.close()
            return head[1], None
        return 0, s
    except BaseException:
        s.close()
        raise


def socks4_connect(host: str, port: int, dst_host: str, dst_port: int, *,
                   source: str | None = None, userid: bytes = b"test",
                   timeout: float = 5.0) -> tuple[int, socket.socket | None]:
    """SOCKS4 (IPv4 literal) or SOCKS4a (name) CONNECT; (code, socket or None)."""
    s = connect(host, port, source, timeout)
    try:
        try:
            ip, name = ipaddress.IPv4Address(dst_host).packed, b""
        except ValueError:
            ip, name = b"\x00\x00\x00\x01", dst_host.encode() + b"\x00"
        s.sendall(b"\x04\x01" + struct.pack("!H", dst_port) + ip + userid + b"\x00" + name)
        reply = _recv_exact(s, 8)
        if reply[1] != 0x5A:
            s.close()
            return reply[1], None
        return 0x5A, s
    except BaseException:
        s.close()
        raise
