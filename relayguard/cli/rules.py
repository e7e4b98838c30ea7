"""`relayguard rules [ID]`: list every rule, or print one rule's documentation."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from relayguard.catalogue import all_rules, rule_by_id
from relayguard.cli import app, fail


@app.command("rules")
def rules_command(
    rule_id: Annotated[str | None, typer.Argument(help="Print this rule's documentation.")] = None,
) -> None:
    """List every rule with id, category, severity and description, or document one."""
    if rule_id is not None:
        rule = rule_by_id(rule_id)
        if rule is None:
            fail(f"no rule {rule_id!r}; `relayguard rules` lists them")
            return
        sys.stdout.write(rule.doc())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False, pad_edge=False)
    for col in ("id", "server", "category", "severity", "description"):
        table.add_column(col, overflow="fold")
    for rule in all_rules():
        table.add_row(rule.id, rule.server, rule.category.value, rule.severity.label, rule.title)
    Console(width=max(100, Console().width), highlight=False).print(table)
