"""The shared HTML reporter (`--format html` of blocklist, audit, logs, probe): attacker text
stays text, and cannot drive a terminal or reorder what a person reads."""

from __future__ import annotations

from dataclasses import replace

from relayguard.findings import Evidence, Report
from relayguard.report.html import render_html
from tests.report.conftest import HOSTILE


def test_hostile_evidence_is_escaped_and_control_characters_shown(report: Report) -> None:
    page = render_html(report)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>in</b>" not in page
    assert "\x1b" not in page and "\\x1b[2J" in page  # ESC shown, as in every reporter
    assert "\x07" not in page


def test_bidi_override_cannot_reorder_the_page(report: Report) -> None:
    """U+202E in a logged request would show `exe.txt` as `txt.exe` in the browser."""
    tricked = report.findings[2]
    tricked = replace(tricked, title="evil \u202etxt.exe", evidence=(
        Evidence("log", HOSTILE + " \u202egnp.exe"),))
    page = render_html(replace(report, findings=(tricked,), notes=("note \u2066x\u2069",)))
    for char in ("\u202e", "\u2066", "\u2069"):
        assert char not in page
    assert "evil \\u202etxt.exe" in page
