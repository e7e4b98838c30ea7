"""`relayguard audit`: read server configs the way the servers do and report relay paths."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from relayguard.cli import FailOnOption, FormatOption, OutputOption, app, emit, fail, parse_fail_on


@app.command("audit")
def audit_command(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Config files or directories (default: every supported server's standard "
        "locations).", show_default=False)] = None,
    server_type: Annotated[str | None, typer.Option(
        "--type", "-t", help="Treat the paths as this server's config (apache, …).")] = None,
    outside_client: Annotated[str | None, typer.Option(
        "--outside-client", help="Decide access for this client address (default: an Internet "
        "address none of the ACLs mention).")] = None,
    root: Annotated[Path | None, typer.Option(
        "--root", help="Audit a system image or config backup unpacked here (absolute paths "
        "inside configs are read under it).")] = None,
    define: Annotated[list[str] | None, typer.Option(
        "--define", "-D", help="Apache -D NAME[=VALUE] the daemon is started with.")] = None,
    fmt: FormatOption = None,
    fail_on: FailOnOption = "high",
    output: OutputOption = None,
) -> None:
    """Static analysis of server configs for every way a stranger can relay through them."""
    from relayguard.audit import AuditOptions, audit_paths
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
    options = AuditOptions(outside_client=client, root=root, defines=tuple(define or ()))
    try:
        report = audit_paths(list(paths or []), server_type=server_type, options=options)
    except RelayguardError as exc:
        fail(str(exc))
        return
    emit(report, fmt, severity, output)
