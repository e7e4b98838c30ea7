"""The `relayguard` command: one thin sub-command per capability, no logic of its own.

Each sub-command lives in its own module here and registers itself on `app`; it parses
options, calls the library, and hands the `Report` to `emit`, which renders, prints and
computes the exit status. Those modules are imported only when their command runs (or
`--help` lists them): start-up is part of every command's run time, and building all nine
commands' options cost more than reading a 100 MB log.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, MutableMapping
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from relayguard import __version__
from relayguard.findings import Report, Severity
from relayguard.report import OutputFormat, render


class ExitStatus(IntEnum):
    """Exit codes of every command (DESIGN.md output contract)."""

    OK = 0  # nothing at or above --fail-on
    FINDINGS = 1  # at least one finding at or above --fail-on
    ERROR = 2  # usage or input error, or a check that could not be completed


# every sub-command, in the order `--help` lists them; `relayguard.cli.<name>` defines it
COMMANDS = ("audit", "blocklist", "history", "lab", "logs", "probe", "rules", "scan", "watch")


class _LazyCommands(MutableMapping[str, Any]):
    """The root group's commands by name, each imported and built on first use."""

    def __init__(self, built: MutableMapping[str, Any]) -> None:
        self.built = dict(built)

    def __getitem__(self, name: str) -> Any:
        cmd = self.built.get(name)
        if cmd is None:
            if name not in COMMANDS:
                raise KeyError(name)
            cmd = self.built[name] = _build_command(name)
        return cmd

    def __setitem__(self, name: str, cmd: Any) -> None:
        self.built[name] = cmd

    def __delitem__(self, name: str) -> None:
        del self.built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*COMMANDS, *self.built]))

    def __len__(self) -> int:
        return len({*COMMANDS, *self.built})


class LazyGroup(TyperGroup):
    """The root group: a sub-command's module (and its options' parsers) load only when that
    command runs, or when `--help` lists them all."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = _LazyCommands(self.commands)


def _build_command(name: str) -> Any:
    """Import `relayguard.cli.<name>` (it registers itself on `app`) and build its command."""
    from typer.main import get_command_from_info

    importlib.import_module(f"relayguard.cli.{name}")
    info = next(i for i in app.registered_commands if i.name == name)
    return get_command_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short,
                                 rich_markup_mode=app.rich_markup_mode)


app = typer.Typer(
    name="relayguard",
    cls=LazyGroup,
    help="Find out what a stranger can make this server relay: open proxies, open SMTP "
    "relays, and the abuse already in the logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

FormatOption = Annotated[
    OutputFormat | None,
    typer.Option("--format", "-f", help="Output format (default: text)."),
]
FailOnOption = Annotated[
    str,
    typer.Option("--fail-on", help="Exit 1 when a finding is at least this severe "
                 "(critical, high, medium, low, info)."),
]
OutputOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write the report to this file instead of stdout."),
]


def exit_status(report: Report, fail_on: Severity) -> ExitStatus:
    """2 when anything could not be checked (never call that clean), else 1 on findings."""
    if report.errors:
        return ExitStatus.ERROR
    if any(f.severity >= fail_on for f in report.findings):
        return ExitStatus.FINDINGS
    return ExitStatus.OK


def parse_fail_on(text: str) -> Severity:
    """Validate --fail-on, turning a bad value into a usage error (exit 2)."""
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fail-on") from None


def emit(report: Report, fmt: OutputFormat | None, fail_on: Severity,
         output: Path | None = None) -> None:
    """Render and print (or write) the report, then exit with the contract's status."""
    fmt = fmt or OutputFormat.TEXT
    to_tty = output is None and sys.stdout.isatty()
    text = render(report, fmt, color=to_tty, width=_width())
    if output is not None:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    raise typer.Exit(int(exit_status(report, fail_on)))


def fail(message: str) -> None:
    """Print a one-line error and exit 2; the only way commands report fatal input errors."""
    sys.stderr.write(f"relayguard: error: {message}\n")
    raise typer.Exit(int(ExitStatus.ERROR))


def _width() -> int:
    import shutil

    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 140))


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"relayguard {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    """Find out what a stranger can make this server relay."""


def main() -> None:
    """Console-script entry point; usage errors exit 2 (click's convention matches ours)."""
    app()
