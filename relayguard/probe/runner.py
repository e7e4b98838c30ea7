"""Scheduling for `relayguard probe`: identify each port by handshake, run its checks, report.

For each host:port: connect and listen briefly — a 3-digit banner means SMTP; silence means a
client-first service, tried as HTTP (the first proxy check doubles as identification), then
as SOCKS5 and SOCKS4. Everything runs under asyncio with a global connection cap, a per-host
cap, an optional connection rate, a deadline per host:port and one for the whole run.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections import Counter
from collections.abc import Callable

from relayguard.findings import ErrorEntry, Finding, Report
from relayguard.hostinfo import bind_error
from relayguard.probe import http, socks
from relayguard.probe.canary import Canary
from relayguard.probe.context import KeptConnection, PortResult, ProbeContext, ProbeOptions
from relayguard.probe.net import (
    Closed,
    NetError,
    Refused,
    Reset,
    StepTimeout,
    Transcript,
    endpoint,
    printable,
)
from relayguard.probe.smtp import Smtp
from relayguard.probe.targets import Target, addresses_of, literal

Progress = Callable[[int, int], None]
_SMTP_BANNER = re.compile(rb"^[2-5]\d\d[ -]")
# Seconds: never listen for a banner for less than this. Kept short because a silent port
# holds one of --concurrency connections idle for this long (on a near network it dominated
# the run time), and a later banner costs nothing in accuracy (see banner_wait).
BANNER_FLOOR = 0.05


def route_local_address(dest: str) -> str:
    """The local address the kernel would use to reach `dest` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in dest else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((dest, 9))
        return str(s.getsockname()[0])


def banner_wait(options: ProbeOptions, connect_time: float) -> float:
    """How long to listen for a server-first banner: --banner-wait at most, less on a near
    network (a live MTA greets within a few round trips). A banner that comes later is still
    recognised: it arrives as the reply to our first HTTP probe, and the SMTP checks then
    run on new connections that wait for it. (postscreen's pregreet test is not tripped: it
    sends the first line of its multi-line greeting at once.)"""
    return min(options.banner_wait, max(BANNER_FLOOR, 20 * connect_time))


async def _probe_port(ctx: ProbeContext, result: PortResult) -> None:
    """Identify the service on one open port and run the checks that fit it."""
    kept = ctx.kept(result.host, result.port)
    try:
        await _identify_and_check(ctx, result, kept)
    finally:
        await kept.close()


