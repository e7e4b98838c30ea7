"""`relayguard blocklist TARGET...`: is the host on DNS blocklists - answered, never guessed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from relayguard.cli import app, emit, fail, parse_fail_on, report_options
from relayguard.report import OutputFormat

if TYPE_CHECKING:
    from relayguard.blocklist.dnsclient import Nameserver
    from relayguard.blocklist.zones import Zone

# Well-known public resolvers: Spamhaus, URIBL and others refuse queries that come through them.
_PUBLIC_RESOLVERS = frozenset({
    "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112",
    "208.67.222.222", "208.67.220.220", "2001:4860:4860::8888", "2001:4860:4860::8844",
    "2606:4700:4700::1111", "2606:4700:4700::1001", "2620:fe::fe",
})


@app.command("blocklist")
@click.argument("targets", nargs=-1, required=True, help="IPv4/IPv6 addresses, domains or "
                "hostnames (a hostname is also checked through all its A/AAAA addresses).")
@click.option("--zones", "-z", multiple=True, help="Comma-separated zones to ask instead of the "
              "zone set; `name:domain` marks an uncatalogued domain list.")
@click.option("--zone-set", default="default",
              help="Catalogue set when --zones is not given: default or all.")
@click.option("--resolver", "-r", multiple=True, help="Nameserver IP[:PORT] to ask (repeatable). "
              "Default: the system resolvers in /etc/resolv.conf (reported in the output).")
@click.option("--source", help="Local IP address to send queries from.")
@click.option("--timeout", type=float, default=2.0, help="Seconds to wait for one answer.")
@click.option("--retries", type=int, default=1, help="Retries after a timeout or SERVFAIL.")
@click.option("--concurrency", type=int, default=64, help="Queries in flight at most.")
@click.option("--rate", type=float, default=20.0,
              help="Queries per second per zone (0: no limit).")
@click.option("--deadline", type=float, default=60.0, help="Total seconds for the whole check; "
              "what is unanswered by then is `unknown` (raise it, or --rate, for hundreds of "
              "targets).")
@click.option("--min-lists", type=int, help="Usable lists that must answer for `clean` "
              "(default: half of the applicable lists).")
@click.option("--no-resolve", is_flag=True, help="Check names on domain lists only; do not look "
              "up their A/AAAA addresses.")
@report_options
def blocklist_command(
    targets: tuple[str, ...],
    zones: tuple[str, ...],
    zone_set: str,
    resolver: tuple[str, ...],
    source: str | None,
    timeout: float,
    retries: int,
    concurrency: int,
    rate: float,
    deadline: float,
    min_lists: int | None,
    no_resolve: bool,
    fmt: OutputFormat | None,
    fail_on: str,
    output: Path | None,
) -> None:
    """Check addresses and domains against self-tested DNS blocklists, with decoded codes."""
    from relayguard.blocklist.check import check
    from relayguard.blocklist.dnsclient import DnsClient, Nameserver
    from relayguard.blocklist.names import parse_target
    from relayguard.blocklist.report import build_report
    from relayguard.errors import InputError

    severity = parse_fail_on(fail_on)
    for name, value, low in (("--timeout", timeout, 0.01), ("--deadline", deadline, 0.01),
                             ("--concurrency", concurrency, 1), ("--retries", retries, 0),
                             ("--rate", rate, 0), ("--min-lists", min_lists or 1, 1)):
        if value < low or value > 1_000_000:
            fail(f"{name} must be between {low} and 1000000")
    notes: list[str] = []
    try:
        if source is not None:
            source = Nameserver.parse(source).host
        parsed = [parse_target(t) for t in targets]
        chosen = _zones(zones, zone_set)
        if resolver:
            servers = [Nameserver.parse(r) for r in resolver]
        else:
            servers = _system_resolvers()
            notes.append("no --resolver given: asking the system resolver(s) "
                         f"{', '.join(map(str, servers))} from /etc/resolv.conf")
        if source is not None:
            _check_source(source, servers)
    except InputError as exc:
        fail(str(exc))
    public = [str(s) for s in servers if s.host in _PUBLIC_RESOLVERS]
    if public:
        notes.append(f"{', '.join(public)} is a public resolver: Spamhaus, URIBL and others "
                     "refuse it, so those lists will be reported unusable, not clean")
    client = DnsClient(servers, timeout=timeout, retries=retries, concurrency=concurrency,
                       rate=rate, deadline=deadline, source=source)
    result = check(parsed, chosen, client, min_lists=min_lists, resolve_names=not no_resolve)
    emit(build_report(result, [str(s) for s in servers], tuple(notes)), fmt, severity, output)


def _zones(zones: tuple[str, ...], zone_set: str) -> tuple[Zone, ...]:
    """The zones to ask: --zones (catalogue entry or generic) or a catalogue set."""
    from relayguard.blocklist.zones import parse_zones
    from relayguard.blocklist.zones import zone_set as catalogue_set
    from relayguard.errors import InputError

    if not zones:
        try:
            return catalogue_set(zone_set)
        except ValueError as exc:
            raise InputError("--zone-set", str(exc)) from None
    out = parse_zones(zones)
    if not out:
        raise InputError("--zones", "no zone given")
    return out


def _check_source(source: str, servers: list[Nameserver]) -> None:
    """An InputError unless queries can leave from `source` to at least one nameserver, so
    a mistyped --source is one message rather than every list reported unusable."""
    import ipaddress

    from relayguard.errors import InputError
    from relayguard.hostinfo import bind_error

    version = ipaddress.ip_address(source).version
    if all(ipaddress.ip_address(s.host).version != version for s in servers):
        raise InputError("--source", f"{source} is IPv{version} but no --resolver is: "
                         "give a source address of the resolvers' family")
    why = bind_error(source)
    if why is not None:
        raise InputError("--source", f"{source} is not an address of this machine ({why})")


def _system_resolvers() -> list[Nameserver]:
    """Nameservers from /etc/resolv.conf; an InputError when there are none."""
    import dns.resolver

    from relayguard.blocklist.dnsclient import Nameserver as Server
    from relayguard.errors import InputError

    try:
        conf = dns.resolver.Resolver(configure=True)
    except (dns.resolver.NoResolverConfiguration, OSError):
        raise InputError("/etc/resolv.conf", "no nameserver configured; pass --resolver "
                         "IP[:PORT] (ideally a local recursive resolver)") from None
    servers = [Server.parse(str(ns)) for ns in conf.nameservers]
    if not servers:
        raise InputError("/etc/resolv.conf", "no nameserver configured; pass --resolver")
    return servers
