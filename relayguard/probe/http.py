"""HTTP proxy checks: absolute-URI GET/HEAD, Host-header proxying, CONNECT, HTTP to SMTP ports.

Every request names the scanner's canary and carries a nonce; a check counts only when the
canary saw the nonce (a 200 proves nothing: origin servers, captive portals and WAFs answer
200 to anything). A negative control — the canary address on a port that is closed — tells
when a target answers everything the same, which goes into the notes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field

from relayguard.findings import Confidence, Location
from relayguard.probe import rules
from relayguard.probe.canary import CanaryHit, new_nonce
from relayguard.probe.context import PortResult, ProbeContext, transcript_evidence
from relayguard.probe.net import MAX_READ, Conn, NetError, TooLarge, Transcript

SCANNER_NAME = "relayguard.invalid"
USER_AGENT = "relayguard-probe"


class NotHttp(NetError):
    """The reply is not HTTP: `data` holds its first bytes for classification."""

    kind = "not-http"

    def __init__(self, message: str, data: bytes) -> None:
        super().__init__(message)
        self.data = data


@dataclass
class HttpResponse:
    status: int
    status_line: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_request(method: str, target: str, host_header: str) -> bytes:
    return (f"{method} {target} HTTP/1.1\r\nHost: {host_header}\r\n"
            f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n").encode()


async def read_head(conn: Conn) -> HttpResponse:
    """Status line and headers (bounded); NotHttp when the first bytes are not HTTP."""
    first = await conn.read_until(b"\n", "HTTP status line")
    if not first.startswith(b"HTTP/"):
        raise NotHttp(f"not an HTTP reply: {first[:60]!r}", first)
    parts = first.decode("latin-1").strip().split(None, 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        raise NotHttp(f"malformed HTTP status line: {first[:60]!r}", first) from None
    headers: dict[str, str] = {}
    size = len(first)
    while True:
        line = await conn.read_until(b"\n", "HTTP reply head")
        size += len(line)
        if size > MAX_READ:
            raise TooLarge(f"HTTP reply head exceeds {MAX_READ // 1024} KiB")
        if line in (b"\r\n", b"\n"):
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return HttpResponse(status, " ".join(parts), headers)


async def read_response(conn: Conn, head_only: bool = False) -> HttpResponse:
    """A whole response: head, then the body by Content-Length or until close (bounded)."""
    resp = await read_head(conn)
    if head_only or resp.status in (204, 304) or 100 <= resp.status < 200:
        return resp
    length = resp.headers.get("content-length", "")
    if length.isdigit():
        want = min(int(length), MAX_READ)
        try:
            resp.body = await conn.read_exact(want, "HTTP body")
        except NetError:
            resp.body = await conn.read_to_eof(MAX_READ, "HTTP body")
    else:
        resp.body = await conn.read_to_eof(MAX_READ, "HTTP body")
    return resp


async def exchange(ctx: ProbeContext, result: PortResult, request: bytes,
                   transcript: Transcript, head_only: bool = False) -> HttpResponse:
    async with ctx.connection(result.host, result.port, transcript) as conn:
        await conn.send(request)
        return await read_response(conn, head_only)


@dataclass
class Outcome:
    """One check's result: the rule it would raise, its transcript, what the canary saw."""

    rule: rules.Rule
    label: str
    transcript: Transcript
    hits: list[CanaryHit]
    error: str | None = None
    likely: bool = False  # proof without the canary (a real MTA's banner came back)


async def identify(ctx: ProbeContext, result: PortResult, conn: Conn | None = None,
                   transcript: Transcript | None = None) -> tuple[HttpResponse, Outcome]:
    """The first HTTP check doubles as service identification: absolute-URI GET.

    `conn` is the (silent) connection the banner was awaited on, reused when given.
    """
    c = ctx.canary
    nonce = new_nonce()
    target = f"http://{hostport(c.host, c.http_port)}/{nonce}"
    t = transcript or Transcript()
    request = build_request("GET", target, hostport(c.host, c.http_port))
    if conn is None:
        resp = await exchange(ctx, result, request, t)
    else:
        await conn.send(request)
        resp = await read_response(conn)
    hits = await ctx.canary_hits(nonce, settle=False)
    return resp, Outcome(rules.HTTP_ABSOLUTE_URI, f"GET {target}", t, hits)


