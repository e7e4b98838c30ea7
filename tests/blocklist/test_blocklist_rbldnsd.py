"""`relayguard blocklist` against real rbldnsd zones on loopback: listings, codes, states."""

from __future__ import annotations

import pytest
from blocklist_servers import (
    GOOD_IP,
    GOOD_IP4,
    Rbldnsd,
    catalogue_code_domain,
    catalogue_code_ip,
    findings_by,
    run_cli,
    start_rbldnsd,
    stop_rbldnsd,
)

from relayguard.blocklist.zones import ZONES, CodeClass, ZoneKind, ZoneStatus, zone_set

pytestmark = pytest.mark.server

DEFAULT_IP_ZONES = [z.name for z in zone_set("default") if z.kind is ZoneKind.IP]


def test_multi_code_listing_gives_one_finding_per_class(rbl_good: Rbldnsd) -> None:
    run = run_cli("11.22.33.44", "--resolver", rbl_good.resolver, "-f", "json")
    assert run.code == 1, run.stdout  # high findings, nothing inconclusive
    doc = run.doc
    found = findings_by(doc)
    assert set(found) == {
        ("BL-LISTED-SPAM", "11.22.33.44", "zen.spamhaus.org"),
        ("BL-LISTED-COMPROMISE", "11.22.33.44", "zen.spamhaus.org"),
        ("BL-LISTED-COMPROMISE", "11.22.33.44", "dnsbl.dronebl.org"),
    }
    assert doc["errors"] == []
    xbl = found[("BL-LISTED-COMPROMISE", "11.22.33.44", "zen.spamhaus.org")]
    assert xbl["category"] == "blocklisted"
    assert xbl["severity"] == "high" and xbl["confidence"] == "confirmed"
    dns_ev = next(e for e in xbl["evidence"] if e["kind"] == "dns")["text"]
    assert "44.33.22.11.zen.spamhaus.org. 60 IN A 127.0.0.2" in dns_ev
    assert "44.33.22.11.zen.spamhaus.org. 60 IN A 127.0.0.4" in dns_ev
    assert "IN TXT XBL: open proxy seen on 11.22.33.44" in dns_ev  # rbldnsd's $ expanded
    note = next(e for e in xbl["evidence"] if e["kind"] == "note")["text"]
    assert "meaning: 127.0.0.4 = Spamhaus XBL: exploited host" in note
    assert "class: compromise" in note
    assert "lookup: https://check.spamhaus.org/results/?query=11.22.33.44" in note
    assert "relayguard probe" in note and "open proxy" in note
    drone = found[("BL-LISTED-COMPROMISE", "11.22.33.44", "dnsbl.dronebl.org")]
    assert "DroneBL 9: open HTTP proxy" in drone["title"]
    target = doc["stats"]["targets"]["11.22.33.44"]
    assert target["verdict"] == "listed"
    assert target["applicable"] == len(DEFAULT_IP_ZONES) == 7
    assert target["answered"] == 7 and target["required"] == 4
    states = {z: v["state"] for z, v in target["lists"].items()}
    assert states == {z: "not-listed" for z in DEFAULT_IP_ZONES} | {
        "zen.spamhaus.org": "listed", "dnsbl.dronebl.org": "listed"}
    zen = target["lists"]["zen.spamhaus.org"]
    assert [(c["value"], c["class"]) for c in zen["codes"]] == [
        ("127.0.0.2", "spam"), ("127.0.0.4", "compromise")]
    assert zen["txt"] == ["SBL123 spam operation", "XBL: open proxy seen on 11.22.33.44"]
    # every default list passed its RFC 5782 self-test against the local server
    for name in DEFAULT_IP_ZONES:
        assert doc["stats"]["zones"][name]["selftest"]["ipv4"]["usable"] is True


def test_policy_listing_is_low_and_below_default_fail_on(rbl_good: Rbldnsd) -> None:
    run = run_cli("11.22.33.45", "--resolver", rbl_good.resolver, "-f", "json")
    assert run.code == 0
    found = findings_by(run.doc)
    assert list(found) == [("BL-LISTED-POLICY", "11.22.33.45", "zen.spamhaus.org")]
    assert found[("BL-LISTED-POLICY", "11.22.33.45", "zen.spamhaus.org")]["severity"] == "low"
    assert run_cli("11.22.33.45", "--resolver", rbl_good.resolver, "--fail-on",
                   "low").code == 1


