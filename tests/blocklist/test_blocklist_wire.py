"""The lean reply decoder agrees with dnspython on everything it decodes (fuzzed), takes the
fast path for the shapes real DNSBL servers send, and never crashes on garbage; the client's
queue, truncation fallback and deadline work against real servers on loopback."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import time

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from blocklist_servers import CLIENT_IP, Faults, Rbldnsd, rcode_of, run_cli
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from relayguard.blocklist.dnsclient import (
    DnsClient,
    Nameserver,
    Status,
    _dnspython_answer,
    _fast_answer,
    parse_reply,
)
from relayguard.blocklist.wire import query, question, read_reply

QNAME = "2.0.0.127.zen.spamhaus.org"
WHERE = "127.0.6.1:53"


def _name(text: str) -> bytes:
    return b"".join(bytes((len(p),)) + p.encode() for p in text.split(".") if p) + b"\0"


def _label_offsets(qname: str) -> list[int]:
    """Offsets of every label of the question name (pointer targets a server would use)."""
    out, pos = [], 12
    for label in qname.split("."):
        out.append(pos)
        pos += 1 + len(label)
    return out


@st.composite
def _owner(draw: st.DrawFn, qname: str, good: bool) -> bytes:
    kinds = ["ptr12", "ptr", "full"] if good else ["ptr12", "ptr", "full", "other", "ptr", "bad"]
    kind = draw(st.sampled_from(kinds))
    if kind == "ptr12":
        return b"\xc0\x0c"
    if kind == "ptr":
        bad_targets = [] if good else [0, 5, 400]
        return struct.pack("!H", 0xC000 | draw(st.sampled_from([*_label_offsets(qname),
                                                                 *bad_targets])))
    if kind == "full":
        return _name(qname.upper() if draw(st.booleans()) else qname)
    if kind == "other":
        return draw(st.sampled_from([b"\x03ns1" + b"\xc0\x0c", _name("x.test"), b"\0"]))
    return draw(st.binary(max_size=6))


@st.composite
def _rdata(draw: st.DrawFn, rtype: int, good: bool) -> bytes:
    if not good and draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=12))
    if rtype == 1:
        return bytes(draw(st.sampled_from([[127, 0, 0, 2], [127, 0, 0, 4], [127, 255, 255, 254],
                                           [198, 51, 100, 7]])))
    if rtype == 16:
        parts = draw(st.lists(st.binary(max_size=8) | st.sampled_from([b"\xff\xfe", b"ok"]),
                              min_size=1 if good else 0, max_size=3))
        return b"".join(bytes((len(p),)) + p for p in parts)
    if rtype == 6:
        names = draw(st.sampled_from([b"\xc0\x0c\xc0\x0c", _name("ns.test") + b"\x03abc\xc0\x0c",
                                      b"\x01a\xc0\x16\0", b"\0\0"]))
        return names + draw(st.binary(min_size=20 if good else 16, max_size=20 if good else 24))
    return draw(st.binary(max_size=8))


@st.composite
def _rr(draw: st.DrawFn, qname: str, types: list[int], good: bool,
        owner: bytes | None = None) -> bytes:
    rtype = draw(st.sampled_from(types))
    rclass = 1 if good else draw(st.sampled_from([1, 1, 1, 3, 255]))
    ttl = draw(st.sampled_from([0, 60, 3600, 86400, 2**31 - 1, 2**31, 2**32 - 1]))
    rdata = draw(_rdata(rtype, good))
    rdlen = len(rdata) + (0 if good else draw(st.sampled_from([0, 0, 0, 0, -1, 1, 7])))
    return ((owner if owner is not None else draw(_owner(qname, good)))
            + struct.pack("!HHIH", rtype, rclass, ttl, max(0, rdlen)) + rdata)


@st.composite
def replies(draw: st.DrawFn) -> tuple[bytes, str]:
    """DNS replies shaped like what servers send, often slightly or badly wrong.

    Two in three are well formed in the shapes the lean decoder reads (one owner, the type
    asked, at most an SOA beside), so that most examples check the fast path against
    dnspython; the rest are fuzzed freely.
    """
    rdtype = draw(st.sampled_from(["A", "TXT"]))
    wanted = 1 if rdtype == "A" else 16
    qname = QNAME
    good = draw(st.integers(0, 2)) > 0
    if good:
        flags = 0x8180 | draw(st.sampled_from([0, 0, 3, 3, 2, 5]))
        flags ^= draw(st.sampled_from([0, 0x0400]))  # AA
        owner = draw(_owner(qname, good))
        answers = draw(st.lists(_rr(qname, [wanted], good, owner), max_size=4))
        authority = draw(st.lists(_rr(qname, [6], good), max_size=1))
        additional: list[bytes] = []
    else:
        flags = 0x8180 | draw(st.sampled_from([0, 0, 0, 2, 3, 3, 5, 1, 4, 9]))
        flags ^= draw(st.sampled_from([0, 0, 0, 0, 0x0200, 0x2800, 0x0400]))  # TC, opcode, AA
        answers = draw(st.lists(_rr(qname, [wanted, wanted, wanted, 5, 6], good), max_size=4))
        authority = draw(st.lists(_rr(qname, [6, 6, 2], good), max_size=2))
        additional = draw(st.lists(_rr(qname, [1, 41], good), max_size=1))
    counts = [1, len(answers), len(authority), len(additional)]
    if not good and draw(st.integers(0, 7)) == 0:
        counts[draw(st.integers(0, 3))] = draw(st.integers(0, 3))
    body = question(qname.upper() if draw(st.booleans()) else qname, wanted)
    data = (struct.pack("!HH4H", 0x1234, flags, *counts) + body + b"".join(answers)
            + b"".join(authority) + b"".join(additional))
    if good:
        return data, rdtype
    cut = draw(st.sampled_from([None, None, None, None, -1, -3, 13]))
    tail = draw(st.sampled_from([b"", b"", b"", b"", b"\0", b"junk"]))
    return data[:cut] + tail, rdtype


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies())
def test_lean_decoder_agrees_with_dnspython(case: tuple[bytes, str]) -> None:
    data, rdtype = case
    fast = _fast_answer(data, QNAME, rdtype, WHERE)
    full = _dnspython_answer(data, QNAME, rdtype, WHERE)
    if fast is not None:
        assert fast == full
    assert parse_reply(data, QNAME, rdtype, WHERE) == (fast if fast is not None else full)


@settings(max_examples=300, deadline=None)
@given(replies(), st.data())
def test_lean_decoder_agrees_on_damaged_replies(case: tuple[bytes, str],
                                                data: st.DataObject) -> None:
    raw, rdtype = case
    assume(len(raw) > 12)
    damaged = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    fast = _fast_answer(bytes(damaged), QNAME, rdtype, WHERE)
    if fast is not None:
        assert fast == _dnspython_answer(bytes(damaged), QNAME, rdtype, WHERE)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["A", "TXT", "AAAA"]))
def test_garbage_never_crashes(data: bytes, rdtype: str) -> None:
    for packet in (data, b"\x12\x34\x81\x83\x00\x01\x00\x00\x00\x01\x00\x00" + data):
        answer = parse_reply(packet, QNAME, rdtype, WHERE)
        fast = _fast_answer(packet, QNAME, rdtype, WHERE)
        assert fast is None or fast == _dnspython_answer(packet, QNAME, rdtype, WHERE)
        assert answer is None or answer.qname == QNAME


def _response(rcode: int, rdtype: str, values: list[str], soa: bool) -> bytes:
    request = dns.message.make_query(QNAME, rdtype)
    response = dns.message.make_response(request)
    response.set_rcode(rcode)
    if values:
        response.answer.append(dns.rrset.from_text_list(QNAME + ".", 300, "IN", rdtype, values))
    if soa:
        response.authority.append(dns.rrset.from_text(
            "zen.spamhaus.org.", 150, "IN", "SOA",
            "need.to.know.only. hostmaster.spamhaus.org. 2604 3600 600 432000 10"))
    return response.to_wire()


@pytest.mark.parametrize(("rcode", "rdtype", "values", "soa", "status", "ttl"), [
    (dns.rcode.NXDOMAIN, "A", [], False, Status.NXDOMAIN, 300),
    (dns.rcode.NXDOMAIN, "A", [], True, Status.NXDOMAIN, 10),  # min(SOA TTL, minimum)
    (dns.rcode.NOERROR, "A", [], True, Status.NODATA, 10),
    (dns.rcode.NOERROR, "A", ["127.0.0.2", "127.0.0.4", "127.0.0.2"], False, Status.ANSWER,
     300),
    (dns.rcode.NOERROR, "TXT", ['"Listed by SBL, see" " https://x.test/?ip=1"'], False,
     Status.ANSWER, 300),
    (dns.rcode.SERVFAIL, "A", [], False, Status.SERVFAIL, 0),
    (dns.rcode.REFUSED, "A", [], False, Status.REFUSED, 0),
])
def test_real_reply_shapes_take_the_fast_path(rcode: int, rdtype: str, values: list[str],
                                              soa: bool, status: Status, ttl: int) -> None:
    """What rbldnsd and recursive resolvers send (dnspython-built, compressed) never needs
    the slow path, and reads the same either way."""
    data = _response(rcode, rdtype, values, soa)
    fast = _fast_answer(data, QNAME, rdtype, WHERE)
    assert fast is not None and fast == _dnspython_answer(data, QNAME, rdtype, WHERE)
    assert (fast.status, fast.ttl) == (status, ttl)
    if rdtype == "A" and values:
        assert sorted(fast.values) == ["127.0.0.2", "127.0.0.4"]  # each value once
    if rdtype == "TXT":
        assert fast.values == ("Listed by SBL, see https://x.test/?ip=1",)


def test_fast_path_leaves_other_shapes_to_dnspython() -> None:
    truncated = bytearray(_response(dns.rcode.NOERROR, "A", ["127.0.0.2"], False))
    truncated[2] |= 0x02
    assert read_reply(bytes(truncated), 1) is None
    assert parse_reply(bytes(truncated), QNAME, "A", WHERE) is None  # ask over TCP
    cname = dns.message.make_response(dns.message.make_query(QNAME, "A"))
    cname.answer.append(dns.rrset.from_text(QNAME + ".", 60, "IN", "CNAME", "x.test."))
    cname.answer.append(dns.rrset.from_text("x.test.", 60, "IN", "A", "127.0.0.3"))
    assert read_reply(cname.to_wire(), 1) is None
    slow = parse_reply(cname.to_wire(), QNAME, "A", WHERE)
    assert slow is not None and slow.values == ("127.0.0.3",)  # dnspython skips the CNAME
    aaaa = _response(dns.rcode.NOERROR, "AAAA", ["2001:db8::1"], False)
    assert read_reply(aaaa, 28) is None


def test_a_class_any_record_does_not_spoil_later_replies() -> None:
    """dnspython caches 'generic' for (ANY, A) after one class-ANY A record and then reads
    IN A records as '\\# 4 7f000002'; a fresh process shows relayguard is immune."""
    odd = (struct.pack("!HH4H", 1, 0x8180, 1, 1, 0, 0) + question(QNAME, 1) + b"\xc0\x0c"
           + struct.pack("!HHIH", 1, 255, 60, 4) + bytes((127, 0, 0, 2)))
    chain = dns.message.make_response(dns.message.make_query(QNAME, "A"))
    chain.answer.append(dns.rrset.from_text(QNAME + ".", 60, "IN", "CNAME", "x.test."))
    chain.answer.append(dns.rrset.from_text("x.test.", 60, "IN", "A", "127.0.0.3"))
    script = ("import json, sys\n"
              "from relayguard.blocklist.dnsclient import parse_reply\n"
              "for h in sys.argv[1:]:\n"
              f"    print(json.dumps(parse_reply(bytes.fromhex(h), {QNAME!r}, 'A', '').values))")
    out = subprocess.run([sys.executable, "-c", script, odd.hex(), chain.to_wire().hex()],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert [json.loads(line) for line in out.splitlines()] == [["\\# 4 7f000002"],
                                                               ["127.0.0.3"]]


def test_query_packet_matches_dnspython() -> None:
    packet = query(0x1234, question("2.0.0.127.Zen.Spamhaus.ORG.", 16))
    parsed = dns.message.from_wire(packet)
    assert parsed.id == 0x1234 and parsed.flags == dns.flags.RD
    assert parsed.question[0].name == dns.name.from_text("2.0.0.127.zen.spamhaus.org")
    assert parsed.question[0].rdtype == dns.rdatatype.TXT
    for bad in ("a..b", "x" * 64 + ".test", ".".join(["abcdefghi"] * 26), "é.test"):
        with pytest.raises(ValueError):
            question(bad, 1)


# ---- the client against real servers -------------------------------------------------------

def test_queue_beyond_the_concurrency_cap_is_drained(rbl_good: Rbldnsd) -> None:
    server = Nameserver.parse(rbl_good.resolver)
    names = [f"{i}.33.22.11.zen.spamhaus.org" for i in range(1, 201)]
    truth = [rcode_of(rbl_good.host, rbl_good.port, name) for name in names]
    assert truth.count("NOERROR") >= 1 and truth.count("NXDOMAIN") >= 150

    async def burst() -> tuple[DnsClient, list[Status], int]:
        client = DnsClient([server], rate=0, concurrency=3, source=CLIENT_IP)
        futures = [client.submit(name) for name in names]
        most = 0
        async with asyncio.timeout(10):
            while not all(f.done() for f in futures):
                most = max(most, client._inflight)
                await asyncio.sleep(0)
        client.close()
        return client, [f.result().status for f in futures], most

    client, statuses, most = asyncio.run(burst())
    assert statuses == [Status.ANSWER if rcode == "NOERROR" else Status.NXDOMAIN
                        for rcode in truth]
    assert client.sent == 200 and most == 3


def test_pending_queries_end_at_the_deadline(silent: str) -> None:
    """Queries queued behind a silent server time out by the total deadline, none later."""
    server = Nameserver.parse(silent)

    async def stuck() -> list[str]:
        client = DnsClient([server], rate=0, concurrency=2, timeout=0.3, retries=5,
                           deadline=0.7, source=CLIENT_IP)
        client.start()
        answers = await asyncio.gather(*(client.query(f"{i}.1.1.11.z.test") for i in range(8)))
        client.close()
        return [a.status.value + ": " + a.detail for a in answers]

    start = time.monotonic()
    details = asyncio.run(stuck())
    assert time.monotonic() - start < 1.2
    # the first two hold the two slots, retrying until the deadline (the last try is cut
    # short to fit); the six queued behind them are never sent
    assert [d.split(" within")[0] for d in details[:2]] == ["timeout: no answer"] * 2
    assert details[2:] == ["timeout: total deadline reached"] * 6


def test_close_ends_queries_still_waiting_for_their_pace_slot(faults: Faults) -> None:
    """Queries paced behind others (rate per zone) end at close() as ERROR answers, and are
    never sent afterwards (their timers were left running, so they went out after a close)."""
    server = Nameserver.parse(faults.resolver)
    names = [f"44.33.22.{i}.good.faults.test" for i in (101, 102, 103)]

    async def close_early() -> list[str]:
        client = DnsClient([server], rate=4, source=CLIENT_IP)
        futures = [client.submit(name, bucket="good") for name in names]
        first = await asyncio.wait_for(futures[0], 5)  # the first goes out at once
        client.close()
        assert all(f.done() for f in futures)
        await asyncio.sleep(0.8)  # past both pace slots (0.25 s and 0.5 s)
        return [first.status.value] + [f.result().detail for f in futures[1:]]

    assert asyncio.run(close_early()) == ["nxdomain"] + ["the client was closed first"] * 2
    assert [faults.handler.hits[name + "."] for name in names] == [1, 0, 0]


def test_truncated_reply_is_asked_again_over_tcp(faults: Faults) -> None:
    name = "44.33.22.11.trunc.faults.test."
    before = faults.handler.hits[name]
    run = run_cli("11.22.33.44", "--resolver", faults.resolver, "--zones", "trunc.faults.test",
                  "--timeout", "1", "--retries", "0", "--rate", "0", "--fail-on", "medium",
                  "-f", "json")
    listing = run.doc["stats"]["targets"]["11.22.33.44"]["lists"]["trunc.faults.test"]
    assert (listing["state"], listing["codes"][0]["value"]) == ("listed", "127.0.0.2")
    assert faults.handler.hits[name] - before == 4  # A and TXT: each over UDP, then TCP
    assert run.code == 1
