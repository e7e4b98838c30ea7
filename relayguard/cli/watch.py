"""`relayguard watch`: follow logs live, alert on relaying within a second, optionally block."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

from relayguard.cli import app, fail


@app.command("watch")
@click.argument("files", nargs=-1, help="Log files to follow (like tail -F: rotation, "
                "truncation, files created later). Default: [watch] files from --config.")
@click.option("--config", "-c", type=click.Path(path_type=Path), help="watch.toml: alerts, "
              "response, blocklist re-checks (see contrib/watch.toml).")
@click.option("--state", help="SQLite state file (positions, detector state, alert outbox). "
              "Default: [watch] state, else /var/lib/relayguard/watch.sqlite.")
@click.option("--metrics", help="Serve Prometheus metrics on ADDR:PORT.")
@click.option("--from-beginning", is_flag=True, help="Read files seen for the first time from "
              "their start (default: from their end, like tail -F).")
@click.option("--tz", help="Time zone the syslog (mail) logs are written in, e.g. Europe/Berlin "
              "(default: [watch] tz, else this machine's); their stamps carry none.")
@click.option("--once", is_flag=True, help="Read what is there, deliver alerts, and exit.")
@click.option("--status", "show_status", is_flag=True,
              help="Print what the state file holds (JSON) and exit.")
@click.option("--verbose", "-v", is_flag=True, help="Log more.")
def watch_command(
    files: tuple[str, ...],
    config: Path | None,
    state: str | None,
    metrics: str | None,
    from_beginning: bool,
    tz: str | None,
    once: bool,
    show_status: bool,
    verbose: bool,
) -> None:
    """Follow logs, raise incidents live, alert through every configured channel, respond."""
    from relayguard.cli.logs import parse_zone
    from relayguard.errors import InputError
    from relayguard.watch.config import DEFAULT_STATE, WatchConfig, load_config

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="relayguard watch: %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per webhook POST
    try:
        cfg = load_config(str(config)) if config is not None else WatchConfig()
    except InputError as exc:
        fail(str(exc))
    if show_status:
        from relayguard.watch.daemon import status

        try:
            doc = status(state or cfg.state or DEFAULT_STATE)
        except InputError as exc:
            fail(str(exc))
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    overrides: dict[str, Any] = {}
    if state:
        overrides["state"] = state
    if metrics:
        overrides["metrics"] = metrics
    if from_beginning:
        overrides["start"] = "beginning"
    if tz is not None:
        parse_zone(tz)  # the same check as `logs --tz`: a clear usage error
        overrides["tz"] = tz
    from relayguard.watch.daemon import Watcher

    try:
        watcher = Watcher(cfg, config_path=str(config) if config else None,
                          cli_files=tuple(files or ()), cli_overrides=overrides)
    except InputError as exc:
        fail(str(exc))

    def _stop(signum: int, _frame: object) -> None:
        watcher.stop()

    def _reload(signum: int, _frame: object) -> None:
        watcher.request_reload()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _reload)
    try:
        watcher.run(once=once)
    except InputError as exc:
        fail(str(exc))
    if once and watcher.undelivered:  # a cron job must see that its alerts did not go out
        fail(f"{watcher.undelivered} alert(s) could not be delivered; they stay queued in "
             "the state file")
