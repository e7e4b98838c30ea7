"""Faults rbldnsd cannot produce, from a real dnslib server and a silent socket on loopback:
SERVFAIL, NODATA, answers outside 127/8, timeouts, NXDOMAIN for the test point; plus the
client's retries, deadline, pacing and cache, and hostname expansion."""

from __future__ import annotations

import asyncio
import time

import pytest
from blocklist_servers import CLIENT_IP, Faults, Rbldnsd, findings_by, run_cli

from relayguard.blocklist.dnsclient import DnsClient, Nameserver, Status
from relayguard.blocklist.zones import REFUSAL_REMEDY

pytestmark = pytest.mark.server

FAST = ("--timeout", "0.4", "--retries", "0", "--rate", "0")


def _state(doc: dict, target: str, zone: str) -> dict:  # type: ignore[type-arg]
    return doc["stats"]["targets"][target]["lists"][zone]  # type: ignore[no-any-return]


def test_unknown_states_from_a_faulty_server(faults: Faults) -> None:
    zones = "servfail.faults.test,nodata.faults.test,hijack.faults.test,slow.faults.test"
    run = run_cli("11.22.33.44", "--resolver", faults.resolver, "--zones", zones, *FAST,
                  "-f", "json")
    doc = run.doc
    assert run.code == 2 and doc["findings"] == []
    states = {z: _state(doc, "11.22.33.44", z) for z in zones.split(",")}
    assert {z: s["state"] for z, s in states.items()} == dict.fromkeys(zones.split(","),
                                                                       "unknown")
    assert states["servfail.faults.test"]["detail"].startswith("SERVFAIL")
    assert states["nodata.faults.test"]["detail"].startswith("NOERROR without an A record")
    assert "198.51.100.7 is outside 127.0.0.0/8" in states["hijack.faults.test"]["detail"]
    assert states["slow.faults.test"]["detail"].startswith("timeout: no answer within 0.4s")
    # all four passed the self-test; they just did not answer for the target
    for z in zones.split(","):
        assert doc["stats"]["zones"][z]["selftest"]["ipv4"]["usable"] is True
    assert doc["stats"]["targets"]["11.22.33.44"]["verdict"] == "inconclusive"
    assert "only 0 of 4 lists answered (2 needed)" in doc["errors"][0]["message"]


def test_failed_self_tests_from_a_faulty_server(faults: Faults, silent: str) -> None:
    run = run_cli("11.22.33.44", "--resolver", faults.resolver, "--zones",
                  "nxall.faults.test,hijackall.faults.test,good.faults.test", *FAST,
                  "--fail-on", "medium", "-f", "json")
    doc = run.doc
    tests = {z: v["selftest"]["ipv4"] for z, v in doc["stats"]["zones"].items()}
    assert tests["nxall.faults.test"]["reason"] == "empty"  # NXDOMAIN for 127.0.0.2
    assert tests["hijackall.faults.test"]["reason"] == "hijacked"
    assert "outside 127.0.0.0/8" in tests["hijackall.faults.test"]["detail"]
    assert tests["good.faults.test"]["usable"] is True
    assert set(findings_by(doc)) == {("BL-LISTED-OTHER", "11.22.33.44", "good.faults.test")}
    assert run.code == 1  # listed; the unusable lists are notes, not a hidden "clean"

    quiet = run_cli("11.22.33.44", "--resolver", silent, "--zones", "good.faults.test",
                    *FAST, "-f", "json")
    test = quiet.doc["stats"]["zones"]["good.faults.test"]["selftest"]["ipv4"]
    assert (test["usable"], test["reason"]) == (False, "unreachable")
    assert "timeout" in test["detail"]
    assert quiet.code == 2


def test_hostname_is_checked_by_name_and_every_address(faults: Faults) -> None:
    run = run_cli("mail.example.test", "--resolver", faults.resolver, "--zones",
                  "good.faults.test,dom.faults.test:domain", *FAST, "-f", "json")
    doc = run.doc
    targets = doc["stats"]["targets"]
    assert {t: (v["kind"], v["verdict"]) for t, v in targets.items()} == {
        "mail.example.test": ("domain", "listed"),
        "11.22.33.44": ("ipv4", "listed"),
        "10.0.0.5": ("ipv4", "skipped"),
        "2a01:4f8:1:2::25": ("ipv6", "clean"),
    }
    assert all(v["from"] == "mail.example.test" for v in targets.values())
    assert any("resolves to 10.0.0.5 (private)" in n for n in doc["notes"])
    assert set(findings_by(doc)) == {
        ("BL-LISTED-OTHER", "mail.example.test", "dom.faults.test"),
        ("BL-LISTED-OTHER", "11.22.33.44", "good.faults.test")}
    broken = run_cli("broken.example.test", "--resolver", faults.resolver, "--zones",
                     "dom.faults.test:domain", *FAST, "-f", "json")
    assert broken.code == 2
    assert {e["message"].split(" (")[0] for e in broken.doc["errors"]} == {
        "could not resolve A records", "could not resolve AAAA records"}


