"""Hostile and broken servers cost a bounded time and end as error entries, never a hang.

These fake servers are the one place a mock is right: no real daemon drips bytes, sends
endless headers or lies about tunnels on purpose. Each listens on its own 127.0.4.x address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import pytest

from relayguard.findings import Report
from relayguard.probe.context import ProbeOptions
from relayguard.probe.net import NetError, Transcript, open_conn
from relayguard.probe.runner import run_probe
from relayguard.probe.targets import Target

SCANNER = "127.0.4.99"
CANARY = "127.0.4.3"
TIMEOUT = 0.5

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def slow_drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A valid-looking HTTP reply, one byte every 0.1 s, forever."""
    for b in b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 100_000:
        writer.write(bytes([b]))
        await writer.drain()
        await asyncio.sleep(0.1)


async def endless_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for i in range(1_000_000):
        writer.write(f"X-Header-{i}: {'v' * 50}\r\n".encode())
        await writer.drain()


async def garbage_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)
    writer.write(bytes(range(256)) * 4)
    await writer.drain()
    writer.close()


async def garbage_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x00\xff\xfe garbage \x01\x02\r\n")
    await writer.drain()
    await asyncio.sleep(5)


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read everything, never answer."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(30):
            while await reader.read(1024):
                pass


async def endless_smtp_banner(reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
    for _ in range(1_000_000):
        writer.write(b"220-still greeting you\r\n")
        await writer.drain()


DRIP = 0.7 * TIMEOUT  # one whole line just inside each per-step deadline


async def drip_http_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP reply head that never ends: one complete header line every DRIP seconds."""
    await reader.read(1024)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for i in range(1000):
        writer.write(f"X-Drip-{i}: v\r\n".encode())
        await writer.drain()
        await asyncio.sleep(DRIP)


async def drip_smtp_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A multi-line 220 greeting, one complete line every DRIP seconds."""
    for i in range(1000):
        writer.write(f"220-greeting line {i}\r\n".encode())
        await writer.drain()
        await asyncio.sleep(DRIP)


async def smtp_huge_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A multi-line 220 greeting of 30 KB lines: few lines, megabytes in total."""
    for _ in range(200):
        writer.write(b"220-" + b"x" * 30_000 + b"\r\n")
        await writer.drain()


async def says_200_to_everything(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
    """A captive portal / fake proxy: the same 200 page whatever is asked (even CONNECT)."""
    await reader.read(4096)
    body = b"<html>Welcome to the airport wifi</html>"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


async def odd_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """200 to everything, its Content-Length a superscript two (b"\\xb2", '²' in the Latin-1
    the head is read in): `str.isdigit()` says yes to it and `int()` refused it."""
    await reader.read(4096)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n<html>hi</html>")
    await writer.drain()
    writer.close()


async def socks_liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """SOCKS5 that grants every CONNECT and connects nowhere."""
    data = await reader.read(3)
    if data[:1] != b"\x05":
        writer.close()
        return
    writer.write(b"\x05\x00")
    await reader.read(300)
    writer.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x50")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()


# handler, address, whether it must end as an error entry
HOSTILE: dict[str, tuple[Handler, str, bool]] = {
    "slow-drip": (slow_drip, "127.0.4.50", True),
    "endless-headers": (endless_headers, "127.0.4.51", True),
    "garbage-reply": (garbage_reply, "127.0.4.52", True),
    "garbage-first": (garbage_first, "127.0.4.53", True),
    "reset": (reset, "127.0.4.54", True),
    "tarpit": (tarpit, "127.0.4.55", True),
    "endless-smtp-banner": (endless_smtp_banner, "127.0.4.56", True),
    "says-200": (says_200_to_everything, "127.0.4.57", False),
    "socks-liar": (socks_liar, "127.0.4.58", False),
    "odd-length": (odd_length, "127.0.4.63", False),
    "drip-http-lines": (drip_http_lines, "127.0.4.71", True),
    "drip-smtp-lines": (drip_smtp_lines, "127.0.4.72", True),
    "smtp-huge-lines": (smtp_huge_lines, "127.0.4.73", True),
}
PORT = 18080


@contextlib.contextmanager
def serving(groups: list[tuple[dict[str, tuple[Handler, str, bool]], int]]) -> Iterator[None]:
    """Run every handler of every (servers, port) group on its own address:port, in a thread
    with its own event loop: a server that writes without pause must not starve the
    scanner's loop, as no remote server could."""
    loop = asyncio.new_event_loop()
    started: list[asyncio.Server] = []
    failed: list[BaseException] = []
    ready = threading.Event()

    async def start() -> None:
        for servers, port in groups:
            for handler, addr, _ in servers.values():
                async def guarded(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                                  h: Handler = handler) -> None:
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await h(r, w)
                    with contextlib.suppress(Exception):
                        w.close()
                started.append(await asyncio.start_server(guarded, addr, port))

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # handed to the test thread below
            failed.append(exc)
        ready.set()
        if not failed:
            loop.run_forever()

    async def stop() -> None:
        for server in started:
            server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=5) if tasks else None

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "hostile servers did not start"
    try:
        if failed:
            raise failed[0]
        yield
    finally:
        if not failed:
            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _probe_servers(servers: dict[str, tuple[Handler, str, bool]], port: int,
                         canary: str = CANARY) -> tuple[Report, float]:
    """Probe every server of a group (already serving) in one run; the report and its time."""
    options = ProbeOptions(timeout=TIMEOUT, banner_wait=0.3, source=SCANNER,
                           canary_host=canary, target_time=20)
    started = time.monotonic()
    report = await run_probe([Target(a, port) for _, a, _ in servers.values()], options)
    return report, time.monotonic() - started


