"""`relayguard logs`: forensics on web, proxy and mail logs — when, who, where to, how much."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Annotated

import typer

from relayguard.cli import FailOnOption, FormatOption, OutputOption, app, emit, fail, parse_fail_on


def _parse_when(text: str | None, name: str) -> float | None:
    """ISO date or date-time (`2026-03-01`, `2026-03-01T10:00:00+01:00`); naive means UTC."""
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"not an ISO date/time: {text!r}", param_hint=name) from None
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
        raise typer.BadParameter(str(exc), param_hint="--tz") from None


@app.command("logs")
def logs_command(
    files: Annotated[list[str], typer.Argument(
        help="Log files (plain, .gz, .bz2, .xz; rotated sets are read oldest first); "
             "`-` reads stdin.")],
    fmt: FormatOption = None,
    fail_on: FailOnOption = "high",
    output: OutputOption = None,
    server_name: Annotated[list[str] | None, typer.Option(
        "--server-name", help="The site's own host names (absolute-URI requests for them are "
                              "not proxying). Repeatable.")] = None,
    mail_domain: Annotated[list[str] | None, typer.Option(
        "--mail-domain", help="Domains the MTA receives mail for. Repeatable.")] = None,
    trusted_client: Annotated[list[str] | None, typer.Option(
        "--trusted-client", help="Client IPs allowed to relay (besides 127.0.0.1 and ::1). "
                                 "Repeatable.")] = None,
    log_format: Annotated[str | None, typer.Option(
        "--log-format", help="Force a format: combined, common, vhost_combined, nginx, squid, "
                             "syslog, or an Apache LogFormat / nginx log_format string.")] = None,
    apache_config: Annotated[Path | None, typer.Option(
        "--apache-config", help="The Apache config (e.g. /etc/apache2/apache2.conf; includes "
                                "followed): its LogFormat/CustomLog, ServerName/ServerAlias "
                                "and whether it can proxy at all.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only events at or after this ISO date/time (UTC if no zone).")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Only events at or before this ISO date/time.")] = None,
    year: Annotated[int | None, typer.Option(
        "--year", help="Year of syslog lines without one (default: from the file date).")] = None,
    tz: Annotated[str | None, typer.Option(
        "--tz", help="Time zone the syslog (mail) logs were written in, e.g. Europe/Berlin "
                     "(default: this machine's); their stamps carry none.")] = None,
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", help="Worker processes for large plain access logs (0 = all cores).",
        min=0, max=64)] = 0,
) -> None:
    """Find relaying that already happened in access and mail logs, with its timeline."""
    from relayguard.errors import InputError
    from relayguard.logs.analyze import LogOptions, analyse
    from relayguard.logs.apacheconf import ApacheLogSettings, read_apache_config

    severity = parse_fail_on(fail_on)
    settings = ApacheLogSettings()
    if apache_config is not None:
        try:
            settings = read_apache_config(apache_config)
        except InputError as exc:
            fail(str(exc))
    options = LogOptions(
        server_names=frozenset({*(server_name or ()), *settings.server_names}),
        mail_domains=frozenset(mail_domain or ()),
        trusted_clients=frozenset({"127.0.0.1", "::1", *(trusted_client or ())}),
        log_format=log_format,
        formats_by_path=settings.formats_by_path,
        format_nicknames=settings.nicknames,
        proxy_config=settings.proxy,
        config_notes=tuple(f"--apache-config: {e}" for e in settings.errors),
        since=_parse_when(since, "--since"),
        until=_parse_when(until, "--until"),
        year=year,
        tz=parse_zone(tz),
        jobs=jobs,
    )
    emit(analyse(list(files), options), fmt, severity, output)
