"""The `relayguard` command: one thin sub-command per capability, no logic of its own.

Each sub-command lives in its own module here and registers itself on `app`; it parses
options, calls the library, and hands the `Report` to `emit`, which renders, prints and
computes the exit status. Those modules are imported only when their command runs (or
`--help` lists them): start-up is part of every command's run time, so this module imports
only click (not typer, whose pydantic imports cost more than half of a `logs` run's start-up).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from relayguard import __version__
from relayguard.findings import Report, Severity
from relayguard.report import OutputFormat, render

F = TypeVar("F", bound=Callable[..., Any])


class ExitStatus(IntEnum):
    """Exit codes of every command (DESIGN.md output contract)."""

    OK = 0  # nothing at or above --fail-on
    FINDINGS = 1  # at least one finding at or above --fail-on
    ERROR = 2  # usage or input error, or a check that could not be completed


INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), beside the contract's 0/1/2

# every sub-command, in the order `--help` lists them; `relayguard.cli.<name>` defines it
COMMANDS = ("audit", "blocklist", "history", "lab", "logs", "probe", "rules", "scan", "watch")


class Command(click.Command):
    """A sub-command whose whole first help paragraph is listed by `relayguard --help` (click
    would cut it at 45 characters or the first full stop)."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return " ".join(inspect.cleandoc(self.help or "").partition("\n\n")[0].split())


class LazyGroup(click.Group):
    """The root group: a sub-command's module (and its options) load only when that command
    runs, or when `--help` lists them all."""

    command_class = Command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"relayguard.cli.{cmd_name}")  # registers itself on `app`
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        """Ctrl-C ends any command with 130, as shells expect of SIGINT — not click's
        "Aborted!" and 1, which our contract reads as "findings"."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            sys.stderr.write("relayguard: interrupted\n")
            raise click.exceptions.Exit(INTERRUPTED) from None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:  # help on stdout, exit 2: no command given
            click.echo(ctx.get_help())
            ctx.exit(int(ExitStatus.ERROR))
        return super().parse_args(ctx, args)


def _version_callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        try:  # the optional C core: without it `logs` and `watch` read access logs slower
            importlib.import_module("relayguard._fastscan")
            scanner = "C (relayguard/_fastscan.c)"
        except ImportError:
            scanner = "pure Python (no C compiler at install: slower, same results)"
        sys.stdout.write(f"relayguard {__version__}\naccess-log scanner: {scanner}\n")
        ctx.exit(0)


@click.group(
    "relayguard",
    cls=LazyGroup,
    help="Find out what a stranger can make this server relay: open proxies, open SMTP "
    "relays, and the abuse already in the logs.",
    context_settings={"show_default": True, "max_content_width": 120},
)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_version_callback, help="Print the version and exit.")
def app() -> None:
    """The root group; each sub-command is a module of this package."""


def _to_format(_ctx: click.Context, _param: click.Parameter, value: str | None
               ) -> OutputFormat | None:
    return None if value is None else OutputFormat(value)


format_option = click.option(
    "--format", "-f", "fmt", type=click.Choice([f.value for f in OutputFormat]),
    callback=_to_format, help="Output format (default: text).")


def report_options(func: F) -> F:
    """--format, --fail-on and --output, shared by every command that emits a Report."""
    func = click.option("--output", "-o", type=click.Path(path_type=Path),
                        help="Write the report to this file instead of stdout.")(func)
    func = click.option("--fail-on", default="high", help="Exit 1 when a finding is at least "
                        "this severe (critical, high, medium, low, info).")(func)
    return format_option(func)


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
        raise click.BadParameter(str(exc), param_hint="--fail-on") from None


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
    raise click.exceptions.Exit(int(exit_status(report, fail_on)))


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit 2; the only way commands report fatal input errors."""
    sys.stderr.write(f"relayguard: error: {message}\n")
    raise click.exceptions.Exit(int(ExitStatus.ERROR))


def address_option(option: str, text: str | None, *, reachable: bool = False) -> str | None:
    """An IP-address option's value, normalised (None stays None); anything else is a usage
    error. `reachable`: the address targets connect to, so a wildcard (0.0.0.0, ::) is refused.
    """
    if text is None:
        return None
    import ipaddress

    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        fail(f"{option} {text!r} is not an IP address")
    if reachable and address.is_unspecified:
        fail(f"{option} {address} is not an address targets can reach; for a wildcard "
             "listener use --canary-bind")
    return str(address)


def _width() -> int:
    import shutil

    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 140))


def main() -> None:
    """Console-script entry point; usage errors exit 2 (click's convention matches ours)."""
    app()
