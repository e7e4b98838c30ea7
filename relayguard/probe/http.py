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

from relayguard import PROBE_USER_AGENT
from relayguard.digits import is_digits
from relayguard.findings import Confidence, Evidence, Location
from relayguard.probe import rules
from relayguard.probe.canary import CanaryHit, new_nonce
from relayguard.probe.context import (
    KeptConnection,
    PortResult,
    ProbeContext,
    split_hits,
    transcript_evidence,
)
from relayguard.probe.net import MAX_READ, Closed, Conn, NetError, Reset, TooLarge, Transcript

SCANNER_NAME = "relayguard.invalid"
USER_AGENT = PROBE_USER_AGENT


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


async def read_head(conn: Conn, until: float | None = None) -> HttpResponse:
    """Status line and headers, all within one reply deadline (`until`, else a fresh one)
    and MAX_READ; NotHttp when the first bytes are not HTTP."""
    until = conn.reply_deadline() if until is None else until
    first = await conn.read_until(b"\n", "HTTP status line", until)
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
        line = await conn.read_until(b"\n", "HTTP reply head", until)
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
    """A whole response: head, then the body by Content-Length or until close; all of it
    within one reply deadline and MAX_READ per part."""
    until = conn.reply_deadline()
    resp = await read_head(conn, until)
    if head_only or resp.status in (204, 304) or 100 <= resp.status < 200:
        return resp
    length = resp.headers.get("content-length", "")
    if is_digits(length):
        want = min(int(length), MAX_READ)
        try:
            resp.body = await conn.read_exact(want, "HTTP body", until)
        except NetError:
            resp.body = await conn.read_to_eof(MAX_READ, "HTTP body", until)
    else:
        resp.body = await conn.read_to_eof(MAX_READ, "HTTP body", until)
    return resp


async def exchange(ctx: ProbeContext, result: PortResult, request: bytes,
                   transcript: Transcript, head_only: bool = False) -> HttpResponse:
    async with ctx.connection(result.host, result.port, transcript) as conn:
        await conn.send(request)
        return await read_response(conn, head_only)


@dataclass
class Outcome:
    """One check's result: the rule it would raise, its transcript, what the canary saw.

    `want` is the canary listener and port the probe asked the target to reach; only hits
    there (`hits`) prove `rule`. Hits on any other listener (`stray`) prove at most
    `fallback` (the non-SMTP sibling of an SMTP rule), or nothing.
    """

    rule: rules.Rule
    label: str
    transcript: Transcript
    want: tuple[str, int] = ("", 0)
    fallback: rules.Rule | None = None
    hits: list[CanaryHit] = field(default_factory=list)
    stray: list[CanaryHit] = field(default_factory=list)
    own: list[CanaryHit] = field(default_factory=list)  # over the scanner's own socket
    error: str | None = None
    likely: bool = False  # proof without the canary (a real MTA's banner came back)

    def saw(self, seen: list[CanaryHit], error: str | None = None) -> Outcome:
        """Record what the canary saw for this check's nonce; an error counts only if the
        nonce went nowhere."""
        self.hits, self.stray, self.own = split_hits(seen, *self.want)
        self.error = None if seen else error
        return self


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
    outcome = Outcome(rules.HTTP_ABSOLUTE_URI, f"GET {target}", t, ("http", c.http_port))
    return resp, outcome.saw(await ctx.canary_hits(nonce, settle=False))


async def _request_check(ctx: ProbeContext, result: PortResult, rule: rules.Rule,
                         method: str, target: str, host_header: str,
                         want: tuple[str, int], fallback: rules.Rule | None = None) -> Outcome:
    nonce = new_nonce()
    target = target.replace("NONCE", nonce)
    t = Transcript()
    o = Outcome(rule, f"{method} {target} (Host: {host_header})", t, want, fallback)
    try:
        await exchange(ctx, result, build_request(method, target, host_header), t,
                       head_only=method == "HEAD")
    except NetError as exc:
        # The relayed connection may have happened even if the reply is odd (SMTP ports).
        return o.saw(await ctx.canary_hits(nonce, host=result.host), f"{exc.kind}: {exc}")
    # Only an HTTP request sent to an SMTP port can be answered before the canary read it.
    return o.saw(await ctx.canary_hits(nonce, settle=want[0] == "smtp", host=result.host))


