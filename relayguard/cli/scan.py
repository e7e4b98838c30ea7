"""`relayguard scan [HOST]` and `--inventory sites.toml`: every kind of evidence, one verdict."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from relayguard.cli import (
    Command,
    ExitStatus,
    address_option,
    app,
    exit_status,
    fail,
    parse_fail_on,
    report_options,
)
from relayguard.report import OutputFormat

if TYPE_CHECKING:
    from relayguard.findings import Report
    from relayguard.scan.site import ScanOptions, Site

_EXT = {OutputFormat.TEXT: "txt", OutputFormat.JSON: "json", OutputFormat.SARIF: "sarif",
        OutputFormat.MARKDOWN: "md", OutputFormat.HTML: "html"}


def _ports(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    from relayguard.errors import RelayguardError
    from relayguard.probe.targets import parse_ports

    try:
        return tuple(parse_ports(text))
    except RelayguardError as exc:
        fail(f"--ports: {exc}")


class NagiosAwareCommand(Command):
    """Under `--nagios` every way out is a plugin status: click's own parse errors (exit 2,
    which Nagios reads as CRITICAL) and uncaught exceptions (exit 1, WARNING) become UNKNOWN
    (3) with one status line on stdout, as the Monitoring Plugins guidelines require."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        nagios = "--nagios" in args
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:  # click's UsageError / BadParameter
            if not nagios:
                raise
            _usage(True, _click_message(exc))
            raise AssertionError from None  # _usage always raises

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException as exc:
            if not ctx.params.get("nagios"):
                raise
            _usage(True, _click_message(exc))
        except (Exception, KeyboardInterrupt) as exc:
            if not ctx.params.get("nagios"):
                raise
            word = "interrupted" if isinstance(exc, KeyboardInterrupt) else "internal error"
            _usage(True, f"{word}: {type(exc).__name__}: {exc}".rstrip(": "))
        raise AssertionError  # _usage always raises


def _click_message(exc: Exception) -> str:
    fmt = getattr(exc, "format_message", None)
    return str(fmt() if callable(fmt) else exc) or type(exc).__name__


@app.command("scan", cls=NagiosAwareCommand)
@click.argument("host", required=False,
                help="Host name or address to scan (default: this machine).")
@click.option("--inventory", "-i", type=click.Path(path_type=Path),
              help="Scan every site of this TOML inventory (a fleet).")
@click.option("--ports", "-p", help="Ports to probe, e.g. 25,8080 (default: what listens, for "
              "this machine; common proxy and mail ports otherwise).")
@click.option("--config", "-c", type=click.Path(path_type=Path), multiple=True, help="Config "
              "file/dir to audit (repeatable; default: this machine's standard locations).")
@click.option("--root", type=click.Path(path_type=Path),
              help="Audit a config backup unpacked here.")
@click.option("--log", multiple=True, help="Log file to analyse (repeatable; default: those the "
              "configs name and the standard places).")
@click.option("--public-address", multiple=True,
              help="The host's public address, for blocklists (repeatable).")
@click.option("--mail-domain", multiple=True,
              help="A mail domain of the host, for blocklists (repeatable).")
@click.option("--source-address", "-S", help="Send probes from this local address (one the "
              "servers do not trust gives a stranger's view).")
@click.option("--canary-host", help="Address targets use to reach the scanner's canary.")
@click.option("--canary-bind", help="Local address the canary listens on, when targets reach it "
              "through NAT at --canary-host (default: --canary-host itself).")
@click.option("--resolver", "-r", multiple=True,
              help="Blocklist nameserver IP[:PORT] (repeatable).")
@click.option("--zones", "-z", multiple=True,
              help="Blocklist zones (comma-separated; NAME[:ip|domain]).")