def test_clean_needs_answers_and_says_so(rbl_good: Rbldnsd) -> None:
    run = run_cli("8.8.4.5", "192.168.1.1", "--resolver", rbl_good.resolver, "-f", "json")
    assert run.code == 0
    doc = run.doc
    assert doc["findings"] == [] and doc["errors"] == []
    target = doc["stats"]["targets"]["8.8.4.5"]
    assert target["verdict"] == "clean" and target["answered"] == 7
    assert {v["state"] for v in target["lists"].values()} == {"not-listed"}
    assert "8.8.4.5: clean (7 of 7 lists answered, 4 needed)" in doc["notes"]
    assert doc["stats"]["targets"]["192.168.1.1"]["verdict"] == "skipped"
    assert "192.168.1.1: skipped, a private address: public blocklists do not list it" in \
        doc["notes"]


def test_refusal_code_for_one_target_is_refused_not_listed(rbl_good: Rbldnsd) -> None:
    run = run_cli("11.0.0.255", "--resolver", rbl_good.resolver, "-f", "json")
    doc = run.doc
    assert doc["findings"] == []
    zen = doc["stats"]["targets"]["11.0.0.255"]["lists"]["zen.spamhaus.org"]
    assert zen["state"] == "refused"
    assert zen["codes"] == [{"value": "127.255.255.255", "class": "refused",
                             "meaning": "excessive number of queries from your resolver"}]
    assert "local recursive resolver" in zen["remedy"]
    assert zen["txt"] == ["Excessive number of queries"]
    # six other lists answered: still clean, but the refusal is told, not hidden
    assert doc["stats"]["targets"]["11.0.0.255"]["verdict"] == "clean"
    assert any(n.startswith("11.0.0.255: zen.spamhaus.org refused: 127.255.255.255")
               for n in doc["notes"])
    assert run.code == 0


def test_undocumented_code_and_uncatalogued_zone(rbl_good: Rbldnsd) -> None:
    run = run_cli("11.0.0.99", "11.22.33.44", "--resolver", rbl_good.resolver,
                  "--zones", "zen.spamhaus.org,custom.bl.test", "-f", "json")
    found = findings_by(run.doc)
    odd = found[("BL-LISTED-OTHER", "11.0.0.99", "zen.spamhaus.org")]
    assert "code 127.0.0.99 is not documented by zen.spamhaus.org" in odd["title"]
    custom = found[("BL-LISTED-OTHER", "11.22.33.44", "custom.bl.test")]
    assert custom["confidence"] == "likely"  # not catalogued: listed, but meaning unknown
    assert any(n.startswith("custom.bl.test is not in the catalogue") for n in run.doc["notes"])


def test_ipv6_nibbles_trie_tset_and_mapped_address(rbl_good: Rbldnsd) -> None:
    run = run_cli("2a01:4f8:1:2::25", "::ffff:11.22.33.44", "--resolver", rbl_good.resolver,
                  "-f", "json")
    doc = run.doc
    found = findings_by(doc)
    assert ("BL-LISTED-COMPROMISE", "2a01:4f8:1:2::25", "zen.spamhaus.org") in found
    assert ("BL-LISTED-SPAM", "2a01:4f8:1:2::25", "all.s5h.net") in found
    v6 = doc["stats"]["targets"]["2a01:4f8:1:2::25"]
    assert v6["kind"] == "ipv6" and v6["applicable"] == 2  # only zen and s5h do IPv6
    assert v6["lists"]["zen.spamhaus.org"]["answer"].startswith(
        "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.f.4.0.1.0.a.2.zen.spamhaus.org. ")
    assert doc["stats"]["zones"]["zen.spamhaus.org"]["selftest"]["ipv6"]["usable"] is True
    # the mapped address is the IPv4 host: checked (and listed) as 11.22.33.44
    assert doc["stats"]["targets"]["11.22.33.44"]["from"] == "::ffff:11.22.33.44"
    assert doc["stats"]["targets"]["11.22.33.44"]["verdict"] == "listed"


