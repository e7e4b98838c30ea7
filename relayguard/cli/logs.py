"""`relayguard logs`: forensics on web, proxy and mail logs — when, who, where to, how much."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from pathlib import Path

import click

from relayguard.cli import address_option, app, emit, fail, parse_fail_on, report_options
from relayguard.report import OutputFormat


def _parse_when(text: str | None, name: str) -> float | None:
    """ISO date or date-time (`2026-03-01`, `2026-03-01T10:00:00+01:00`); naive means UTC."""
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an ISO date/time: {text!r}", param_hint=name) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_zone(name: str | None) -> tzinfo | None:
    """An IANA zone name (`Europe/Berlin`, `UTC`) for --tz (`logs`, `watch`)."""
    if name is None:
        return None
    from relayguard.logs.formats import zone

    try:
        return zone(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tz") from None


@app.command("logs")
@click.argument("files", nargs=-1, required=True, help="Log files (plain, .gz, .bz2, .xz; rotated "
                "sets are read oldest first); `-` reads stdin.")
@report_options
@click.option("--server-name", multiple=True, help="The site's own host names (absolute-URI "
              "requests for them are not proxying). Repeatable.")
@click.option("--mail-domain", multiple=True,
              help="Domains the MTA receives mail for. Repeatable.")
@click.option("--trusted-client", multiple=True, help="Client IPs allowed to relay (besides "
              "127.0.0.1 and ::1). Repeatable.")
@click.option("--log-format", help="Force a format: combined, common, vhost_combined, nginx, "
              "squid, syslog, or an Apache LogFormat / nginx log_format string.")
@click.option("--apache-config", type=click.Path(path_type=Path), help="The Apache config (e.g. "
              "/etc/apache2/apache2.conf; includes followed): its LogFormat/CustomLog, "
              "ServerName/ServerAlias and whether it can proxy at all.")
@click.option("--since", help="Only events at or after this ISO date/time (UTC if no zone).")
@click.option("--until", help="Only events at or before this ISO date/time.")
@click.option("--year", type=int,
              help="Year the syslog lines (which carry none) start in; Dec -> Jan steps to "
                   "the next (default: from the file date).")
@click.option("--tz", help="Time zone the syslog (mail) logs were written in, e.g. Europe/Berlin "
              "(default: this machine's); their stamps carry none.")
@click.option("--jobs", "-j", type=click.IntRange(0, 64), default=0,
              help="Cores for large plain access logs: this process and N - 1 workers "
                   "(0 = all cores).")
def logs_command(
    files: tuple[str, ...],
    fmt: OutputFormat | None,
    fail_on: str,
    output: Path | None,
    server_name: tuple[str, ...],
    mail_domain: tuple[str, ...],
    trusted_client: tuple[str, ...],
    log_format: str | None,
    apache_config: Path | None,
    since: str | None,
    until: str | None,
    year: int | None,
    tz: str | None,
    jobs: int,
) -> None:
    """Find relaying that already happened in access and mail logs, with its timeline."""
    from relayguard.errors import InputError
    from relayguard.logs.analyze import LogOptions, analyse
    from relayguard.logs.apacheconf import ApacheLogSettings, read_apache_config

    severity = parse_fail_on(fail_on)
    since_t, until_t = _parse_when(since, "--since"), _parse_when(until, "--until")
    if since_t is not None and until_t is not None and until_t < since_t:
        # it would select nothing and read as a clean result
        raise click.BadParameter(f"{until!r} is before --since {since!r}", param_hint="--until")
    # IPs as the logs write them (normalised); a network or a name would trust nobody
    trusted = [address_option("--trusted-client", c) or c for c in trusted_client or ()]
    settings = ApacheLogSettings()
    if apache_config is not None:
        try:
            settings = read_apache_config(apache_config)
        except InputError as exc:
            fail(str(exc))
    options = LogOptions(
        server_names=frozenset({*(server_name or ()), *settings.server_names}),
        mail_domains=frozenset(mail_domain or ()),
        trusted_clients=frozenset({"127.0.0.1", "::1", *trusted}),
        log_format=log_format,
        formats_by_path=settings.formats_by_path,
        format_nicknames=settings.nicknames,
        proxy_config=settings.proxy,
        config_notes=tuple(f"--apache-config: {e}" for e in settings.errors),
        since=since_t,
        until=until_t,
        year=year,
        tz=parse_zone(tz),
        jobs=jobs,
    )
    emit(analyse(list(files), options), fmt, severity, output)
