"""`relayguard history [HOST]`: what is new, fixed and unchanged since the last scan."""

from __future__ import annotations

import json
import sys

import click

from relayguard.cli import app, fail
from relayguard.report import printable


@app.command("history")
@click.argument("host", required=False,
                help="Host as scanned (default: list the hosts and their last scans).")
@click.option("--db", help="History store: SQLAlchemy URL (default: $RELAYGUARD_DB or SQLite in "
              "~/.local/share/relayguard).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def history_command(host: str | None, db: str | None, as_json: bool) -> None:
    """Compare the latest scan of HOST with the one before: new, fixed, unchanged findings.
    Exit 1 when something is new, 0 otherwise, 2 when the store or host is unknown."""
    from relayguard.errors import RelayguardError
    from relayguard.history import History

    try:
        store = History(db)
    except RelayguardError as exc:
        fail(str(exc))
    if host is None:
        rows = [{"host": h, "last": {"id": s.id, "when": s.when, "verdict": s.verdict}}
                for h in store.hosts() for s in store.scans(h, limit=1)]
        if as_json:
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        else:
            for row in rows:
                last = row["last"]
                sys.stdout.write(f"{printable(row['host']):<30} last scan {last['when']}  "
                                 f"{last['verdict']}\n")
            if not rows:
                sys.stdout.write("no scan stored yet\n")
        raise click.exceptions.Exit(0)
    change = store.changes(host)
    if change is None:
        fail(f"no scan of {host!r} in the history store")
    if as_json:
        doc = {"host": change.host, "after": {"id": change.after.id, "when": change.after.when,
                                              "verdict": change.after.verdict},
               "before": None if change.before is None else {
                   "id": change.before.id, "when": change.before.when,
                   "verdict": change.before.verdict},
               "new": list(change.new), "fixed": list(change.fixed),
               "unchanged": list(change.unchanged)}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        a, b = change.after, change.before
        lines = [f"{printable(host)}: scan {a.when} ({a.verdict})"
                 + (f" vs {b.when} ({b.verdict})" if b else " — first scan, nothing to compare")]
        for word, items in (("NEW", change.new), ("FIXED", change.fixed),
                            ("UNCHANGED", change.unchanged)):
            lines.append(f"{word}: {len(items)}")
            lines += [f"  {d['severity']:<8} {d['rule']}  {printable(d['location'])}  "
                      f"{printable(d['title'])}" for d in items]
        sys.stdout.write("\n".join(lines) + "\n")
    raise click.exceptions.Exit(1 if change.new and change.before is not None else 0)
