"""`relayguard logs`: forensics on web, proxy and mail logs — when, who, where to, how much."""

from __future__ import annotations

from datetime import UTC, datetime
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
        "--apache-config", help="Read LogFormat/CustomLog and ServerName/ServerAlias from "
                                "this Apache config file.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only events at or after this ISO date/time (UTC if no zone).")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Only events at or before this ISO date/time.")] = None,
    year: Annotated[int | None, typer.Option(
        "--year", help="Year of syslog lines without one (default: from the file date).")] = None,
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", help="Worker processes for large plain access logs (0 = all cores).",
        min=0, max=64)] = 0,
) -> None:
    """Find relaying that already happened in access and mail logs, with its timeline."""
    from relayguard.logs.analyze import LogOptions, analyse
    from relayguard.logs.formats import formats_from_apache_config, names_from_apache_config

    severity = parse_fail_on(fail_on)
    formats_by_path: dict[str, str] = {}
    names = set(server_name or ())
    if apache_config is not None:
        try:
            conf_text = apache_config.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            fail(f"cannot read {apache_config}: {exc.strerror}")
        formats_by_path = formats_from_apache_config(conf_text)
        names |= names_from_apache_config(conf_text)
    options = LogOptions(
        server_names=frozenset(names),
        mail_domains=frozenset(mail_domain or ()),
        trusted_clients=frozenset({"127.0.0.1", "::1", *(trusted_client or ())}),
        log_format=log_format,
        formats_by_path=formats_by_path,
        since=_parse_when(since, "--since"),
        until=_parse_when(until, "--until"),
        year=year,
        jobs=jobs,
    )
    emit(analyse(list(files), options), fmt, severity, output)
