"""Target and port parsing: every accepted form, every refusal with a clear reason, and fuzz."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relayguard.errors import InputError, UsageError
from relayguard.probe.targets import (
    Target,
    parse_ports,
    parse_target,
    parse_targets,
    read_targets_file,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.4.10", [Target("127.0.4.10")]),
    ("127.0.4.10:8080", [Target("127.0.4.10", 8080)]),
    ("::1", [Target("::1")]),
    ("[::1]:25", [Target("::1", 25)]),
    ("[2001:DB8::1]", [Target("2001:db8::1")]),
    ("Mail.Example.COM.", [Target("mail.example.com")]),
    ("mx:2525", [Target("mx", 2525)]),
    ("127.0.4.8/30", [Target("127.0.4.9"), Target("127.0.4.10")]),
    ("127.0.4.8/31", [Target("127.0.4.8"), Target("127.0.4.9")]),
    ("127.0.4.8/32", [Target("127.0.4.8")]),
])
def test_accepted_forms(text: str, expected: list[Target]) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"),
    ("127.0.4.1:0", "port must be 1-65535"),
    ("127.0.4.1:65536", "port must be 1-65535"),
    ("127.0.4.1:http", "port must be 1-65535"),
    ("127.0.4.1:\u00b2", "port must be 1-65535"),  # isdigit() but not int(): a traceback
    ("[::1]:99999", "port must be 1-65535"),
    ("[not-v6]:25", "not an IPv6 address"),
    ("1:2:3", "not an IPv6 address"),
    ("bad host!", "not a host name or IP address"),
    ("999.1.1.1", "not a host name or IP address"),
    ("10.0.0.0/33", "10.0.0.0/33"),
])
def test_refusals_name_the_problem(text: str, reason: str) -> None:
    with pytest.raises(UsageError, match=reason):
        parse_target(text)


def test_wide_networks_need_allow_large_and_never_exceed_the_cap() -> None:
    assert len(parse_target("127.4.0.0/20")) == 4094
    with pytest.raises(UsageError, match="--allow-large"):
        parse_target("127.4.0.0/19")
    assert len(parse_target("127.4.0.0/19", allow_large=True)) == 8190
    with pytest.raises(UsageError, match="at most 65536"):
        parse_target("127.0.0.0/8", allow_large=True)
    with pytest.raises(UsageError, match="--allow-large"):
        parse_target("::/64")


def test_targets_are_deduplicated_in_order() -> None:
    assert parse_targets(["127.0.4.2", "127.0.4.1", "127.0.4.2", "127.0.4.1:25"]) == [
        Target("127.0.4.2"), Target("127.0.4.1"), Target("127.0.4.1", 25)]


def test_targets_file(tmp_path: Path) -> None:
    f = tmp_path / "targets.txt"
    f.write_text("# proxies\n127.0.4.10:8080\n\n  127.0.4.11  # second\n")
    assert read_targets_file(f) == ["127.0.4.10:8080", "127.0.4.11"]
    with pytest.raises(InputError, match="cannot read targets file"):
        read_targets_file(tmp_path / "missing.txt")


def test_ports() -> None:
    assert parse_ports("25,80,8000-8002,25") == (25, 80, 8000, 8001, 8002)
    for bad, reason in (("0", "1-65535"), ("9-3", "backwards"), (",", "no port"),
                        ("a-b", "1-65535"), ("\u00b2", "1-65535"), ("1-\u2462", "1-65535")):
        with pytest.raises(UsageError, match=reason):
            parse_ports(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_any_text_is_a_target_list_or_a_usage_error(text: str) -> None:
    try:
        targets = parse_target(text)
    except UsageError as exc:
        assert str(exc)
        return
    assert targets and all(isinstance(t, Target) for t in targets)
    assert all(t.port is None or 1 <= t.port <= 65535 for t in targets)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789,- \u00b2\u0663", max_size=30))
def test_fuzz_ports(text: str) -> None:
    try:
        ports = parse_ports(text)
    except UsageError:
        return
    assert ports and all(1 <= p <= 65535 for p in ports)