@pytest.fixture(scope="module")
def hostile() -> tuple[Report, float]:
    with serving([(HOSTILE, PORT)]):
        return asyncio.run(_probe_servers(HOSTILE, PORT))


def _errors_by_address(report: Report) -> dict[str, str]:
    """Every error message of each address, joined (a port may have more than one)."""
    by: dict[str, list[str]] = {}
    for e in report.errors:
        by.setdefault(e.source.split(":")[0], []).append(e.message)
    return {addr: " | ".join(messages) for addr, messages in by.items()}


def test_hostile_servers_cost_bounded_time(hostile: tuple[Report, float]) -> None:
    report, elapsed = hostile
    # Every port runs in parallel; the worst needs a few steps of TIMEOUT each.
    assert elapsed < 10 * TIMEOUT + 3, elapsed
    assert report.findings == ()


@pytest.mark.parametrize("name", list(HOSTILE))
def test_each_hostile_server_is_an_error_entry_or_a_note(hostile: tuple[Report, float],
                                                         name: str) -> None:
    report, _ = hostile
    _, addr, must_error = HOSTILE[name]
    errors = [e.message for e in report.errors if e.source == f"{addr}:{PORT}"]
    assert bool(errors) is must_error, (name, errors)


def test_error_messages_say_what_happened(hostile: tuple[Report, float]) -> None:
    report, _ = hostile
    by = _errors_by_address(report)
    assert "timeout" in by["127.0.4.50"]
    assert "64 KiB" in by["127.0.4.51"]
    assert "reset" in by["127.0.4.54"]
    # Sent first, but under load it may only arrive after we asked: either way named.
    assert "recognised" in by["127.0.4.53"] and "garbage" in by["127.0.4.53"]
    assert "64 KiB" in by["127.0.4.56"] or "lines" in by["127.0.4.56"]
    # Whole lines dripped inside each --timeout: the reply's own deadline ends it.
    assert "the limit for a whole reply" in by["127.0.4.71"], by["127.0.4.71"]
    assert "the limit for a whole reply" in by["127.0.4.72"], by["127.0.4.72"]
    assert "SMTP banner exceeds 64 KiB" in by["127.0.4.73"], by["127.0.4.73"]


def test_fake_proxies_are_noted_not_reported(hostile: tuple[Report, float]) -> None:
    report, _ = hostile
    says200 = [n for n in report.notes if n.startswith(f"127.0.4.57:{PORT}")]
    assert any("does not answer" in n and "same body" in n for n in says200), says200
    assert any("CONNECT" in n and "with a page, not a tunnel" in n for n in says200), says200
    liar = [n for n in report.notes if n.startswith(f"127.0.4.58:{PORT}")]
    assert any("SOCKS5 CONNECT" in n and "nothing reached the canary" in n for n in liar), liar


def test_max_time_stops_the_whole_run_with_an_error() -> None:
    options = ProbeOptions(timeout=5.0, source=SCANNER, canary_host="127.0.4.21", max_time=1.0)
    with serving([({"tarpit": (tarpit, "127.0.4.59", True)}, PORT)]):
        started = time.monotonic()
        report = asyncio.run(run_probe([Target("127.0.4.59", PORT)], options))
        elapsed = time.monotonic() - started
    assert elapsed < 4, elapsed
    assert [e.source for e in report.errors] == ["probe"]
    assert "--max-time 1s" in report.errors[0].message


# --- TLS that fails: after STARTTLS, and on an implicit-TLS port ---------------------------

