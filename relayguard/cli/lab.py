"""`relayguard lab`: see it work — the incident replayed, detected, fixed and proven closed."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer

from relayguard.cli import app, fail


@app.command("lab")
def lab_command(
    address: Annotated[str, typer.Option(
        "--address", help="Loopback address the lab's Apache and Postfix listen on.")
    ] = "127.0.10.1",
    keep: Annotated[bool, typer.Option(
        "--keep", help="Keep the lab's work directory (configs, logs, backups).")] = False,
) -> None:
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
        return
    except KeyboardInterrupt:
        sys.stderr.write("relayguard lab: interrupted; everything it started is stopped\n")
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    raise typer.Exit(0 if result.closed else 1)
