"""RFC 5782 query names, target and resolver parsing, and code decoding (no network)."""

from __future__ import annotations

import ipaddress

import pytest
from blocklist_servers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from relayguard.blocklist.check import State, decode
from relayguard.blocklist.dnsclient import Nameserver
from relayguard.blocklist.names import (
    TargetKind,
    domain_query_name,
    ip_query_name,
    parse_target,
    skip_reason,
)
from relayguard.blocklist.zones import ZONES, Zone, ZoneKind, lookup, zone_set
from relayguard.errors import InputError


def test_rfc5782_ipv4_and_ipv6_names() -> None:
    assert ip_query_name(ipaddress.ip_address("192.0.2.99"), "z.example") == \
        "99.2.0.192.z.example"
    assert ip_query_name(ipaddress.ip_address("2001:db8:1:2:3:4:567:89ab"), "z") == (
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.z")


def test_mapped_test_point_is_asked_in_nibbles_not_as_ipv4() -> None:
    # dns.reversename would give 2.0.0.127.in-addr.arpa here (research/dnsbl.md §1)
    assert ip_query_name(ipaddress.ip_address("::ffff:7f00:2"), "z") == (
        "2.0.0.0.0.0.f.7.f.f.f.f." + "0." * 20 + "z")


def test_targets_are_normalised() -> None:
    mapped = parse_target("::ffff:11.22.33.44")
    assert (mapped.kind, mapped.value) == (TargetKind.IPV4, "11.22.33.44")
    v6 = parse_target("[2A01:4F8::0001]")
    assert (v6.kind, v6.value) == (TargetKind.IPV6, "2a01:4f8::1")
    idn = parse_target("Bücher.Example.")
    assert (idn.kind, idn.value) == (TargetKind.NAME, "xn--bcher-kva.example")
    assert domain_query_name("Bücher.example", "dbl.spamhaus.org") == \
        "xn--bcher-kva.example.dbl.spamhaus.org"


@pytest.mark.parametrize("text", ["", "a..b", "1.2.3", "-a.example", "x_y.example",
                                  "a" * 64 + ".example", "300.1.1.1", "exa mple.com"])
def test_bad_targets_are_input_errors(text: str) -> None:
    with pytest.raises(InputError):
        parse_target(text)


@pytest.mark.parametrize(("text", "says"), [
    ("192.0.2.0/24", "a network range is not a target"),
    ("2a01:4f8::/32", "a network range is not a target"),
    ("11.22.33.44:25", "a port is not part of a target"),
    ("[2a01:4f8::1]:25", "a port is not part of a target"),
    ("http://mail.example.com/", "a URL is not a target"),
])
def test_common_mistakes_are_named(text: str, says: str) -> None:
    """A sysadmin pastes a CIDR, host:port or URL: the error says what it is, not
    'bad label'."""
    with pytest.raises(InputError) as caught:
        parse_target(text)
    assert says in str(caught.value)


@pytest.mark.parametrize(("addr", "why"), [("10.1.2.3", "private"), ("127.0.0.2", "loopback"),
                                           ("fe80::1", "link-local"), ("::1", "loopback"),
                                           ("11.22.33.44", None), ("2a01:4f8::1", None)])
def test_skip_reason(addr: str, why: str | None) -> None:
    assert skip_reason(ipaddress.ip_address(addr)) == why


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_parse_target_fuzz(text: str) -> None:
    """Any input is a target or a clear InputError, never a traceback."""
    try:
        target = parse_target(text)
    except InputError as exc:
        assert exc.message
        return
    if target.kind is TargetKind.NAME:
        assert target.value.isascii() and len(target.value) <= 253
        assert domain_query_name(target.value, "z").endswith(".z")
    else:
        assert ip_query_name(target.address, "z").endswith(".z")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_nameserver_parse_fuzz(text: str) -> None:
    try:
        server = Nameserver.parse(text)
    except InputError:
        return
    assert 0 < server.port < 65536
    ipaddress.ip_address(server.host)


def test_nameserver_forms() -> None:
    assert str(Nameserver.parse("127.0.6.1:5353")) == "127.0.6.1:5353"
    assert str(Nameserver.parse("::1")) == "[::1]:53"
    assert str(Nameserver.parse("[::1]:5353")) == "[::1]:5353"
    for bad in ("resolver.example", "127.0.0.1:0", "127.0.0.1:x", "[::1"):
        with pytest.raises(InputError):
            Nameserver.parse(bad)


ZEN = lookup("zen.spamhaus.org")
URIBL = lookup("multi.uribl.com")


def test_decode_states() -> None:
    assert ZEN is not None and URIBL is not None
    state, codes, _ = decode(ZEN, ("127.0.0.2", "127.0.0.4", "127.0.0.10"))
    assert state is State.LISTED
    assert [c.code.cls.value for c in codes] == ["spam", "compromise", "policy"]
    assert decode(ZEN, ("127.255.255.254",))[0] is State.REFUSED
    assert decode(ZEN, ("127.255.255.77",))[0] is State.REFUSED  # whole error range
    assert decode(ZEN, ("127.0.0.4", "127.255.255.255"))[0] is State.REFUSED
    assert decode(ZEN, ("192.0.2.1",))[0] is State.UNKNOWN
    assert decode(URIBL, ("127.0.0.1",))[0] is State.REFUSED  # URIBL "query refused"
    state, codes, _ = decode(URIBL, ("127.0.0.14",))
    assert state is State.LISTED and len(codes) == 3
    generic = Zone.generic("x.test")
    state, codes, _ = decode(generic, ("127.0.0.3",))
    assert state is State.LISTED and "not in the catalogue" in codes[0].code.meaning


def test_catalogue_shape() -> None:
    names = [z.name for z in ZONES]
    assert len(names) == len(set(names))
    default = zone_set("default")
    assert all(z.status.value == "live" and not z.needs_key for z in default)
    assert {z.name for z in default if z.kind is ZoneKind.DOMAIN} == {
        "dbl.spamhaus.org", "multi.surbl.org", "multi.uribl.com"}
    assert "dnsbl.sorbs.net" not in {z.name for z in zone_set("all")}
    dqs = lookup("0123456789abcdefghijklmnop.zen.dq.spamhaus.net")
    assert dqs is not None and dqs.needs_key and dqs.codes is ZEN.codes  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        zone_set("everything")


@pytest.mark.parametrize("args", [
    ["not a host!", "--resolver", "127.0.6.1:53"],
    ["11.22.33.44", "--resolver", "dns.example"],
    ["11.22.33.44", "--resolver", "127.0.6.1:70000"],
    ["11.22.33.44", "--resolver", "127.0.6.1", "--zones", "x.test:weird"],
    ["11.22.33.44", "--resolver", "127.0.6.1", "--zone-set", "everything"],
    ["11.22.33.44", "--resolver", "127.0.6.1", "--timeout", "0"],
    ["11.22.33.44", "--resolver", "127.0.6.1", "--source", "nowhere"],
])
def test_cli_bad_input_exits_2_with_a_message(args: list[str]) -> None:
    run = run_cli(*args)
    assert run.code == 2
    assert "Traceback" not in run.stderr + run.stdout


def test_private_targets_are_skipped_and_nothing_checked_is_an_error() -> None:
    run = run_cli("10.1.2.3", "fe80::1", "--resolver", "127.0.6.1:9", "-f", "json")
    assert run.code == 2
    assert run.doc["errors"] == [{"source": "blocklist", "message": "nothing was checked: "
                                  "every target is a private or reserved address that public "
                                  "blocklists cannot list"}]
    assert "10.1.2.3: skipped, a private address: public blocklists do not list it" in \
        run.doc["notes"]
    assert run.doc["stats"]["targets"]["fe80::1"] == {
        "kind": "ipv6", "from": "fe80::1", "verdict": "skipped", "skipped": "link-local"}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(["A", "TXT", "AAAA"]))
def test_reply_parser_fuzz(tail: bytes, rdtype: str) -> None:
    """Whatever a server sends after a plausible header is an answer value, never a crash."""
    from relayguard.blocklist.dnsclient import DnsAnswer, parse_reply

    for data in (tail, b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + tail):
        answer = parse_reply(data, "2.0.0.127.z.test", rdtype, "127.0.6.1:53")
        assert answer is None or isinstance(answer, DnsAnswer)
        if answer is not None and answer.status.value == "answer":
            assert answer.values