def test_retries_are_bounded(faults: Faults) -> None:
    name = "45.33.22.11.servfail.faults.test."
    before = faults.handler.hits[name]
    run_cli("11.22.33.45", "--resolver", faults.resolver, "--zones", "servfail.faults.test",
            "--timeout", "0.4", "--retries", "2", "--rate", "0")
    assert faults.handler.hits[name] - before == 3  # one try + two retries, then stop


def test_total_deadline_bounds_the_run(faults: Faults) -> None:
    targets = [f"11.22.40.{i}" for i in range(1, 21)]
    start = time.monotonic()
    run = run_cli(*targets, "--resolver", faults.resolver, "--zones", "slow.faults.test",
                  "--timeout", "5", "--retries", "3", "--rate", "0", "--deadline", "0.8",
                  "-f", "json")
    elapsed = time.monotonic() - start
    assert elapsed < 3.0  # 20 slow answers x 4 tries would take far longer
    assert run.code == 2
    states = {t: v["verdict"] for t, v in run.doc["stats"]["targets"].items()}
    assert set(states.values()) == {"inconclusive"}


def test_per_zone_rate_paces_queries(rbl_good: Rbldnsd) -> None:
    targets = [f"11.22.50.{i}" for i in range(1, 19)]  # + 2 self-test queries = 20
    start = time.monotonic()
    run = run_cli(*targets, "--resolver", rbl_good.resolver, "--zones", "clean.bl.test",
                  "--rate", "20", "-f", "json")
    elapsed = time.monotonic() - start
    assert run.code == 0
    assert elapsed >= 0.9  # 20 queries at 20/s: the 20th leaves after 0.95 s
    assert run.doc["stats"]["queries"] == 20


def test_client_caches_answers_for_their_ttl(rbl_good: Rbldnsd) -> None:
    server = Nameserver.parse(rbl_good.resolver)

    async def twice() -> tuple[DnsClient, list[Status]]:
        client = DnsClient([server], rate=0, source=CLIENT_IP)
        first = await client.query("44.33.22.11.zen.spamhaus.org", "A")
        second = await client.query("44.33.22.11.zen.spamhaus.org", "A")
        miss = await client.query("9.9.9.11.zen.spamhaus.org", "A")
        return client, [first.status, second.status, miss.status]

    client, statuses = asyncio.run(twice())
    assert statuses == [Status.ANSWER, Status.ANSWER, Status.NXDOMAIN]
    assert (client.sent, client.cache_hits) == (2, 1)


def test_nameserver_refusing_a_zone_is_reported(rbl_good: Rbldnsd) -> None:
    run = run_cli("11.22.33.44", "--resolver", rbl_good.resolver, "--zones",
                  "not.served.test", *FAST, "-f", "json")
    test = run.doc["stats"]["zones"]["not.served.test"]["selftest"]["ipv4"]
    assert (test["usable"], test["reason"]) == (False, "refused")
    assert "answered REFUSED for the test point 2.0.0.127.not.served.test" in test["detail"]
    assert "Point --resolver at a recursive resolver that answers you" in test["detail"]
    assert run.doc["stats"]["targets"]["11.22.33.44"]["lists"]["not.served.test"]["remedy"] \
        == REFUSAL_REMEDY
    assert f"next step: {REFUSAL_REMEDY}" in run.doc["notes"]
    assert run.code == 2


def test_mapped_aaaa_answer_of_a_hostname_is_checked_as_ipv4(faults: Faults) -> None:
    """`::ffff:11.22.33.44` in an AAAA answer is the IPv4 host 11.22.33.44: asked once, in
    IPv4 form, on the IPv4 lists (never as 32 nibbles no list has)."""
    run = run_cli("mapped.example.test", "--resolver", faults.resolver, "--zones",
                  "good.faults.test,dom.faults.test:domain", *FAST, "-f", "json")
    targets = run.doc["stats"]["targets"]
    assert "::ffff:b16:212c" not in targets and "::ffff:11.22.33.44" not in targets
    assert targets["11.22.33.44"]["kind"] == "ipv4"
    assert targets["11.22.33.44"]["verdict"] == "listed"
    assert [f["location"]["host"] for f in run.doc["findings"]] == ["11.22.33.44"]