async def _connect_check(ctx: ProbeContext, result: PortResult, rule: rules.Rule,
                         dest_host: str, dest_port: int, smtp: bool,
                         kept: KeptConnection | None = None) -> Outcome:
    """CONNECT dest; on 2xx speak through the tunnel (nonce line, or SMTP EHLO nonce).

    With `kept` (a chain of CONNECTs), a refusal that leaves the connection clean keeps it
    for the next CONNECT of the chain; without, the connection is this check's alone.
    """
    nonce = new_nonce()
    dest = hostport(dest_host, dest_port)
    t = Transcript()
    o = Outcome(rule, f"CONNECT {dest}", t, ("smtp" if smtp else "raw", dest_port),
                rules.CONNECT if smtp else None)
    mine = kept is None
    conn_of = kept or ctx.kept(result.host, result.port)
    request = (f"CONNECT {dest} HTTP/1.1\r\nHost: {dest}\r\n"
               f"User-Agent: {USER_AGENT}\r\n\r\n").encode()
    granted = False
    why = ""
    try:
        conn, resp = await _request_head(conn_of, t, request)
        if not 200 <= resp.status < 300:
            if await _drain_refusal(conn, resp):
                conn_of.keep("the proxy kept it open after the previous refusal")
            return o
        if _has_body(resp):
            result.note(f"{o.label} answered {resp.status} with a page, not a tunnel "
                        "(not counted)")
            return o
        granted = True
        if smtp:
            await tunnel_smtp_hello(conn, nonce)
        else:
            await conn.send(f"{nonce}\r\n".encode())
            await conn.read_until(b"\n", "tunnel echo")
    except NetError as exc:
        await conn_of.close()
        seen = await ctx.canary_hits(nonce, host=result.host)
        if seen or not granted:
            return o.saw(seen, f"{exc.kind}: {exc}")
        why = f" ({exc.kind})"
    finally:
        if mine or granted:
            await conn_of.close()
    return granted_tunnel(result, o, await ctx.canary_hits(nonce, settle=bool(why),
                                                           host=result.host), why)


async def _request_head(kept: KeptConnection, t: Transcript, request: bytes
                        ) -> tuple[Conn, HttpResponse]:
    """Send `request` and read the reply head, on the kept connection if there is one.

    A kept connection the proxy closed meanwhile (nothing came back) is not an answer: the
    request is sent again once on a new connection, as HTTP clients do.
    """
    conn = await kept.get(t)
    before = conn.received
    try:
        await conn.send(request)
        return conn, await read_head(conn)
    except (Closed, Reset) as exc:
        if not kept.reused or conn.received != before:
            raise
        t.note(f"the kept connection was gone ({exc.kind}); sending again on a new one")
    conn = await kept.get(t)
    await conn.send(request)
    return conn, await read_head(conn)


async def _drain_refusal(conn: Conn, resp: HttpResponse) -> bool:
    """Read the body of a refusal so the connection is clean for another request; False when
    the proxy will close it (HTTP/1.0, `Connection: close`) or its end cannot be found."""
    if not resp.status_line.startswith("HTTP/1.1 ") \
            or "close" in resp.headers.get("connection", "").lower() \
            or "transfer-encoding" in resp.headers:
        return False
    length = resp.headers.get("content-length", "0").strip()
    if not is_digits(length) or int(length) > MAX_READ:
        return False
    try:
        resp.body = await conn.read_exact(int(length), "HTTP body", conn.reply_deadline())
    except NetError:
        return False
    return True


async def _connect_smtp_chain(ctx: ProbeContext, result: PortResult, ports: list[int]
                              ) -> list[Outcome]:
    """CONNECT to the canary's SMTP ports in turn (25, then 465 and 587) until the canary
    confirms one. While the proxy refuses with keep-alive they share one connection: a
    stock Apache (`AllowCONNECT 443 563`) answers all three 403 on one socket."""
    kept = ctx.kept(result.host, result.port)
    outcomes: list[Outcome] = []
    try:
        for port in ports:
            outcomes.append(await _connect_check(ctx, result, rules.CONNECT_SMTP,
                                                 ctx.canary.host, port, True, kept))
            if outcomes[-1].hits:
                break
    finally:
        await kept.close()
    return outcomes


def granted_tunnel(result: PortResult, o: Outcome, seen: list[CanaryHit],
                   why: str) -> Outcome:
    """A tunnel the target said it opened: note it when the nonce went nowhere."""
    if not seen:
        result.note(f"{o.label} was granted but nothing reached the canary{why} "
                    "(a tunnel that does not connect is not counted)")
    return o.saw(seen)