@click.option("--no-probe", is_flag=True, help="Skip network probes.")
@click.option("--no-audit", is_flag=True, help="Skip the config audit.")
@click.option("--no-logs", is_flag=True, help="Skip log analysis.")
@click.option("--no-blocklist", is_flag=True, help="Skip blocklists.")
@click.option("--timeout", type=float, default=3.0, help="Seconds for one probe step.")
@click.option("--max-time", type=float, default=300.0, help="Seconds for all probes.")
@click.option("--jobs", "-j", type=int, default=4, help="Sites worked on at once.")
@click.option("--nagios", is_flag=True, help="Print one Nagios/Icinga status line with perfdata; "
              "exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.")
@click.option("--db", help="History store: SQLAlchemy URL (default: $RELAYGUARD_DB or SQLite in "
              "~/.local/share/relayguard).")
@click.option("--no-history", is_flag=True, help="Do not store this scan.")
@click.option("--output-dir", type=click.Path(path_type=Path),
              help="Fleet: also write one report per site into this directory.")
@report_options
def scan_command(
    host: str | None,
    inventory: Path | None,
    ports: str | None,
    config: tuple[Path, ...],
    root: Path | None,
    log: tuple[str, ...],
    public_address: tuple[str, ...],
    mail_domain: tuple[str, ...],
    source_address: str | None,
    canary_host: str | None,
    canary_bind: str | None,
    resolver: tuple[str, ...],
    zones: tuple[str, ...],
    no_probe: bool,
    no_audit: bool,
    no_logs: bool,
    no_blocklist: bool,
    timeout: float,
    max_time: float,
    jobs: int,
    nagios: bool,
    db: str | None,
    no_history: bool,
    output_dir: Path | None,
    fmt: OutputFormat | None,
    fail_on: str,
    output: Path | None,
) -> None:
    """Audit, probe, read the logs and check blocklists for one host or a fleet; one
    correlated verdict per site, the fix first."""
    from relayguard.errors import RelayguardError
    from relayguard.scan.site import ScanOptions, Site

    try:
        severity = parse_fail_on(fail_on)
    except click.BadParameter as exc:
        _usage(nagios, str(exc))
        return
    if nagios and fmt is not None:
        _usage(nagios, "--nagios prints its own status line; drop --format")
    if inventory is not None and host is not None:
        _usage(nagios, "give a HOST or --inventory, not both")
    for name, value, low, high in (("--timeout", timeout, 0.05, 120),
                                   ("--max-time", max_time, 1, 86400), ("--jobs", jobs, 1, 64)):
        if not low <= value <= high:
            _usage(nagios, f"{name} must be between {low:g} and {high:g}")
    if root is not None and not root.is_dir():
        _usage(nagios, f"--root {root}: not a directory")
    if no_probe and no_audit and no_logs and no_blocklist:
        _usage(nagios, "nothing to check: --no-probe, --no-audit, --no-logs and --no-blocklist "
               "together skip every check")
    options = ScanOptions(
        source=address_option("--source-address", source_address),
        canary_host=address_option("--canary-host", canary_host, reachable=True),
        canary_bind=address_option("--canary-bind", canary_bind),
        probe=not no_probe, audit=not no_audit, logs=not no_logs, blocklist=not no_blocklist,
        resolvers=tuple(resolver or ()),
        zones=tuple(z.strip() for chunk in zones or () for z in chunk.split(",") if z.strip()),
        probe_timeout=timeout, probe_max_time=max_time, jobs=jobs)
    try:
        if inventory is not None:
            from relayguard.scan.inventory import load_inventory

            sites = load_inventory(inventory)
        else:
            sites = [Site(name=host or "this machine", host=host, ports=_ports(ports),
                          configs=tuple(config or ()), config_root=root,
                          logs=tuple(log or ()),
                          public_addresses=tuple(public_address or ()),
                          mail_domains=tuple(mail_domain or ()))]
        if options.zones:
            from relayguard.scan.steps import zones_for

            zones_for(options.zones)
        if options.resolvers:  # checked now, not only when a site has something to look up
            from relayguard.blocklist.dnsclient import Nameserver

            for r in options.resolvers:
                Nameserver.parse(r)
        history = None
        if not no_history:
            from relayguard.history import History

            history = History(db)
    except RelayguardError as exc:
        _usage(nagios, str(exc))
        return
    reports = _run(sites, options)
    if history is not None:
        import sqlalchemy

        started = time.time()
        try:
            for r in reports:
                history.record(r, started)
        except sqlalchemy.exc.SQLAlchemyError as exc:  # the scan itself still counts
            sys.stderr.write(f"relayguard: warning: scan not stored in the history: "
                             f"{str(exc).splitlines()[0]}\n")
    if nagios:
        from relayguard.report.nagios import render_nagios

        line, state = render_nagios(reports)
        sys.stdout.write(line)
        raise click.exceptions.Exit(int(state))
    fmt = fmt or OutputFormat.TEXT
    if inventory is not None:
        _emit_fleet(reports, fmt, severity, output, output_dir)
    else:
        _write(_render_one(reports[0], fmt, output), output)
        raise click.exceptions.Exit(int(exit_status(reports[0], severity)))


