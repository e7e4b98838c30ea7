"""Terminal reporter (rich): content present, no ANSI without colour, attacker text inert."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from relayguard.findings import (
    Category,
    Confidence,
    ErrorEntry,
    Evidence,
    Finding,
    Location,
    Report,
    Severity,
)
from relayguard.report import OutputFormat, render
from tests.report.conftest import make_report


def text(report: Report, *, color: bool = False, width: int = 100) -> str:
    return render(report, OutputFormat.TEXT, color=color, width=width)


def test_content_present_worst_first() -> None:
    out = text(make_report())
    assert out.splitlines()[0] == (
        "relayguard audit: 4 finding(s): 1 critical, 1 high, 1 medium, 1 info")
    for needle in ("CONNECT to port 25 reached the canary", "PROBE-CONNECT-SMTP",
                   "smtp-via-proxy", "confidence confirmed", "[::1]:3128",
                   "APACHE-FORWARD-PROXY-OPEN", "/etc/apache2/mods-enabled/proxy.conf:12",
                   "ProxyRequests On", "ProxyRequests Off", "200 Connection established",
                   "1 check(s) could not be completed",
                   "/etc/apache2/conf-enabled/broken.conf:4: unterminated <Proxy>",
                   "note: apache: auditing /etc/apache2/apache2.conf",
                   "configs: 1", "files_read: 3"):
        assert needle in out, needle
    order = [out.index(t) for t in ("CONNECT to port 25", "Forward proxy open",
                                    "Relayed requests", "mod_proxy loaded")]
    assert order == sorted(order)


@pytest.mark.parametrize("env", [{}, {"FORCE_COLOR": "1"}, {"TTY_COMPATIBLE": "1"},
                                 {"CLICOLOR_FORCE": "1"}])
def test_no_ansi_without_color(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = text(make_report(), color=False)
    assert "\x1b" not in out
    assert "\x07" not in out


def test_color_adds_styles() -> None:
    assert "\x1b[" in text(make_report(), color=True)


def test_attacker_control_characters_are_shown_not_obeyed() -> None:
    # The sample log evidence holds ESC[2J (clear screen) and an OSC title sequence.
    for color in (False, True):
        out = text(make_report(), color=color)
        assert "\x1b[2J" not in out and "\x1b]0;" not in out
        assert "\\x1b[2J" in out and "\\x1b]0;owned\\x07" in out


def test_bidi_override_and_carriage_return_escaped() -> None:
    f = Finding("LOGS-X", Category.RELAY_ABUSE, Severity.LOW, Confidence.LIKELY,
                "user\u202egnp.exe", Location(path="/var/log/mail.log", line=1),
                (Evidence("log", "line one\rfake line"),))
    out = text(Report("logs", (f,)))
    assert "\u202e" not in out and "user\\u202egnp.exe" in out
    assert "line one\\rfake line" in out


def test_rich_markup_in_findings_is_literal() -> None:
    f = Finding("APACHE-X", Category.OPEN_HTTP_PROXY, Severity.HIGH, Confidence.LIKELY,
                "RewriteRule [P] with [bold]markup[/bold]", Location(path="/x [red]", line=1),
                (Evidence("config", "RewriteRule ^(.*)$ http://%{HTTP_HOST}$1 [P,L]"),),
                fix="[/] remove [P]")
    out = text(Report("audit", (f,)))
    for literal in ("RewriteRule [P] with [bold]markup[/bold]", "/x [red]:1",
                    "http://%{HTTP_HOST}$1 [P,L]", "[/] remove [P]"):
        assert literal in out


def test_lines_fit_the_width() -> None:
    long = "x" * 300
    f = Finding("LOGS-X", Category.PROXY_ABUSE, Severity.HIGH, Confidence.LIKELY, long,
                Location(path="/" + long, line=1), (Evidence("log", long),), fix=long)
    for width in (60, 100):
        out = text(Report("logs", (f,)), width=width)
        assert max(cell_len(line) for line in out.splitlines()) <= width
        assert out.count("x") >= 4 * 300  # wrapped, not cut


def test_empty_and_errors_only() -> None:
    assert text(Report("probe")).splitlines() == ["relayguard probe: no findings"]
    out = text(Report("probe", errors=(ErrorEntry("127.0.0.1:3128", "timed out"),)))
    assert "relayguard probe: no findings" in out
    assert "1 check(s) could not be completed (the result is incomplete, not clean):" in out
    assert "error: 127.0.0.1:3128: timed out" in out


@settings(max_examples=150, deadline=None)
@given(title=st.text(max_size=40), ev=st.text(max_size=80), path=st.text(max_size=30),
       note=st.text(max_size=30), color=st.booleans())
def test_any_text_renders_without_escapes_leaking(title: str, ev: str, path: str, note: str,
                                                  color: bool) -> None:
    f = Finding("LOGS-X", Category.PROXY_ABUSE, Severity.HIGH, Confidence.LIKELY, title,
                Location(path=path or None, line=1), (Evidence("log", ev),), fix=ev or None)
    out = text(Report("logs", (f,), errors=(ErrorEntry(path or "x", note),), notes=(note,)),
               color=color)
    if not color:
        assert "\x1b" not in out
    else:
        # Only rich's own SGR style sequences: ESC [ digits/; m, nothing else.
        assert not re.search(r"\x1b(?!\[[0-9;]*m)", out)
    assert "\x07" not in out and "\u202e" not in out


def test_no_color_convention_keeps_styles_drops_colours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[1;31m" in text(make_report(), color=True)  # HIGH is bold red
    monkeypatch.setenv("NO_COLOR", "1")
    out = text(make_report(), color=True)
    assert "\x1b[1m" in out
    assert not re.search(r"\x1b\[[0-9;]*(3[0-7]|4[0-7]|38;|48;)[0-9;]*m", out), out[:300]
