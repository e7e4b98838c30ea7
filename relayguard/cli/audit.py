"""`relayguard audit`: read server configs the way the servers do and report relay paths."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from relayguard.cli import FailOnOption, FormatOption, OutputOption, app, emit, parse_fail_on


@app.command("audit")
def audit_command(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Config files or directories (default: the standard locations).")] = None,
    fmt: FormatOption = None,
    fail_on: FailOnOption = "high",
    output: OutputOption = None,
) -> None:
    """Static analysis of server configs for every way a stranger can relay through them."""
    from relayguard.findings import Report

    severity = parse_fail_on(fail_on)
    emit(Report(command="audit"), fmt, severity, output)