async def _smtp_until_starttls(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> bool:
    """An MTA that refuses to relay and offers STARTTLS; True once it said 220 to STARTTLS."""
    writer.write(b"220 mx.hostile.test ESMTP\r\n")
    for _ in range(200):
        await writer.drain()
        line = await reader.readline()
        verb = line[:4].upper()
        if not line or verb == b"QUIT":
            return False
        if verb == b"EHLO":
            writer.write(b"250-mx.hostile.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
        elif verb == b"STAR":
            writer.write(b"220 2.0.0 Ready to start TLS\r\n")
            await writer.drain()
            return True
        elif verb == b"RCPT":
            writer.write(b"554 5.7.1 Relay access denied\r\n")
        else:
            writer.write(b"250 2.0.0 Ok\r\n")
    return False


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (RST), not a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def starttls_then_reset(reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
    if await _smtp_until_starttls(reader, writer):
        await reader.read(1024)  # the ClientHello
        _abort(writer)


async def starttls_then_garbage(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
    if await _smtp_until_starttls(reader, writer):
        await reader.read(1024)
        writer.write(b"500 what is this?\r\n" * 20)
        await writer.drain()
        await asyncio.sleep(5)


async def starttls_then_silence(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
    if await _smtp_until_starttls(reader, writer):
        await asyncio.sleep(30)


async def tls_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Implicit TLS port whose 'ServerHello' is garbage, whatever the client sent."""
    await reader.read(1024)
    writer.write(bytes(range(256)))
    await writer.drain()
    await asyncio.sleep(5)


async def tls_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)
    _abort(writer)


async def tls_half_handshake(reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
    """A TLS handshake record that announces 1000 bytes and stops after a few."""
    await reader.read(1024)
    writer.write(b"\x16\x03\x03\x03\xe8\x02\x00\x03\xe4\x03\x03" + b"\x00" * 10)
    await writer.drain()
    await asyncio.sleep(30)


STARTTLS_PORT = 18025
STARTTLS_FAILURES: dict[str, tuple[Handler, str, bool]] = {
    "starttls-reset": (starttls_then_reset, "127.0.4.74", True),
    "starttls-garbage": (starttls_then_garbage, "127.0.4.75", True),
    "starttls-silence": (starttls_then_silence, "127.0.4.76", True),
}
SMTPS_FAILURES: dict[str, tuple[Handler, str, bool]] = {
    "tls-garbage": (tls_garbage, "127.0.4.77", True),
    "tls-reset": (tls_reset, "127.0.4.78", True),
    "tls-half-handshake": (tls_half_handshake, "127.0.4.79", True),
}


class _LoopErrors(logging.Handler):
    """Collects what asyncio logs at ERROR (unretrieved task exceptions, transport faults)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def tls_failures() -> tuple[Report, float, list[str]]:
    async def main() -> tuple[Report, float]:
        started = time.monotonic()
        (a, _), (b, _) = await asyncio.gather(
            _probe_servers(STARTTLS_FAILURES, STARTTLS_PORT),
            _probe_servers(SMTPS_FAILURES, 465, canary="127.0.4.80"))
        return Report("probe", a.findings + b.findings, a.errors + b.errors, {},
                      a.notes + b.notes), time.monotonic() - started

    handler = _LoopErrors()
    logging.getLogger("asyncio").addHandler(handler)
    try:
        with serving([(STARTTLS_FAILURES, STARTTLS_PORT), (SMTPS_FAILURES, 465)]):
            report, elapsed = asyncio.run(main())
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    return report, elapsed, handler.messages


def test_tls_failures_are_bounded_error_entries_not_crashes(
        tls_failures: tuple[Report, float, list[str]]) -> None:
    report, elapsed, loop_errors = tls_failures
    assert elapsed < 12 * TIMEOUT + 3, elapsed
    assert report.findings == ()
    assert loop_errors == []
    by = {e.source: e.message for e in report.errors}
    for name, (_, addr, _) in {**STARTTLS_FAILURES, **SMTPS_FAILURES}.items():
        port = STARTTLS_PORT if name.startswith("starttls") else 465
        message = by.get(f"{addr}:{port}", "")
        assert message, (name, report.errors)
        assert "internal error" not in message, (name, message)


def test_tls_failure_messages_say_what_happened(
        tls_failures: tuple[Report, float, list[str]]) -> None:
    report, _, _ = tls_failures
    by = _errors_by_address(report)
    assert "TLS handshake failed" in by["127.0.4.74"], by["127.0.4.74"]
    assert "TLS handshake failed" in by["127.0.4.75"], by["127.0.4.75"]
    assert "TLS handshake timed out" in by["127.0.4.76"], by["127.0.4.76"]
    assert "TLS handshake" in by["127.0.4.77"] and "failed" in by["127.0.4.77"], by["127.0.4.77"]
    # Each failure names the step: the TLS handshake, not the TCP connect before it.
    assert "reset: TLS handshake failed" in by["127.0.4.78"], by["127.0.4.78"]
    assert "TLS handshake timed out" in by["127.0.4.79"], by["127.0.4.79"]
    assert "canary" not in by, by["canary"]


def test_a_port_that_accepts_then_resets_is_never_called_closed() -> None:
    """The RST can beat the end of connect(): that is a reset of an open port, not a refusal
    (a refusal makes the port `closed`, with no error entry)."""
    async def main() -> Counter[str]:
        kinds: Counter[str] = Counter()
        for _ in range(200):
            try:
                conn = await open_conn("127.0.4.54", PORT, source=SCANNER, timeout=1.0,
                                       transcript=Transcript())
            except NetError as exc:
                kinds[exc.kind] += 1
            else:
                kinds["connected"] += 1
                await conn.close()
        return kinds

    with serving([({"reset": HOSTILE["reset"]}, PORT)]):
        kinds = asyncio.run(main())
    assert "refused" not in kinds, kinds
    assert sum(kinds.values()) == 200
