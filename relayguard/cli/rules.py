"""`relayguard rules [ID]`: list every rule, or print one rule's documentation."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from relayguard.catalogue import Rule, all_rules, rule_by_id
from relayguard.cli import app, fail, format_option
from relayguard.report import OutputFormat


def rule_dict(rule: Rule) -> dict[str, Any]:
    """A rule's metadata as `--format json` prints it (the same names as in the catalogue)."""
    return {"id": rule.id, "server": rule.server, "category": rule.category.value,
            "severity": rule.severity.label, "title": rule.title,
            "description": rule.description, "why": rule.why, "fix": rule.fix,
            "reference": rule.reference, "bad": rule.bad, "good": rule.good}


@app.command("rules")
@click.argument("rule_id", required=False, help="Print this rule's documentation.")
@format_option
def rules_command(rule_id: str | None, fmt: OutputFormat | None) -> None:
    """List every rule with id, category, severity and description, or document one."""
    fmt = fmt or OutputFormat.TEXT
    if fmt is OutputFormat.SARIF:
        fail("rules: --format sarif describes findings; use json or markdown for rules")
    if rule_id is not None:
        rule = rule_by_id(rule_id)
        if rule is None:
            fail(f"no rule {rule_id!r}; `relayguard rules` lists them")
        if fmt is OutputFormat.JSON:
            sys.stdout.write(json.dumps(rule_dict(rule), indent=2, ensure_ascii=True) + "\n")
        else:
            sys.stdout.write(rule.doc())
        return
    rules = all_rules()
    if fmt is OutputFormat.JSON:
        sys.stdout.write(json.dumps([rule_dict(r) for r in rules], indent=2,
                                    ensure_ascii=True) + "\n")
        return
    if fmt is OutputFormat.MARKDOWN:
        from relayguard.report.markdown import escape_inline as cell

        lines = ["| id | server | category | severity | title |", "|---|---|---|---|---|"]
        lines += [f"| {r.id} | {r.server} | {r.category.value} | {r.severity.label} | "
                  f"{cell(r.title)} |" for r in rules]
        sys.stdout.write("\n".join(lines) + "\n")
        return
    _print_table(rules)


def _print_table(rules: tuple[Rule, ...]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

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