def test_uncatalogued_list_without_ipv6_test_entry_is_not_used_for_ipv6(faults: Faults) -> None:
    run = run_cli("2a01:4f8:9::1", "--resolver", faults.resolver, "--zones",
                  "nodata.faults.test,good.faults.test", *FAST, "-f", "json")
    target = run.doc["stats"]["targets"]["2a01:4f8:9::1"]
    assert list(target["lists"]) == ["good.faults.test"]
    assert (target["verdict"], target["applicable"]) == ("clean", 1)
    assert ("nodata.faults.test has no IPv6 test entry: not used for IPv6 targets"
            in run.doc["notes"])
    assert run.code == 0


def test_self_test_verdicts_are_cached_for_their_ttl(faults: Faults) -> None:
    from relayguard.blocklist.check import HealthCache, check
    from relayguard.blocklist.names import parse_target
    from relayguard.blocklist.zones import Zone

    zone = Zone.generic("good.faults.test")
    probe = "2.0.0.127.good.faults.test."
    server = Nameserver.parse(faults.resolver)

    def run(cache: HealthCache) -> None:
        client = DnsClient([server], rate=0, timeout=0.4, source=CLIENT_IP)
        result = check([parse_target("11.22.33.45")], (zone,), client, health_cache=cache)
        assert result.targets[0].verdict.value == "clean"

    before = faults.handler.hits[probe]
    shared = HealthCache(ttl=600)
    run(shared)
    run(shared)
    assert faults.handler.hits[probe] - before == 1  # second run trusted the cached verdict
    expired = HealthCache(ttl=0)
    run(expired)
    run(expired)
    assert faults.handler.hits[probe] - before == 3  # ttl 0: every run tests again


def test_hostname_that_does_not_exist_is_an_error_not_clean(faults: Faults) -> None:
    """A mistyped hostname (NXDOMAIN for A and AAAA) had no address checked: saying `clean`
    with exit 0 would pass off a typo as a clean host."""
    run = run_cli("host.nxall.faults.test", "--resolver", faults.resolver, "--zones",
                  "good.faults.test,dom.faults.test:domain", *FAST, "-f", "json")
    assert run.code == 2
    [error] = run.doc["errors"]
    assert error["source"] == "host.nxall.faults.test"
    assert "does not exist (NXDOMAIN for A and AAAA)" in error["message"]
    assert "no address of it was checked" in error["message"]
    # a name that exists but has no address (a bare mail domain) is checked by name, said so
    bare = run_cli("host.nodata.faults.test", "--resolver", faults.resolver, "--zones",
                   "good.faults.test,dom.faults.test:domain", *FAST, "-f", "json")
    assert bare.code == 0
    assert any(n.startswith("host.nodata.faults.test has no A or AAAA record")
               for n in bare.doc["notes"])


@pytest.mark.parametrize(("source", "message"), [
    ("192.0.2.1", "--source: 192.0.2.1 is not an address of this machine"),
    ("::1", "--source: ::1 is IPv6 but no --resolver is"),
])
def test_unusable_source_is_one_clear_error(rbl_good: Rbldnsd, source: str,
                                            message: str) -> None:
    """A --source the queries cannot leave from is the user's mistake: one message, exit 2,
    not every list reported unusable with a socket error."""
    run = run_cli("11.22.33.44", "--resolver", rbl_good.resolver, "--zones", "clean.bl.test",
                  "--source", source)
    assert run.code == 2
    assert message in run.stderr
    assert run.stdout == ""


def test_min_lists_above_the_lists_asked_says_so(rbl_good: Rbldnsd) -> None:
    """Every list answered not-listed, yet --min-lists asks for more lists than there are:
    the error must name that, not end in an empty list of failures."""
    run = run_cli("11.22.33.50", "--resolver", rbl_good.resolver, "--zones",
                  "clean.bl.test,bl.spamcop.net", "--min-lists", "3", "-f", "json")
    assert run.code == 2
    [error] = run.doc["errors"]
    assert error["message"] == ("inconclusive, not clean: --min-lists 3 asks for more lists "
                                "than the 2 that apply to ipv4 targets, and all 2 answered "
                                "not listed")


def test_ctrl_c_ends_quietly_without_a_traceback(silent: str) -> None:
    """Ctrl-C while lists are being asked: the pending queries must be wound down inside the
    event loop, not finalised after it closed ('Event loop is closed', 'Task was destroyed')."""
    import signal
    import subprocess
    import sys

    from tests.cli.test_cli import ENV, sigint_default

    proc = subprocess.Popen(
        [sys.executable, "-m", "relayguard", "blocklist", "11.22.33.44", "--resolver", silent,
         "--source", CLIENT_IP, "--timeout", "20", "--zones", "good.faults.test"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        preexec_fn=sigint_default)
    time.sleep(1.5)  # start-up, then the self-test queries wait on the silent server
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode != 0
    for noise in ("Traceback", "Task was destroyed", "Exception ignored", "Event loop is closed"):
        assert noise not in err, err