def test_domain_lists_bitmasks_idn_and_abused(rbl_good: Rbldnsd) -> None:
    run = run_cli("phish.example", "shop.example", "abused.example", "spam.example",
                  "Bücher.example", "clean.example", "--no-resolve",
                  "--resolver", rbl_good.resolver, "-f", "json")
    doc = run.doc
    assert set(findings_by(doc)) == {
        ("BL-LISTED-MALICIOUS", "phish.example", "dbl.spamhaus.org"),
        ("BL-LISTED-MALICIOUS", "shop.example", "multi.surbl.org"),  # bit 8 PH
        ("BL-LISTED-ABUSED", "shop.example", "multi.surbl.org"),  # bit 128 CR
        ("BL-LISTED-ABUSED", "abused.example", "dbl.spamhaus.org"),
        ("BL-LISTED-SPAM", "spam.example", "multi.uribl.com"),
        ("BL-LISTED-SPAM", "xn--bcher-kva.example", "dbl.spamhaus.org"),
    }
    shop = doc["stats"]["targets"]["shop.example"]["lists"]["multi.surbl.org"]
    assert [(c["value"], c["meaning"]) for c in shop["codes"]] == [
        ("127.0.0.136", "SURBL PH: phishing"),
        ("127.0.0.136", "SURBL CR: cracked (compromised) site")]
    assert doc["stats"]["targets"]["clean.example"]["verdict"] == "clean"
    assert doc["stats"]["targets"]["xn--bcher-kva.example"]["from"] == "Bücher.example"
    for name in ("dbl.spamhaus.org", "multi.surbl.org", "multi.uribl.com"):
        assert doc["stats"]["zones"][name]["selftest"]["domain"]["usable"] is True
    assert run.code == 1


def test_reputation_good_values_are_not_listings(rbl_good: Rbldnsd) -> None:
    run = run_cli("11.22.33.46", "11.22.33.47", "--resolver", rbl_good.resolver,
                  "--zones", "rep.mailspike.net", "-f", "json")
    doc = run.doc
    good = doc["stats"]["targets"]["11.22.33.46"]
    assert good["verdict"] == "clean"
    assert good["lists"]["rep.mailspike.net"]["state"] == "not-listed"
    assert good["lists"]["rep.mailspike.net"]["codes"][0]["class"] == "good"
    assert set(findings_by(doc)) == {("BL-LISTED-SPAM", "11.22.33.47", "rep.mailspike.net")}


@pytest.mark.parametrize("zone_index", [i for i, z in enumerate(ZONES)
                                        if z.status is ZoneStatus.LIVE])
def test_every_catalogued_code_is_decoded(rbl_good: Rbldnsd, zone_index: int) -> None:
    """One rbldnsd entry per catalogue code: state, class and meaning come back as declared."""
    zone = ZONES[zone_index]
    values = list(zone.codes) or [f"127.0.0.{bit}" for bit in zone.bits]
    if zone.kind is ZoneKind.IP:
        targets = [catalogue_code_ip(zone_index, i) for i in range(len(values))]
    else:
        targets = [catalogue_code_domain(i) for i in range(len(values))]
    run = run_cli(*targets, "--no-resolve", "--zones", zone.name, "--resolver",
                  rbl_good.resolver, "--rate", "0", "-f", "json")
    stats = run.doc["stats"]["targets"]
    for target, value in zip(targets, values, strict=True):
        result = stats[target]["lists"][zone.name]
        expected = ([zone.codes[value]] if zone.codes else [zone.bits[int(value.split(".")[3])]])
        assert [(c["value"], c["meaning"], c["class"]) for c in result["codes"]] == [
            (value, e.meaning, e.cls.value) for e in expected], target
        cls = expected[0].cls
        want = ("refused" if cls is CodeClass.REFUSED else
                "not-listed" if cls is CodeClass.GOOD else "listed")
        assert result["state"] == want, (target, value)


def test_refusing_spamhaus_is_unusable_and_target_inconclusive(rbl_bad: Rbldnsd) -> None:
    run = run_cli("11.22.33.44", "--resolver", rbl_bad.resolver, "--zones",
                  "zen.spamhaus.org", "-f", "json")
    assert run.code == 2
    doc = run.doc
    assert doc["findings"] == []  # pydnsbl would call this "blacklisted"
    zen = doc["stats"]["zones"]["zen.spamhaus.org"]["selftest"]["ipv4"]
    assert zen["usable"] is False and zen["reason"] == "refused"
    assert "127.255.255.254" in zen["detail"]
    state = doc["stats"]["targets"]["11.22.33.44"]["lists"]["zen.spamhaus.org"]
    assert state["state"] == "unusable" and "unbound" in state["remedy"]
    assert [e["source"] for e in doc["errors"]] == ["11.22.33.44"]
    assert doc["errors"][0]["message"].startswith("inconclusive, not clean: only 0 of 1 lists")
    assert any(n.startswith("next step:") and "DQS" in n for n in doc["notes"])


