"""`relayguard lab`: see it work — the incident replayed, detected, fixed and proven closed."""

from __future__ import annotations

import signal
import sys

import click

from relayguard.cli import INTERRUPTED, app, fail


@app.command("lab")
@click.option("--address", default="127.0.10.1",
              help="Loopback address the lab's Apache and Postfix listen on.")
@click.option("--keep", is_flag=True,
              help="Keep the lab's work directory (configs, logs, backups).")
def lab_command(address: str, keep: bool) -> None:
    """Start a real Apache with an open forward proxy and a real Postfix on loopback, let
    spammers relay through it, scan, fix, and prove the hole closed. Needs root and the
    Debian packages apache2, postfix and iproute2. Exit 0 when the hole was closed."""
    from relayguard.lab.run import run_lab
    from relayguard.lab.servers import LabError

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # the lab's finally blocks stop everything

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        result = run_lab(say, address=address, keep=keep)
    except LabError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.stderr.write("relayguard lab: interrupted; everything it started is stopped\n")
        raise click.exceptions.Exit(INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    raise click.exceptions.Exit(0 if result.closed else 1)
