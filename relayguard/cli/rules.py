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
    from rich.text import Text

    rules = all_rules()
    rows = [(r.id, r.server, r.category.value, r.severity.label, r.title) for r in rules]
    # Ids, categories and severities never wrap (the console is made wide enough), so `grep`
    # and `awk` find them whole; cells are Text, not markup, so "RewriteRule [P]" prints as is.
    fixed = sum(max((len(row[i]) for row in rows), default=8) + 3 for i in range(4))
    table = Table(show_lines=False, pad_edge=False, title=f"{len(rules)} rules",
                  title_justify="left")
    for col in ("id", "server", "category", "severity"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", overflow="fold", min_width=30)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    Console(width=max(100, Console().width, fixed + 34), highlight=False).print(table)