def _usage(nagios: bool, message: str) -> None:
    """A usage/input error: exit 2, or UNKNOWN (3) with one status line under --nagios."""
    if nagios:
        sys.stdout.write(f"RELAYGUARD UNKNOWN - {message.splitlines()[0]}\n")
        raise click.exceptions.Exit(3)
    fail(message)


def _run(sites: list[Site], options: ScanOptions) -> list[Report]:
    from relayguard.scan import scan_sites

    if sys.stderr.isatty():
        from rich.console import Console

        console = Console(stderr=True)
        with console.status("scanning") as status:
            return scan_sites(sites, options, lambda msg: status.update(msg))
    return scan_sites(sites, options)


def _render_one(report: Report, fmt: OutputFormat, output: Path | None) -> str:
    from relayguard.cli import _width
    from relayguard.scan.render import render_scan

    color = output is None and sys.stdout.isatty()
    return render_scan(report, fmt, color=color, width=_width())


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")


def _emit_fleet(reports: list[Report], fmt: OutputFormat, severity: object,
                output: Path | None, output_dir: Path | None) -> None:
    """The fleet summary (and each site's report), then the worst site's exit status."""
    import json

    from relayguard.report.jsondoc import report_dict
    from relayguard.scan.render import fleet_header
    from relayguard.scan.runner import fleet_summary

    summary = fleet_summary(reports)
    if output_dir is not None:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            taken: set[str] = set()
            for r in reports:
                base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(r.stats.get("site"))) or "site"
                name, n = base, 1
                while name.lower() in taken:  # `client a` and `client_a`: one file each
                    n += 1
                    name = f"{base}-{n}"
                taken.add(name.lower())
                (output_dir / f"{name}.{_EXT[fmt]}").write_text(
                    _render_one(r, fmt, output_dir), encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write into {output_dir}: {exc.strerror}")
    if fmt is OutputFormat.JSON:
        doc = report_dict(summary)
        doc["sites"] = [report_dict(r) for r in reports]
        text = json.dumps(doc, indent=2, ensure_ascii=True, default=str) + "\n"
    elif fmt in (OutputFormat.TEXT, OutputFormat.MARKDOWN):
        md = fmt is OutputFormat.MARKDOWN
        text = fleet_header(summary, md) + "\n".join(
            _render_one(r, fmt, output) for r in reports)
    elif fmt is OutputFormat.HTML:
        from relayguard.scan.html import render_fleet_html

        text = render_fleet_html(summary, reports)
    else:  # SARIF: the combined findings as one document
        from relayguard.report import render

        text = render(summary, fmt)
    _write(text, output)
    statuses = [exit_status(r, severity) for r in reports]  # type: ignore[arg-type]
    worst = ExitStatus.ERROR if ExitStatus.ERROR in statuses else max(statuses)
    raise click.exceptions.Exit(int(worst))