def _has_body(resp: HttpResponse) -> bool:
    """A CONNECT reply with a body is an error page or a portal, never a tunnel (RFC 9110)."""
    length = resp.headers.get("content-length", "0").strip()
    return (is_digits(length) and int(length) > 0) or "transfer-encoding" in resp.headers


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
    variant of HTTP-to-SMTP after the absolute-URI one), and refused CONNECTs to the SMTP
    ports share one kept-alive connection, which more than halves the connections against
    open proxies without changing any verdict.
    """
    c = ctx.canary
    canary_http = hostport(c.host, c.http_port)
    smtp_ports = list(c.bound_smtp.values())
    smtp_hp = hostport(c.host, smtp_ports[0]) if smtp_ports else ""

    http_want = ("http", c.http_port)
    smtp_want = ("smtp", smtp_ports[0]) if smtp_ports else ("", 0)
    phase1: list[Coroutine[object, object, Outcome]] = [
        _request_check(ctx, result, rules.HTTP_HOST_HEADER, "GET", "/NONCE", canary_http,
                       http_want)]
    if not first_outcome.hits:
        phase1.append(_request_check(ctx, result, rules.HTTP_ABSOLUTE_URI, "HEAD",
                                     f"http://{canary_http}/NONCE", canary_http, http_want))
    if c.raw_port:
        phase1.append(_connect_check(ctx, result, rules.CONNECT, c.host, c.raw_port, False))
    if smtp_ports:
        phase1.append(_request_check(ctx, result, rules.HTTP_SMTP, "GET",
                                     f"http://{smtp_hp}/NONCE", smtp_hp, smtp_want,
                                     rules.HTTP_ABSOLUTE_URI))
    elif ctx.options.smtp_check_target is not None:
        phase1.append(_smtp_target_connect(ctx, result, *ctx.options.smtp_check_target))
    *singles, chained = await asyncio.gather(
        *phase1, _connect_smtp_chain(ctx, result, smtp_ports))
    outcomes = [first_outcome, *singles, *chained]

    confirmed = {o.rule.id for o in outcomes if o.hits}
    phase2: list[Coroutine[object, object, Outcome]] = []
    if smtp_ports and rules.HTTP_SMTP.id not in confirmed:
        phase2.append(_request_check(ctx, result, rules.HTTP_SMTP, "GET", "/NONCE", smtp_hp,
                                     smtp_want, rules.HTTP_HOST_HEADER))
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
    o = Outcome(rules.CONNECT_SMTP, f"CONNECT {dest} (--smtp-check-target)", t)
    try:
        async with ctx.connection(result.host, result.port, t) as conn:
            await conn.send(f"CONNECT {dest} HTTP/1.1\r\nHost: {dest}\r\n\r\n".encode())
            resp = await read_head(conn)
            if not 200 <= resp.status < 300:
                return o
            banner = await conn.read_until(b"\n", "SMTP banner through tunnel")
            await conn.send(b"QUIT\r\n")
    except NetError as exc:
        o.error = f"{exc.kind}: {exc}"
        return o
    if banner.startswith(b"220"):
        t.note(f"the SMTP banner of {dest} came back through the tunnel (not canary-confirmed)")
        o.likely = True
    return o


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
    """One finding per rule the checks proved, with every transcript that proves it.

    A nonce that reached a different canary listener than the one asked for counts only for
    the check's non-SMTP fallback rule, with a note saying so; without a fallback it is a
    note and no finding.
    """
    by_rule: dict[str, tuple[rules.Rule, list[tuple[Outcome, list[CanaryHit], str]]]] = {}
    for o in outcomes:
        if o.hits or o.likely:
            by_rule.setdefault(o.rule.id, (o.rule, []))[1].append((o, o.hits, ""))
        if o.own:
            result.note(f"{o.label}: the nonce reached the canary over the scanner's own "
                        "connection (this port is the canary, or forwards straight to it; "
                        "not counted)")
        if not o.stray:
            continue
        where = ", ".join(f"its {h.listener} listener on port {h.port}" for h in o.stray)
        asked = f"asked to reach the canary's {o.want[0]} listener on port {o.want[1]}"
        if o.fallback is None:
            result.note(f"{o.label}: {asked}, the nonce arrived at {where} instead "
                        "(the target rewrote the destination; not counted)")
            continue
        why = (f"{o.label}: {asked}, the nonce arrived at {where} instead: the target "
               f"dropped or rewrote the port. This proves {o.fallback.category.value} only, "
               f"not {o.rule.category.value} ({o.rule.id})")
        by_rule.setdefault(o.fallback.id, (o.fallback, []))[1].append((o, o.stray, why))
    for rule, group in by_rule.values():
        evidence: list[Evidence] = []
        for o, hits, why in group:
            evidence.extend(transcript_evidence(result, o.transcript, hits))
            if why:
                evidence.append(Evidence(kind="note", text=why))
        result.findings.append(rule.finding(
            f"{rule.title}: {'; '.join(o.label for o, _, _ in group)}",
            location=Location(host=result.host, port=result.port),
            evidence=evidence,
            confidence=Confidence.CONFIRMED if any(h for _, h, _ in group) else Confidence.LIKELY,
        ))