async def _identify_and_check(ctx: ProbeContext, result: PortResult,
                              kept: KeptConnection) -> None:
    """_probe_port's work; a banner that came before we said anything leaves its connection
    in `kept` for the SMTP checks, which then skip one connection and one greeting."""
    t = Transcript()
    first = b""
    greeted = False  # the banner came before we said anything; `kept` holds its connection
    closed_at_once = False
    failures: list[NetError] = []
    http_found: tuple[http.HttpResponse, http.Outcome] | None = None
    try:
        conn = await kept.get(t)
        first = await conn.read_some(wait=banner_wait(ctx.options, conn.connect_time),
                                     what="banner")
        listener = ctx.canary.serving(conn.local_endpoint, conn.remote_endpoint)
        if listener is not None:  # e.g. reached through another address of this host
            _is_canary(result, listener)
            return
        if first and b"\n" not in first and len(first) < 512:
            first += await conn.read_until(b"\n", "banner line")
        if _SMTP_BANNER.match(first):
            conn.buffer = first + conn.buffer  # the SMTP checks read the whole banner
            kept.keep("the one its banner was read on")
            greeted = True
        elif not first:
            # Silent: a client-first service. Ask it to proxy on this same connection.
            try:
                http_found = await http.identify(ctx, result, conn, t)
            except http.NotHttp as exc:
                if _SMTP_BANNER.match(exc.data):  # a slow banner, after our request
                    first = exc.data
                else:
                    failures.append(exc)
            except NetError as exc:
                failures.append(exc)
    except Refused:
        result.service = "closed"
        return
    except StepTimeout as exc:
        if not first and "connect" in str(exc):
            result.service = "filtered"
            return
        result.service = "error"
        result.error(f"banner: {exc.kind}: {exc}")
        return
    except Closed:
        first = b""
        closed_at_once = True
    except NetError as exc:
        result.service = "error"
        result.error(f"{exc.kind}: {exc}")
        return
    if not greeted:  # done with it: free its place under --per-host and --concurrency
        await kept.close()

    if first:
        if _SMTP_BANNER.match(first):
            result.service = "smtp"
            await Smtp(ctx, result).check((kept, t) if greeted else None)
            return
        result.service = "unknown"
        result.error("unrecognised service (not HTTP, SOCKS or SMTP); it sent first: "
                     f"{printable(first[:80], 80)!r}")
        return
    if http_found is not None:
        result.service = "http"
        await http.check_http(ctx, result, *http_found)
        return

    try:
        versions = await socks.check_socks(ctx, result)
    except NetError as exc:
        failures.append(exc)
    else:
        result.service = "+".join(versions)
        return

    if not closed_at_once:
        try:
            banner = await _tls_banner(ctx, result)
        except NetError as exc:
            failures.append(exc)
        else:
            if _SMTP_BANNER.match(banner):
                result.service = "smtps"
                await Smtp(ctx, result, implicit_tls=True).check()
            else:
                result.service = "tls"
                result.error("speaks TLS but is not SMTP (an HTTPS service?); proxies inside "
                             "TLS are not probed" + (f"; it sent {printable(banner[:60], 60)!r}"
                                                     if banner else ""))
            return

    if closed_at_once or all(isinstance(f, Closed) and "(0 bytes" in str(f) for f in failures):
        result.service = "refuses"
        result.note("accepts connections but closes them without any reply to HTTP or SOCKS "
                    "(access denied at connect time?)")
        return
    result.service = "error"
    kinds = {type(f) for f in failures}
    what = "; ".join(f"{f.kind}: {f}" for f in failures)
    if kinds <= {Reset}:
        result.error(f"connection reset on every probe: {what}")
    else:
        result.error(f"no HTTP proxy, SOCKS or SMTP service recognised: {what}")


def _is_canary(result: PortResult, listener: str) -> None:
    result.service = "canary"
    result.note(f"not probed: this is the scanner's own canary ({listener} listener); "
                "anything it relayed would be the scanner talking to itself")