def test_dead_wildcard_and_empty_lists_are_unusable(rbl_bad: Rbldnsd) -> None:
    run = run_cli("11.22.33.44", "--resolver", rbl_bad.resolver, "--zones",
                  "dnsbl.ahbl.org,wild.bl.test,dnsbl.njabl.org,clean.bl.test", "-f", "json")
    doc = run.doc
    assert doc["findings"] == []
    tests = {z: v["selftest"]["ipv4"] for z, v in doc["stats"]["zones"].items()}
    assert {z: (t["usable"], t["reason"]) for z, t in tests.items()} == {
        "dnsbl.ahbl.org": (False, "wildcard"), "wild.bl.test": (False, "wildcard"),
        "dnsbl.njabl.org": (False, "empty"), "clean.bl.test": (True, "ok")}
    assert "1.0.0.127.wild.bl.test. 60 IN A 127.0.0.2" in tests["wild.bl.test"]["answers"]
    target = doc["stats"]["targets"]["11.22.33.44"]
    assert (target["verdict"], target["answered"], target["required"]) == ("inconclusive", 1, 2)
    assert run.code == 2
    assert any(n.startswith("dnsbl.ahbl.org is marked dead in the catalogue")
               for n in doc["notes"])
    # the same answers are enough when the user asks for only one usable list
    relaxed = run_cli("11.22.33.44", "--resolver", rbl_bad.resolver, "--zones",
                      "dnsbl.ahbl.org,wild.bl.test,clean.bl.test,clean2.bl.test", "-f", "json")
    assert relaxed.doc["stats"]["targets"]["11.22.33.44"]["verdict"] == "clean"
    assert relaxed.code == 0


def test_text_output_explains_inconclusive(rbl_bad: Rbldnsd) -> None:
    run = run_cli("11.22.33.44", "--resolver", rbl_bad.resolver, "--zones",
                  "zen.spamhaus.org,dnsbl.ahbl.org")
    assert run.code == 2
    assert "could not be completed (the result is incomplete, not clean)" in run.stdout
    assert "inconclusive, not clean" in run.stdout
    assert "wildcard" in run.stdout and "refused" in run.stdout


def test_every_output_format_renders(rbl_good: Rbldnsd) -> None:
    for fmt in ("text", "json", "sarif", "markdown", "html"):
        run = run_cli("11.22.33.44", "--resolver", rbl_good.resolver, "-f", fmt)
        assert run.code == 1, (fmt, run.stderr)
        assert "11.22.33.44" in run.stdout


def test_a_dqs_key_never_appears_in_a_report() -> None:
    """A Spamhaus DQS key is part of the zone name (`<key>.zen.dq.spamhaus.net`) and was
    printed in titles, evidence (query names) and stats: reports get shared, keys are paid
    for. Every format now shows its first four characters only — the listing itself is
    unchanged (decoded with zen's codes). A real rbldnsd serves the keyed zone on loopback."""
    key = "k3ysecretvalue99"
    zone = f"{key}.zen.dq.spamhaus.net"
    server = start_rbldnsd(GOOD_IP, [(zone, "ip4set", GOOD_IP4)])
    try:
        for fmt in ("json", "text", "markdown", "html", "sarif"):
            run = run_cli("11.22.33.44", "--resolver", server.resolver, "--zones", zone,
                          "--timeout", "0.5", "--format", fmt)
            assert run.code == 1, run.stdout + run.stderr  # listed
            assert key not in run.stdout + run.stderr, fmt
            assert "k3ys...(key).zen.dq.spamhaus.net" in run.stdout.replace("\n", ""), fmt
        doc = run_cli("11.22.33.44", "--resolver", server.resolver, "--zones", zone,
                      "--timeout", "0.5", "--format", "json").doc
        assert "BL-LISTED-SPAM" in {f["rule"] for f in doc["findings"]}
    finally:
        stop_rbldnsd(server)