async def _request_check(ctx: ProbeContext, result: PortResult, rule: rules.Rule,
                         method: str, target: str, host_header: str) -> Outcome:
    nonce = new_nonce()
    target = target.replace("NONCE", nonce)
    t = Transcript()
    label = f"{method} {target} (Host: {host_header})"
    try:
        await exchange(ctx, result, build_request(method, target, host_header), t,
                       head_only=method == "HEAD")
    except NetError as exc:
        # The relayed connection may have happened even if the reply is odd (SMTP ports).
        hits = await ctx.canary_hits(nonce, host=result.host)
        return Outcome(rule, label, t, hits, None if hits else f"{exc.kind}: {exc}")
    # Only an HTTP request sent to an SMTP port can be answered before the canary read it.
    hits = await ctx.canary_hits(nonce, settle=rule is rules.HTTP_SMTP, host=result.host)
    return Outcome(rule, label, t, hits)


async def _connect_check(ctx: ProbeContext, result: PortResult, rule: rules.Rule,
                         dest_host: str, dest_port: int, smtp: bool) -> Outcome:
    """CONNECT dest; on 2xx speak through the tunnel (nonce line, or SMTP EHLO nonce)."""
    nonce = new_nonce()
    dest = hostport(dest_host, dest_port)
    t = Transcript()
    label = f"CONNECT {dest}"
    granted = False
    why = ""
    try:
        async with ctx.connection(result.host, result.port, t) as conn:
            await conn.send(f"CONNECT {dest} HTTP/1.1\r\nHost: {dest}\r\n"
                            f"User-Agent: {USER_AGENT}\r\n\r\n".encode())
            resp = await read_head(conn)
            if not 200 <= resp.status < 300:
                return Outcome(rule, label, t, [])
            if _has_body(resp):
                result.note(f"{label} answered {resp.status} with a page, not a tunnel "
                            "(not counted)")
                return Outcome(rule, label, t, [])
            granted = True
            if smtp:
                await tunnel_smtp_hello(conn, nonce)
            else:
                await conn.send(f"{nonce}\r\n".encode())
                await conn.read_until(b"\n", "tunnel echo")
    except NetError as exc:
        hits = await ctx.canary_hits(nonce, host=result.host)
        if hits or not granted:
            return Outcome(rule, label, t, hits, None if hits else f"{exc.kind}: {exc}")
        why = f" ({exc.kind})"
    hits = await ctx.canary_hits(nonce, settle=bool(why), host=result.host)
    if not hits:
        result.note(f"{label} was granted but nothing reached the canary{why} "
                    "(a tunnel that does not connect is not counted)")
    return Outcome(rule, label, t, hits)


def _has_body(resp: HttpResponse) -> bool:
    """A CONNECT reply with a body is an error page or a portal, never a tunnel (RFC 9110)."""
    length = resp.headers.get("content-length", "0").strip()
    return (length.isdigit() and int(length) > 0) or "transfer-encoding" in resp.headers


async def tunnel_smtp_hello(conn: Conn, nonce: str) -> bytes:
    """Through an open tunnel to an SMTP port: read the 220 banner, say EHLO <nonce>, QUIT."""
    banner = await conn.read_until(b"\n", "SMTP banner through tunnel")
    if not banner.startswith(b"220"):
        return banner
    await conn.send(f"EHLO {nonce}.{SCANNER_NAME}\r\n".encode())
    reply = await conn.read_until(b"\n", "EHLO reply through tunnel")
    await conn.send(b"QUIT\r\n")
    return banner + reply


