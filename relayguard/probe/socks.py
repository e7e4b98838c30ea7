"""SOCKS checks: SOCKS5 (no-auth offered), SOCKS4 and SOCKS4a, tunnelled to the canary.

A granted reply is not proof (many proxies say "granted" before connecting), so each tunnel
must carry a nonce to the canary: an HTTP request to its HTTP port, `EHLO <nonce>` to its
SMTP port. A SOCKS5 server that wants credentials is closed for strangers: noted, no finding.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct

from relayguard.probe import rules
from relayguard.probe.canary import new_nonce
from relayguard.probe.context import PortResult, ProbeContext
from relayguard.probe.http import (
    USER_AGENT,
    NotHttp,
    Outcome,
    emit_findings,
    granted_tunnel,
    hostport,
    read_response,
    tunnel_smtp_hello,
)
from relayguard.probe.net import Conn, NetError, Transcript

SOCKS5_REPLIES = {
    1: "general failure", 2: "not allowed by ruleset", 3: "network unreachable",
    4: "host unreachable", 5: "connection refused", 6: "TTL expired",
    7: "command not supported", 8: "address type not supported",
}
SOCKS5_METHODS = {0: "no authentication", 1: "GSSAPI", 2: "username/password",
                  0xFF: "no acceptable method"}


class NotSocks(NetError):
    kind = "not-socks"

    def __init__(self, message: str, data: bytes) -> None:
        super().__init__(message)
        self.data = data


def _dest5(host: str, port: int) -> bytes:
    try:
        addr = ipaddress.ip_address(host)
        atyp = b"\x01" if addr.version == 4 else b"\x04"
        dst = atyp + addr.packed
    except ValueError:
        dst = b"\x03" + bytes([len(host)]) + host.encode()
    return dst + struct.pack("!H", port)


async def socks5_greet(conn: Conn, methods: bytes = b"\x00") -> int:
    """Offer `methods` (only 'no authentication' unless told); return the server's choice.

    Only 'no authentication' is offered when probing: a server that accepts both might pick
    username/password and hide that it is open.
    """
    await conn.send(b"\x05" + bytes([len(methods)]) + methods)
    reply = await conn.read_exact(2, "SOCKS5 method reply")
    if reply[0] != 5:
        raise NotSocks(f"not a SOCKS5 reply: {reply!r}", reply)
    return reply[1]


async def socks5_connect(conn: Conn, host: str, port: int) -> int:
    await conn.send(b"\x05\x01\x00" + _dest5(host, port))
    head = await conn.read_exact(4, "SOCKS5 CONNECT reply")
    if head[0] != 5:
        raise NotSocks(f"not a SOCKS5 reply: {head!r}", head)
    if head[1] == 0:
        size = {1: 4, 4: 16}.get(head[3])
        if size is None:
            size = (await conn.read_exact(1, "SOCKS5 bound address"))[0]
        await conn.read_exact(size + 2, "SOCKS5 bound address")
    return head[1]


async def socks4_connect(conn: Conn, host: str, port: int, use_4a: bool) -> int:
    """SOCKS4 (IPv4 literal) or SOCKS4a (destination sent as a name); the reply code."""
    if use_4a:
        req = (b"\x04\x01" + struct.pack("!H", port) + b"\x00\x00\x00\x01" + b"relayguard\x00"
               + host.encode() + b"\x00")
    else:
        req = (b"\x04\x01" + struct.pack("!H", port) + ipaddress.IPv4Address(host).packed
               + b"relayguard\x00")
    await conn.send(req)
    reply = await conn.read_exact(8, "SOCKS4 reply")
    if reply[0] != 0 or not 0x5A <= reply[1] <= 0x5D:
        raise NotSocks(f"not a SOCKS4 reply: {reply!r}", reply)
    return reply[1]


async def _through(conn: Conn, ctx: ProbeContext, nonce: str, smtp: bool) -> None:
    """Speak to the canary through an open tunnel so it records the nonce."""
    c = ctx.canary
    if smtp:
        await tunnel_smtp_hello(conn, nonce)
        return
    dest = hostport(c.host, c.http_port)
    await conn.send(f"GET /{nonce} HTTP/1.1\r\nHost: {dest}\r\nUser-Agent: {USER_AGENT}\r\n"
                    "Connection: close\r\n\r\n".encode())
    with contextlib.suppress(NotHttp):
        await read_response(conn)


async def _open_tunnel(conn: Conn, version: str, host: str, port: int,
                       recognised: list[bool]) -> str | None:
    """Ask for a tunnel; None when granted, else why not. `recognised` gets an entry as soon
    as the server has answered as a SOCKS server of this version."""
    if version == "SOCKS5":
        method = await socks5_greet(conn)
        recognised.append(True)
        if method != 0:
            return (f"SOCKS5 requires authentication: offered only 'no authentication', "
                    f"server chose {method:#04x} "
                    f"({SOCKS5_METHODS.get(method, 'unknown method')})")
        code = await socks5_connect(conn, host, port)
        if code != 0:
            return (f"SOCKS5 CONNECT {hostport(host, port)} refused: {code:#04x} "
                    f"({SOCKS5_REPLIES.get(code, 'unknown')})")
        return None
    code = await socks4_connect(conn, host, port, version == "SOCKS4a")
    recognised.append(True)
    if code != 0x5A:
        return f"{version} CONNECT {hostport(host, port)} refused: {code:#04x}"
    return None


async def _auth_wanted(ctx: ProbeContext, result: PortResult) -> str:
    """After 'no authentication' was refused: which credentials does the server want?
    Asked on a new connection offering GSSAPI and username/password (nothing is sent
    after the server's choice)."""
    try:
        async with ctx.connection(result.host, result.port, Transcript()) as conn:
            method = await socks5_greet(conn, b"\x01\x02")
    except NetError as exc:
        return f"; asked which methods it wants, no answer ({exc.kind})"
    return (f"; offered GSSAPI and username/password instead, it chose {method:#04x} "
            f"({SOCKS5_METHODS.get(method, 'unknown method')})")


async def _socks_check(ctx: ProbeContext, result: PortResult, version: str, dest_port: int,
                       smtp: bool) -> Outcome | str:
    """One tunnel attempt (SOCKS5, SOCKS4 or SOCKS4a) to the canary's HTTP or SMTP port;
    a string says why there was no tunnel (auth, refusal)."""
    nonce = new_nonce()
    t = Transcript()
    c = ctx.canary
    plain = rules.SOCKS5 if version == "SOCKS5" else rules.SOCKS4
    o = Outcome(rules.SOCKS_SMTP if smtp else plain,
                f"{version} CONNECT {hostport(c.host, dest_port)}", t,
                ("smtp" if smtp else "http", dest_port), plain if smtp else None)
    recognised: list[bool] = []
    granted = False
    why = ""
    refused: str | None = None
    try:
        async with ctx.connection(result.host, result.port, t) as conn:
            refused = await _open_tunnel(conn, version, c.host, dest_port, recognised)
            if refused is None:
                granted = True
                await _through(conn, ctx, nonce, smtp)
    except NetError as exc:
        if not recognised:  # no SOCKS reply at all: the caller classifies the port
            raise
        seen = await ctx.canary_hits(nonce, host=result.host)
        if seen or not granted:
            return o.saw(seen, f"{exc.kind}: {exc}")
        why = f" ({exc.kind})"
    if refused is not None:
        # Asked on a second connection, once this one is closed (--per-host may be 1).
        if refused.endswith("(no acceptable method)"):
            refused += await _auth_wanted(ctx, result)
        return refused
    return granted_tunnel(result, o, await ctx.canary_hits(nonce, settle=bool(why),
                                                           host=result.host), why)


async def _socks5_check_target(ctx: ProbeContext, result: PortResult, host: str,
                               port: int) -> Outcome | str:
    """Without an SMTP canary: SOCKS5 to a real MTA (--smtp-check-target), read its 220."""
    t = Transcript()
    label = f"SOCKS5 CONNECT {hostport(host, port)} (--smtp-check-target)"
    try:
        async with ctx.connection(result.host, result.port, t) as conn:
            if await socks5_greet(conn) != 0:
                return "SOCKS5 requires authentication"
            code = await socks5_connect(conn, host, port)
            if code != 0:
                return f"{label} refused: {code:#04x} ({SOCKS5_REPLIES.get(code, 'unknown')})"
            banner = await conn.read_until(b"\n", "SMTP banner through tunnel")
            await conn.send(b"QUIT\r\n")
    except NetError as exc:
        return Outcome(rules.SOCKS_SMTP, label, t, error=f"{exc.kind}: {exc}")
    if not banner.startswith(b"220"):
        return f"{label}: no SMTP banner came back"
    t.note(f"the SMTP banner of {hostport(host, port)} came back through the tunnel "
           "(not canary-confirmed)")
    return Outcome(rules.SOCKS_SMTP, label, t, likely=True)


def _smtp_port(ctx: ProbeContext) -> int | None:
    return next(iter(ctx.canary.bound_smtp.values()), None)


Tried = list[Outcome | str]  # what each tunnel attempt gave: an outcome, or why no tunnel


async def _socks5_checks(ctx: ProbeContext, result: PortResult, smtp_port: int | None
                         ) -> tuple[Tried, NetError | None]:
    """SOCKS5 to the canary's HTTP port and, when that is open, to its SMTP port (or the
    --smtp-check-target): what each attempt gave (empty when the port did not answer as
    SOCKS5), and why not when it did not answer."""
    tried: Tried = []
    try:
        first = await _socks_check(ctx, result, "SOCKS5", ctx.canary.http_port, smtp=False)
    except NetError as exc:
        return tried, exc
    tried.append(first)
    if isinstance(first, str):
        return tried, None
    with contextlib.suppress(NetError):  # it answered SOCKS5 once; a silent retry proves nothing
        if smtp_port is not None:
            tried.append(await _socks_check(ctx, result, "SOCKS5", smtp_port, smtp=True))
        elif ctx.options.smtp_check_target is not None:
            tried.append(await _socks5_check_target(ctx, result,
                                                    *ctx.options.smtp_check_target))
    return tried, None


async def _socks4_checks(ctx: ProbeContext, result: PortResult, smtp_port: int | None
                         ) -> tuple[Tried, NetError | None]:
    """SOCKS4 and SOCKS4a to the canary's HTTP port, SOCKS4 to its SMTP port when SOCKS4 is
    open (IPv4 canary only: SOCKS4 has no IPv6 addresses); like `_socks5_checks`, what each
    attempt gave (empty when the port did not answer) and why it stopped."""
    tried: Tried = []
    if ":" in ctx.canary.host:
        return tried, None
    try:
        for version in ("SOCKS4", "SOCKS4a"):
            got = await _socks_check(ctx, result, version, ctx.canary.http_port, False)
            tried.append(got)
            if not isinstance(got, str) and got.hits and smtp_port is not None \
                    and version == "SOCKS4":
                tried.append(await _socks_check(ctx, result, version, smtp_port, True))
    except NetError as exc:
        return tried, exc
    return tried, None


async def check_socks(ctx: ProbeContext, result: PortResult) -> list[str]:
    """Try SOCKS5 and SOCKS4/4a (side by side: they are independent); fill `result`; return
    the versions the port speaks.

    Raises NetError (NotSocks, Closed, Reset, timeout) when neither version answers, so the
    caller can classify the port.
    """
    smtp_port = _smtp_port(ctx)
    (tried5, error5), (tried4, error4) = await asyncio.gather(
        _socks5_checks(ctx, result, smtp_port), _socks4_checks(ctx, result, smtp_port))
    versions = ["socks5"] * bool(tried5) + ["socks4"] * bool(tried4)
    if not versions:
        raise error5 or error4 or NotSocks("no SOCKS reply", b"")
    outcomes: list[Outcome] = []
    for got in (*tried5, *tried4):
        if isinstance(got, str):
            result.note(got)
        else:
            outcomes.append(got)
    for o in outcomes:
        if o.error:
            result.error(f"{o.label}: {o.error}")
    emit_findings(result, outcomes)
    return versions
