"""Markdown reporter: parsed back with a CommonMark parser (markdown-it-py, with GFM tables), so
the tests check what a renderer shows, not substrings. Evidence is written by attackers: it must
stay inside its code block, and titles, paths and errors must not open links, HTML, code spans,
table rows or list items."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

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
from relayguard.report import OutputFormat, printable, render
from tests.report.conftest import HOSTILE, make_report

MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])
UNSAFE_TOKENS = {"html_block", "html_inline", "link_open", "image", "code_inline", "em_open",
                 "s_open", "hr", "blockquote_open", "code_block", "ordered_list_open"}


def parse(report: Report) -> list[Token]:
    return MD.parse(render(report, OutputFormat.MARKDOWN))


def walk(tokens: list[Token]) -> list[Token]:
    out: list[Token] = []
    for t in tokens:
        out.append(t)
        out += walk(t.children or [])
    return out


def inline_text(tok: Token) -> str:
    """What a reader sees of an inline token: its text pieces joined."""
    assert tok.type == "inline"
    return "".join(c.content for c in tok.children or [] if c.type in ("text", "text_special"))


def shown(text: str) -> str:
    """How a one-line field is meant to be shown: whitespace collapsed, controls escaped."""
    return printable(" ".join(text.split()))


def fenced(text: str) -> str:
    """A code block's expected content: CRLF as LF, a lone CR or NUL shown as an escape."""
    return printable(text.replace("\r\n", "\n")) + "\n"


def check_structure(report: Report) -> list[Token]:
    """Every structural promise of the reporter, for any report."""
    tokens = parse(report)
    flat = walk(tokens)
    types = [t.type for t in flat]
    assert not UNSAFE_TOKENS & set(types), [t for t in flat if t.type in UNSAFE_TOKENS]
    findings = report.sorted_findings()
    n_fences = sum(len(f.evidence) + (1 if f.fix else 0) for f in findings)
    fences = [t for t in tokens if t.type == "fence"]
    assert len(fences) == n_fences
    expected = [fenced(t) for f in findings for t in
                [*(e.text for e in f.evidence), *([f.fix] if f.fix else [])]]
    assert [t.content for t in fences] == expected
    # Bold only where the reporter puts it: the verdict, the error line, each severity.
    assert types.count("strong_open") == (2 if findings else 1) + (1 if report.errors else 0) + len(
        findings)
    assert types.count("tr_open") == (1 + len(findings) if findings else 0)
    assert types.count("td_open") == 6 * len(findings)
    assert types.count("list_item_open") == 3 * len(findings) + len(report.errors) + len(
        report.notes)
    headings = [tokens[i + 1] for i, t in enumerate(tokens) if t.type == "heading_open"
                and t.tag == "h2"]
    titles = [inline_text(h) for h in headings][: len(findings)]
    assert titles == [f"{n}. {shown(f.title)}".rstrip() for n, f in enumerate(findings, 1)]
    if findings:
        cells = [inline_text(tokens[i + 1]) for i, t in enumerate(tokens) if t.type == "td_open"]
        rows = [cells[i:i + 6] for i in range(0, len(cells), 6)]
        assert [r[3:] for r in rows] == [[shown(f.rule), shown(str(f.location)), shown(f.title)]
                                         for f in findings]
    return tokens


def test_sample_report_structure_and_content() -> None:
    report = make_report()
    tokens = check_structure(report)
    text = render(report, OutputFormat.MARKDOWN)
    assert text.startswith("# relayguard audit report\n")
    assert "**4 finding(s)**, worst severity **critical**." in text
    assert "**1 check(s) could not be completed**" in text
    fences = [t.content for t in tokens if t.type == "fence"]
    assert fenced(HOSTILE) in fences
    assert "ProxyRequests Off\n" in fences


def test_evidence_with_backtick_fences_stays_in_its_block() -> None:
    evil = "```\n# Injected heading\n<img src=x onerror=alert(1)>\n````\n[link](http://evil/)"
    f = Finding("LOGS-X", Category.PROXY_ABUSE, Severity.HIGH, Confidence.CONFIRMED, "t",
                Location(path="/var/log/x", line=1), (Evidence("log", evil),), fix="~~~\n```")
    tokens = check_structure(Report("logs", (f,)))
    assert [t.content for t in tokens if t.type == "fence"] == [evil + "\n", "~~~\n```\n"]
    assert not any(t.type == "heading_open" and t.tag == "h1" for t in tokens[1:])


@pytest.mark.parametrize("title", [
    "a | b | c", "<script>alert(1)</script>", "`code` and ``more``", "[x](http://evil/)",
    "1. ordered", "- dash", "+ plus", "# hash", "> quote", "*em* _em_ **strong**", "~~strike~~",
    "line\nbreak\r\nand\rmore", "&lt;entity&gt; &amp;", "back\\slash\\", "trailing #",
    "![img](http://x/y.png)", "<http://autolink/>", "---", "===", "    indented",
])
def test_hostile_titles_render_literally(title: str) -> None:
    f = Finding("LOGS-X", Category.PROXY_ABUSE, Severity.HIGH, Confidence.LIKELY, title,
                Location(path=title, line=2))
    check_structure(Report("logs", (f,), errors=(ErrorEntry(title, title),), notes=(title,)))


_md_chars = st.sampled_from([*"`|<>*_[]()#!&~\\-+=.:/ \n\r\t1aZ", "```", "<b>", "](", "\x00"])
_text = st.one_of(st.text(max_size=40),
                  st.lists(_md_chars, max_size=30).map("".join))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(titles=st.lists(_text, min_size=0, max_size=3), evidence=st.lists(_text, max_size=3),
       path=_text, error=_text, note=_text)
def test_markdown_never_breaks_out(titles: list[str], evidence: list[str], path: str,
                                   error: str, note: str) -> None:
    findings = tuple(
        Finding(f"RULE-{i}", Category.OPEN_HTTP_PROXY, Severity.HIGH, Confidence.LIKELY, title,
                Location(path=path or None, line=i + 1),
                tuple(Evidence("config", e) for e in evidence), fix=title or None)
        for i, title in enumerate(titles))
    check_structure(Report("audit", findings, errors=(ErrorEntry(path or "x", error),),
                           notes=(note,)))