async def check_http(ctx: ProbeContext, result: PortResult, first: HttpResponse,
                     first_outcome: Outcome) -> None:
    """Run the HTTP proxy checks on a port that answered HTTP; fill `result`.

    Checks that could only repeat a category the canary already confirmed are skipped
    (HEAD after a relayed GET, CONNECT to 465/587 after 25 went through, the Host-header
    variant of HTTP-to-SMTP after the absolute-URI one), which halves the connections
    against open proxies without changing any verdict.
    """
    c = ctx.canary
    canary_http = hostport(c.host, c.http_port)
    smtp_ports = list(c.bound_smtp.values())
    smtp_hp = hostport(c.host, smtp_ports[0]) if smtp_ports else ""

    phase1: list[Coroutine[object, object, Outcome]] = [
        _request_check(ctx, result, rules.HTTP_HOST_HEADER, "GET", "/NONCE", canary_http)]
    if not first_outcome.hits:
        phase1.append(_request_check(ctx, result, rules.HTTP_ABSOLUTE_URI, "HEAD",
                                     f"http://{canary_http}/NONCE", canary_http))
    if c.raw_port:
        phase1.append(_connect_check(ctx, result, rules.CONNECT, c.host, c.raw_port, False))
    if smtp_ports:
        phase1.append(_connect_check(ctx, result, rules.CONNECT_SMTP, c.host, smtp_ports[0],
                                     True))
        phase1.append(_request_check(ctx, result, rules.HTTP_SMTP, "GET",
                                     f"http://{smtp_hp}/NONCE", smtp_hp))
    elif ctx.options.smtp_check_target is not None:
        phase1.append(_smtp_target_connect(ctx, result, *ctx.options.smtp_check_target))
    outcomes = [first_outcome, *await asyncio.gather(*phase1)]

    confirmed = {o.rule.id for o in outcomes if o.hits}
    phase2: list[Coroutine[object, object, Outcome]] = []
    if smtp_ports and rules.CONNECT_SMTP.id not in confirmed:
        phase2 += [_connect_check(ctx, result, rules.CONNECT_SMTP, c.host, port, True)
                   for port in smtp_ports[1:]]
    if smtp_ports and rules.HTTP_SMTP.id not in confirmed:
        phase2.append(_request_check(ctx, result, rules.HTTP_SMTP, "GET", "/NONCE", smtp_hp))
    outcomes += await asyncio.gather(*phase2)

    if 200 <= first.status < 300 and not first_outcome.hits:
        await _negative_control(ctx, result, first)

    for o in outcomes:
        if o.error:
            result.error(f"{o.label}: {o.error}")
    emit_findings(result, outcomes)


async def _smtp_target_connect(ctx: ProbeContext, result: PortResult, host: str,
                               port: int) -> Outcome:
    """Fallback without an SMTP canary: CONNECT to a real MTA and read its 220 back."""
    t = Transcript()
    dest = hostport(host, port)
    label = f"CONNECT {dest} (--smtp-check-target)"
    try:
        async with ctx.connection(result.host, result.port, t) as conn:
            await conn.send(f"CONNECT {dest} HTTP/1.1\r\nHost: {dest}\r\n\r\n".encode())
            resp = await read_head(conn)
            if not 200 <= resp.status < 300:
                return Outcome(rules.CONNECT_SMTP, label, t, [])
            banner = await conn.read_until(b"\n", "SMTP banner through tunnel")
            await conn.send(b"QUIT\r\n")
    except NetError as exc:
        return Outcome(rules.CONNECT_SMTP, label, t, [], f"{exc.kind}: {exc}")
    if banner.startswith(b"220"):
        t.note(f"the SMTP banner of {dest} came back through the tunnel (not canary-confirmed)")
        return Outcome(rules.CONNECT_SMTP, label, t, [], likely=True)
    return Outcome(rules.CONNECT_SMTP, label, t, [])


async def _negative_control(ctx: ProbeContext, result: PortResult,
                            first: HttpResponse) -> None:
    """GET the canary on a closed port: a 2xx there means the target answers everything."""
    c = ctx.canary
    if not c.closed_port:
        return
    dest = hostport(c.host, c.closed_port)
    t = Transcript()
    try:
        resp = await exchange(ctx, result, build_request(
            "GET", f"http://{dest}/{new_nonce()}", dest), t)
    except NetError:
        return
    if 200 <= resp.status < 300:
        same = " with the same body" if resp.body == first.body else ""
        result.note(f"answers {resp.status}{same} for a destination that does not answer "
                    "(captive portal, WAF or fake proxy): status codes from it mean nothing")


def emit_findings(result: PortResult, outcomes: list[Outcome]) -> None:
    """One finding per rule whose checks reached the canary, with every such transcript."""
    by_rule: dict[str, list[Outcome]] = {}
    for o in outcomes:
        if o.hits or o.likely:
            by_rule.setdefault(o.rule.id, []).append(o)
    for group in by_rule.values():
        rule = group[0].rule
        hits = [h for o in group for h in o.hits]
        evidence = []
        for o in group:
            evidence.extend(transcript_evidence(result, o.transcript, o.hits))
        how = "; ".join(o.label for o in group)
        result.findings.append(rule.finding(
            f"{rule.title}: {how}",
            location=Location(host=result.host, port=result.port),
            evidence=evidence,
            confidence=Confidence.CONFIRMED if hits else Confidence.LIKELY,
        ))
