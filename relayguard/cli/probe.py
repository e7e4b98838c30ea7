"""`relayguard probe TARGET...`: prove from the network what a stranger can relay through a host."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from relayguard.cli import address_option, app, emit, fail, parse_fail_on, report_options
from relayguard.digits import is_digits
from relayguard.report import OutputFormat

if TYPE_CHECKING:
    from relayguard.findings import Report
    from relayguard.probe.context import ProbeOptions
    from relayguard.probe.targets import Target


def _hostport(option: str, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not is_digits(port) or not 1 <= int(port) <= 65535 or not host:
        fail(f"{option} {text!r}: expected HOST:PORT")
    return host, int(port)


@app.command("probe")
@click.argument("targets", nargs=-1, help="host, host:port, IPv4/IPv6 literal, [v6]:port or CIDR "
                "(wider than /20 needs --allow-large). Without a port, every port of --ports is "
                "tried.")
@click.option("--targets-file", "-T", type=click.Path(path_type=Path),
              help="Read targets from this file, one per line.")
@click.option("--ports", "-p", help="Ports for targets without one, e.g. 25,80,3128,8000-8080 "
              "(default: common proxy and mail ports).")
@click.option("--source-address", "-S", help="Send probes from this local address.")
@click.option("--canary-host", help="Address targets must use to reach the scanner's canary "
              "(default: the local address of the route to the first target).")
@click.option("--canary-bind", help="Local address the canary listens on, when targets reach it "
              "through NAT at --canary-host (default: --canary-host itself).")
@click.option("--smtp-check-target", help="HOST:PORT of a real MTA whose 220 banner proves SMTP "
              "reachability through a proxy when the canary cannot listen on 25/465/587.")
@click.option("--confirm-delivery", is_flag=True, help="Opt-in: through an MTA that accepts a "
              "foreign RCPT, SEND ONE tiny test message to <nonce>@[canary-host] and confirm the "
              "relay when the canary receives it. Off by default: probes otherwise stop at RCPT "
              "and never send DATA.")
@click.option("--timeout", type=float, default=5.0,
              help="Seconds for one step (connect, one reply).")
@click.option("--banner-wait", type=float, default=0.5, help="Seconds of silence after "
              "connecting before a port is treated as client-first (HTTP/SOCKS) rather than SMTP.")
@click.option("--concurrency", type=int, default=64, help="Connections open at once, in total.")
@click.option("--per-host", type=int, default=4, help="Connections open at once to one host.")
@click.option("--rate", type=float, default=0.0,
              help="New connections per second (0: no limit).")
@click.option("--max-time", type=float, default=1800.0, help="Seconds for the whole run.")
@click.option("--allow-large", is_flag=True,
              help="Allow networks wider than /20 (IPv4) or /116 (IPv6).")
@report_options
def probe_command(
    targets: tuple[str, ...],
    targets_file: Path | None,
    ports: str | None,
    source_address: str | None,
    canary_host: str | None,
    canary_bind: str | None,
    smtp_check_target: str | None,
    confirm_delivery: bool,
    timeout: float,
    banner_wait: float,
    concurrency: int,
    per_host: int,
    rate: float,
    max_time: float,
    allow_large: bool,
    fmt: OutputFormat | None,
    fail_on: str,
    output: Path | None,
) -> None:
    """Ask targets to relay to the scanner's own canary: open HTTP/CONNECT/SOCKS proxies,
    SMTP through proxies, open SMTP relays. Verdicts are confirmed only by the canary."""
    import asyncio

    from relayguard.errors import RelayguardError
    from relayguard.probe.context import DEFAULT_PORTS, ProbeOptions
    from relayguard.probe.runner import run_probe
    from relayguard.probe.targets import parse_ports, parse_targets, read_targets_file

    severity = parse_fail_on(fail_on)
    for name, value, low, high in (("--timeout", timeout, 0.05, 600),
                                   ("--banner-wait", banner_wait, 0.0, 60),
                                   ("--concurrency", concurrency, 1, 10000),
                                   ("--per-host", per_host, 1, 1000),
                                   ("--rate", rate, 0, 1_000_000),
                                   ("--max-time", max_time, 1, 86400)):
        if not low <= value <= high:
            fail(f"{name} must be between {low:g} and {high:g}")
    source = address_option("--source-address", source_address)
    canary = address_option("--canary-host", canary_host, reachable=True)
    bind = address_option("--canary-bind", canary_bind)
    check_target = _hostport("--smtp-check-target", smtp_check_target) \
        if smtp_check_target else None
    try:
        texts = list(targets or [])
        if targets_file is not None:
            texts += read_targets_file(targets_file)
        if not texts:
            fail("no target given (name hosts on the command line or with --targets-file)")
        parsed = parse_targets(texts, allow_large)
        port_list = parse_ports(ports) if ports else DEFAULT_PORTS
    except RelayguardError as exc:
        fail(str(exc))
    options = ProbeOptions(
        ports=port_list, timeout=timeout, banner_wait=banner_wait, concurrency=concurrency,
        per_host=per_host, rate=rate, source=source, canary_host=canary, canary_bind=bind,
        smtp_check_target=check_target, confirm_delivery=confirm_delivery,
        max_time=max_time, allow_large=allow_large,
        target_time=max(30.0, 24 * timeout),
    )
    if sys.stderr.isatty():
        report = _run_with_progress(parsed, options)
    else:
        report = asyncio.run(run_probe(parsed, options))
    emit(report, fmt, severity, output)


def _run_with_progress(parsed: list[Target], options: ProbeOptions) -> Report:
    """Run with a rich progress bar on stderr (only when stderr is a terminal)."""
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from relayguard.probe.runner import run_probe

    with Progress("probing", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("probe", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return asyncio.run(run_probe(parsed, options, update))
