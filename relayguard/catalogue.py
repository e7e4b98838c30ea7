"""Rule metadata, declared once: `relayguard rules`, SARIF and docs/rules are built from it.

A `Rule` says what is wrong, why it matters, how to fix it and where the official docs are.
Checks build their findings through `Rule.finding` so id, category and severity always match
the catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from relayguard.findings import Category, Confidence, Edit, Evidence, Finding, Location, Severity


@dataclass(frozen=True, slots=True)
class Rule:
    """One documented check. `bad`/`good` are runnable examples: a test audits both."""

    id: str
    server: str  # "apache", "nginx", … for audit rules; "probe", "logs", "blocklist" otherwise
    category: Category
    severity: Severity
    title: str
    description: str  # what is wrong
    why: str  # why it matters
    fix: str  # how to fix it, concretely
    reference: str  # official documentation URL
    bad: str = ""
    good: str = ""
    also: tuple[Category, ...] = ()  # further categories every finding of it counts in

    def finding(
        self,
        title: str,
        *,
        location: Location | None = None,
        evidence: Iterable[Evidence] = (),
        confidence: Confidence = Confidence.LIKELY,
        severity: Severity | None = None,
        category: Category | None = None,
        fix: str | None = None,
        edits: Iterable[Edit] = (),
        also: Iterable[Category] | None = None,
    ) -> Finding:
        """Build a finding for this rule; severity/category default to the catalogue's."""
        return Finding(
            rule=self.id,
            category=category or self.category,
            severity=self.severity if severity is None else severity,
            confidence=confidence,
            title=title,
            location=location or Location(),
            evidence=tuple(evidence),
            fix=fix if fix is not None else self.fix,
            edits=tuple(edits),
            also=self.also if also is None else tuple(also),
        )

    def doc(self) -> str:
        """The rule's page, as `relayguard rules ID` prints it and docs/rules/ stores it."""
        parts = [
            f"# {self.id}: {self.title}",
            "",
            f"- server: {self.server}",
            f"- category: {self.category.value}",
            *([f"- also: {', '.join(c.value for c in self.also)}"] if self.also else []),
            f"- severity: {self.severity.label}",
            "",
            "## What is wrong",
            self.description,
            "",
            "## Why it matters",
            self.why,
            "",
            "## How to fix",
            # multi-line fixes are config snippets: fenced, so `<Proxy>` is not read as HTML
            f"```\n{self.fix.rstrip()}\n```" if "\n" in self.fix.strip() else self.fix,
        ]
        if self.bad:
            parts += ["", "## Example that is flagged", "```", self.bad.rstrip(), "```"]
        if self.good:
            parts += ["", "## Example that is not flagged", "```", self.good.rstrip(), "```"]
        parts += ["", "## Reference", self.reference, ""]
        return "\n".join(parts)


def all_rules() -> tuple[Rule, ...]:
    """Every rule of every capability, in a fixed order (imported lazily to keep CLI start fast)."""
    from relayguard.audit.rules import RULES as AUDIT_RULES
    from relayguard.blocklist.rules import RULES as BLOCKLIST_RULES
    from relayguard.logs.rules import RULES as LOGS_RULES
    from relayguard.probe.rules import RULES as PROBE_RULES

    return (*AUDIT_RULES, *BLOCKLIST_RULES, *LOGS_RULES, *PROBE_RULES)


def rule_by_id(rule_id: str) -> Rule | None:
    """Look a rule up by id, case-insensitively."""
    wanted = rule_id.strip().upper()
    return next((r for r in all_rules() if r.id == wanted), None)
