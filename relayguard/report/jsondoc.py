"""The JSON document of the output contract (DESIGN.md): stable keys scripts can rely on."""

from __future__ import annotations

import json
from typing import Any

from relayguard import __version__
from relayguard.findings import Report


def report_dict(report: Report) -> dict[str, Any]:
    """The contract as a plain dict: tool, version, command, findings, errors, stats; `logs`
    adds its incidents at the top level (they stay in stats too, where reporters read them)."""
    out: dict[str, Any] = {
        "tool": "relayguard",
        "version": __version__,
        "command": report.command,
        "findings": [f.to_dict() for f in report.sorted_findings()],
        "errors": [e.to_dict() for e in report.errors],
        "stats": report.stats,
        "notes": list(report.notes),
    }
    if report.command == "logs" and isinstance(report.stats.get("incidents"), list):
        out["incidents"] = report.stats["incidents"]
    return out


def render_json(report: Report) -> str:
    """Pretty-printed JSON; non-UTF-8 bytes from configs/logs are kept as escapes."""
    return json.dumps(report_dict(report), indent=2, ensure_ascii=True, default=str) + "\n"