def _canary_jobs(canary: Canary, jobs: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """The jobs that would probe the canary's own listeners, with the listener's kind.

    The canary's address (and, when it listens on a wildcard address, every address of this
    host) on a port the canary holds is the scanner itself: probing it would "prove" relays
    that are the scanner's own requests coming back.
    """
    listeners = canary.listeners()
    ours = {endpoint((a, 0))[0] for a in (canary.host, canary.bind)}
    wildcard = ipaddress.ip_address(canary.bind).is_unspecified
    out: dict[tuple[str, int], str] = {}
    for host, port in jobs:
        address = endpoint((host, 0))[0]
        if port in listeners and (address in ours or (wildcard and bind_error(address) is None)):
            out[(host, port)] = listeners[port]
    return out


async def _tls_banner(ctx: ProbeContext, result: PortResult) -> bytes:
    """Last resort for a port that answered neither HTTP nor SOCKS: implicit TLS (SMTPS)?"""
    t = Transcript()
    async with ctx.connection(result.host, result.port, t, tls=True) as conn:
        first = await conn.read_some(wait=ctx.options.banner_wait, what="banner over TLS")
        if first and b"\n" not in first and len(first) < 512:
            first += await conn.read_until(b"\n", "banner line over TLS")
        return first


async def _guarded(ctx: ProbeContext, result: PortResult) -> PortResult:
    try:
        async with asyncio.timeout(ctx.options.target_time):
            await _probe_port(ctx, result)
    except TimeoutError:
        result.error(f"checks did not finish within {ctx.options.target_time:g}s")
    except NetError as exc:
        result.error(f"{exc.kind}: {exc}")
    except Exception as exc:  # a bug must not lose the other targets' results
        result.error(f"internal error ({type(exc).__name__}: {exc}); please report it")
    return result


async def run_probe(targets: list[Target], options: ProbeOptions,
                    progress: Progress | None = None) -> Report:
    """Probe every target (each on its explicit port or on `options.ports`); one Report."""
    started = time.monotonic()
    errors: list[ErrorEntry] = []
    notes: list[str] = []
    jobs: list[tuple[str, int]] = []
    seen: set[tuple[str, int]] = set()
    for target in targets:
        try:
            addresses, note = (addresses_of(target.host) if literal(target.host) is not None
                               else await asyncio.to_thread(addresses_of, target.host))
        except (OSError, UnicodeError) as exc:
            errors.append(ErrorEntry(target.host, f"cannot resolve: {exc}"))
            continue
        if note is not None and note not in notes:
            notes.append(note)
        for address in addresses:
            for port in (target.port,) if target.port else options.ports:
                if (address, port) not in seen:
                    seen.add((address, port))
                    jobs.append((address, port))

    if options.source is not None and bind_error(options.source) is not None:
        errors.append(ErrorEntry("probe", f"--source-address {options.source} is not an "
                                 "address of this host; nothing was probed"))
        return Report("probe", (), tuple(errors), {"targets": len(targets)}, tuple(notes))
    canary_host = options.canary_host or options.source
    if canary_host is None and jobs:
        canary_host = route_local_address(jobs[0][0])
    canary = Canary(canary_host or "127.0.0.1", options.canary_http_port,
                    options.canary_raw_port, options.canary_smtp_ports,
                    bind=options.canary_bind or "")
    try:
        await canary.start()
    except OSError as exc:
        errors.append(ErrorEntry("canary", str(exc)))
        return Report("probe", (), tuple(errors), {"targets": len(targets)}, tuple(notes))
    notes += canary.problems
    if not canary.bound_smtp:
        if options.smtp_check_target is None:
            errors.append(ErrorEntry("canary", "no SMTP canary port (25/465/587) could be "
                                     "bound, so SMTP-through-proxy checks cannot be confirmed; "
                                     "run as root or give --smtp-check-target HOST:PORT"))
        else:
            notes.append("SMTP-through-proxy checks use --smtp-check-target "
                         f"{options.smtp_check_target[0]}:{options.smtp_check_target[1]} "
                         "(its banner coming back is `likely`, not canary-confirmed)")
    ctx = ProbeContext(options, canary)
    results: list[PortResult] = []
    skipped = _canary_jobs(canary, jobs)
    for (host, port), listener in skipped.items():
        results.append(PortResult(host, port))
        _is_canary(results[-1], listener)
    done = 0
    queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    for job in jobs:
        if job not in skipped:
            queue.put_nowait(job)

    async def worker() -> None:
        nonlocal done
        while True:
            try:
                host, port = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            results.append(await _guarded(ctx, PortResult(host, port)))
            done += 1
            if progress is not None:
                progress(done, len(jobs))

    workers = [asyncio.create_task(worker())
               for _ in range(max(1, min(len(jobs), options.concurrency)))]
    try:
        async with asyncio.timeout(options.max_time):
            await asyncio.gather(*workers)
    except TimeoutError:
        for w in workers:
            w.cancel()
        errors.append(ErrorEntry("probe", f"run stopped at --max-time {options.max_time:g}s; "
                                 f"{len(jobs) - done} host:port checks were not finished"))
    finally:
        await canary.stop()

    findings: list[Finding] = []
    services: Counter[str] = Counter()
    for r in sorted(results, key=lambda r: (r.host, r.port)):
        findings += r.findings
        errors += r.errors
        notes += r.notes
        services[r.service] += 1
    stats = {
        "targets": len(targets),
        "ports_probed": len(jobs),
        "services": dict(sorted(services.items())),
        "connections": ctx.connections,
        "duration_s": round(time.monotonic() - started, 3),
        "canary": {"host": canary.host, "bind": canary.bind, "http_port": canary.http_port,
                   "raw_port": canary.raw_port,
                   "smtp_ports": sorted(canary.bound_smtp)},
    }
    return Report("probe", tuple(findings), tuple(errors), stats, tuple(notes))
