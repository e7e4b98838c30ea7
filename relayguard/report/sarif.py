"""SARIF 2.1.0, so CI systems (GitHub code scanning) show audit findings on the config line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from relayguard import __version__
from relayguard.catalogue import Rule, all_rules
from relayguard.findings import Finding, Location, Report, Severity

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFO_URI = "https://github.com/relayguard/relayguard"

# GitHub code scanning ranks by this number (0.0-10.0); it is SARIF's free-form property bag.
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}


def sarif_level(severity: Severity) -> str:
    """The single place severity becomes a SARIF level."""
    if severity >= Severity.HIGH:
        return "error"
    if severity is Severity.MEDIUM:
        return "warning"
    return "note"


def _rule_descriptor(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.id.title().replace("-", ""),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.description},
        "help": {"text": f"{rule.why}\n\nFix: {rule.fix}", "markdown": rule.doc()},
        "helpUri": rule.reference,
        "defaultConfiguration": {"level": sarif_level(rule.severity)},
        "properties": {
            "category": rule.category.value,
            "security-severity": _SECURITY_SEVERITY[rule.severity],
            "tags": ["security", rule.category.value, *(c.value for c in rule.also),
                     rule.server],
        },
    }


def _artifact_uri(path: str) -> str:
    """A valid URI reference for a config path: spaces, `%`, `#` and non-UTF-8 bytes escaped."""
    p = Path(path)
    if p.is_absolute():
        return p.as_uri()
    return quote(os.fsencode(p.as_posix()), safe="/")


def _result(f: Finding, index: dict[str, int]) -> dict[str, Any]:
    text = f.title
    if f.fix:
        text += f"\nFix: {f.fix}"
    result: dict[str, Any] = {
        "ruleId": f.rule,
        "level": sarif_level(f.severity),
        "message": {"text": text},
        "partialFingerprints": {"relayguard/v1": f.fingerprint()},
        "properties": {
            "category": f.category.value,
            "categories": [c.value for c in f.categories],
            "severity": f.severity.label,
            "confidence": f.confidence.label,
            "security-severity": _SECURITY_SEVERITY[f.severity],
            "evidence": [e.to_dict() for e in f.evidence],
        },
    }
    if f.rule in index:
        result["ruleIndex"] = index[f.rule]
    # GitHub code scanning rejects the whole file when one result has no location: a finding
    # with no place of its own (a logs volume spike) points at its first located evidence.
    where = next((loc for loc in (f.location, *(e.location for e in f.evidence))
                  if loc is not None and (loc.path is not None or loc.host is not None)),
                 None)
    result["locations"] = [_location(where)]
    return result


def _location(where: Location | None) -> dict[str, Any]:
    """A result's location: a file (and line), a network target, or none at all."""
    if where is not None and where.path is not None:
        physical: dict[str, Any] = {"artifactLocation": {"uri": _artifact_uri(where.path)}}
        if where.line is not None:
            physical["region"] = {"startLine": max(1, where.line)}
        return {"physicalLocation": physical}
    if where is None:
        return {"physicalLocation": {"artifactLocation": {"uri": "relayguard"}},
                "message": {"text": "no single place: see the evidence"}}
    # GitHub also rejects URI schemes other than the checkout's: a network target (probe,
    # blocklist) becomes a relative, fully escaped reference ("127.0.0.1%3A3128").
    target = str(where)
    return {"physicalLocation": {"artifactLocation": {
        "uri": quote(target.encode("utf-8", "surrogateescape"), safe="")}},
        "message": {"text": target}}


def render_sarif(report: Report) -> str:
    """One SARIF run holding every finding, and descriptors for the rules that fired."""
    known = {r.id: r for r in all_rules()}
    fired = sorted({f.rule for f in report.findings if f.rule in known})
    index = {rule_id: i for i, rule_id in enumerate(fired)}
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "relayguard",
                "version": __version__,
                "informationUri": INFO_URI,
                "rules": [_rule_descriptor(known[r]) for r in fired],
            }
        },
        "results": [_result(f, index) for f in report.sorted_findings()],
        "invocations": [
            {
                "executionSuccessful": not report.errors,
                "toolExecutionNotifications": [
                    {"level": "error", "message": {"text": str(e)}} for e in report.errors
                ],
            }
        ],
        "properties": {"command": report.command},
    }
    doc = {"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}
    return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"
