"""`relayguard audit`: read server configs the way the servers do and report relay paths."""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import replace
from pathlib import Path

import click

from relayguard.audit.base import AuditOptions, AuditResult
from relayguard.cli import app, emit, fail, parse_fail_on, report_options
from relayguard.findings import Report
from relayguard.report import OutputFormat


@app.command("audit")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path), help="Config files or "
                "directories (default: every supported server's standard locations).")
@click.option("--type", "-t", "server_type",
              help="Treat the paths as this server's config (apache, …).")
@click.option("--outside-client", help="Decide access for this client address (default: an "
              "Internet address none of the ACLs mention).")
@click.option("--root", type=click.Path(path_type=Path), help="Audit a system image or config "
              "backup unpacked here (absolute paths inside configs are read under it).")
@click.option("--define", "-D", multiple=True,
              help="Apache -D NAME[=VALUE] the daemon is started with.")
@click.option("--fix", is_flag=True, help="Print a unified diff that closes each hole, offered "
              "only when the patched config re-audits clean and the server's own config test "
              "accepts it.")
@click.option("--write", is_flag=True, help="With --fix: apply the verified patch (a backup of "
              "each file is kept next to it).")
@report_options
def audit_command(
    paths: tuple[Path, ...],
    server_type: str | None,
    outside_client: str | None,
    root: Path | None,
    define: tuple[str, ...],
    fix: bool,
    write: bool,
    fmt: OutputFormat | None,
    fail_on: str,
    output: Path | None,
) -> None:
    """Static analysis of server configs for every way a stranger can relay through them."""
    from relayguard.audit import run_audit
    from relayguard.errors import RelayguardError

    severity = parse_fail_on(fail_on)
    client = None
    if outside_client is not None:
        try:
            client = ipaddress.ip_address(outside_client)
        except ValueError:
            fail(f"--outside-client {outside_client!r} is not an IP address")
    if root is not None and not root.is_dir():
        fail(f"--root {root}: not a directory")
    if write and not fix:
        fail("--write only applies with --fix")
    options = AuditOptions(outside_client=client, root=root, defines=tuple(define or ()))
    try:
        report, results = run_audit(list(paths or []), server_type=server_type,
                                    options=options)
    except RelayguardError as exc:
        fail(str(exc))
    if fix:
        report = _fix(report, results, options, write, fmt)
    emit(report, fmt, severity, output)


def _fix(report: Report, results: list[AuditResult], options: AuditOptions, write: bool,
         fmt: OutputFormat | None) -> Report:
    """Plan (and with --write apply) verified fixes; the diff goes to stdout for text."""
    from relayguard.audit import auditor_named, run_audit
    from relayguard.audit.fix import findings_for, plan_fixes, write_fixes

    plans = []
    for result in results:
        mine = findings_for(result, report.findings)
        if mine:
            plans.append(plan_fixes(auditor_named(result.server), result, mine, options))
    diff = "".join(p.diff() for p in plans)
    fixes = [{"server": p.server, "config": p.config, "diff": p.diff(),
              "fixed": [f.fingerprint() for f in p.offered],
              "config_test": p.config_test,
              "not_offered": [{"rule": f.rule, "location": str(f.location), "why": why}
                              for f, why in p.refused]} for p in plans]
    notes = list(report.notes)
    for p in plans:
        for f, why in p.refused:
            notes.append(f"no fix offered for {f.rule} at {f.location}: {why}")
    if write:
        backups = [b for p in plans for b in write_fixes(p)]
        notes += [f"patched; backup kept at {b}" for b in backups]
        if backups:
            after, _ = run_audit([Path(r.config) for r in results], options=options)
            notes.append(f"after the patch: {len(after.findings)} finding(s) remain")
            report = replace(after, notes=tuple(notes), stats={**after.stats, "fixes": fixes})
            return report
    elif diff and (fmt is None or fmt is OutputFormat.TEXT):
        sys.stdout.write(diff)
        sys.stdout.flush()
    elif not diff:
        notes.append("--fix: no verified patch to offer")
    return replace(report, notes=tuple(notes), stats={**report.stats, "fixes": fixes})
