"""The pure parts of scan: /proc parsing, correlation, verdicts, inventory, Nagios states."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relayguard.errors import InputError
from relayguard.findings import (
    Category,
    Confidence,
    ErrorEntry,
    Finding,
    Location,
    Report,
    Severity,
)
from relayguard.report.nagios import NagiosState, nagios_state, render_nagios
from relayguard.scan.correlate import stories, verdict
from relayguard.scan.discover import (
    Listener,
    listeners,
    other_addresses,
    parse_proc_net,
    ports_serving,
)
from relayguard.scan.inventory import load_inventory
from relayguard.scan.sources import choose_source, trusted_networks

PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0A000A7F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
   1: 00000000:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2
   2: 0A000A7F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A
   1: 0000000000000000FFFF00000A000A7F:0BB8 00000000000000000000000000000000:0000 0A
"""


def test_proc_net_listeners_are_parsed() -> None:
    assert parse_proc_net(PROC_TCP) == [Listener("127.10.0.10", 8080), Listener("0.0.0.0", 25)]
    assert parse_proc_net(PROC_TCP6) == [Listener("::1", 80), Listener("127.10.0.10", 3000)]


def test_ports_serving_respects_bound_addresses() -> None:
    socks = [Listener("127.0.10.40", 8080), Listener("0.0.0.0", 25), Listener("::", 443)]
    assert ports_serving("127.0.10.40", socks) == [25, 443, 8080]
    assert ports_serving("127.0.10.41", socks) == [25, 443]
    assert ports_serving("::1", socks) == [443]


def test_a_real_listening_socket_is_found() -> None:
    with socket.socket() as s:
        s.bind(("127.0.10.40", 0))
        s.listen()
        port = s.getsockname()[1]
        assert Listener("127.0.10.40", port) in listeners()
    assert Listener("127.0.10.40", port) not in listeners()


def _f(rule: str, cat: Category, sev: Severity = Severity.HIGH,
       conf: Confidence = Confidence.LIKELY, fix: str | None = None) -> Finding:
    return Finding(rule, cat, sev, conf, f"title {rule}", Location(host="192.0.2.1", port=8080),
                   fix=fix)


def test_blocklisting_joins_the_proxy_story() -> None:
    told = stories([
        _f("PROBE-CONNECT-SMTP", Category.SMTP_VIA_PROXY, Severity.CRITICAL,
           Confidence.CONFIRMED, fix="probe fix"),
        _f("APACHE-OPEN-FORWARD-PROXY", Category.OPEN_HTTP_PROXY, Severity.LOW,
           fix="ProxyRequests Off"),
        _f("LOGS-PROXY-SMTP", Category.PROXY_ABUSE),
        _f("BL-LISTED-COMPROMISE", Category.BLOCKLISTED),
        _f("POSTFIX-MYNETWORKS-OPEN", Category.OPEN_SMTP_RELAY, Severity.MEDIUM),
        _f("APACHE-PROXYVIA", Category.HARDENING, Severity.INFO),
    ])
    assert [s.key for s in told] == ["proxy", "mail", "hardening"]
    proxy = told[0]
    assert proxy.sources == ["audit", "probe", "logs", "blocklist"]
    assert proxy.fix() == "ProxyRequests Off"  # the config change comes first
    assert proxy.severity is Severity.CRITICAL and proxy.confidence is Confidence.CONFIRMED
    assert {f.rule for f in told[1].findings} == {"POSTFIX-MYNETWORKS-OPEN"}


def test_blocklisting_alone_is_its_own_story() -> None:
    told = stories([_f("BL-LISTED-SPAM", Category.BLOCKLISTED)])
    assert [(s.key, s.headline()) for s in told] == [
        ("blocklisted", "The host is on DNS blocklists")]


def _listing(rule: str, host: str, sev: Severity = Severity.HIGH) -> Finding:
    return Finding(rule, Category.BLOCKLISTED, sev, Confidence.CONFIRMED,
                   f"{host} is listed", Location(host=host))


def test_policy_reputation_and_domain_listings_are_told_apart() -> None:
    proxy = _f("PROBE-CONNECT-SMTP", Category.SMTP_VIA_PROXY, Severity.CRITICAL)
    pbl = _listing("BL-LISTED-POLICY", "192.0.2.1", Severity.LOW)
    dbl = _listing("BL-LISTED-SPAM", "mail.example.com")
    other = _listing("BL-LISTED-OTHER", "192.0.2.1", Severity.MEDIUM)
    told = stories([proxy, pbl, dbl, other])
    assert [s.key for s in told] == ["proxy", "listings"]
    assert told[0].findings == [proxy]
    assert "blocklisted" not in told[0].headline()
    assert told[1].findings == [pbl, dbl, other]
    assert told[1].headline() == ("Other blocklist listings (other, policy, spam): not caused "
                                  "by a relay path; each says what it means and how to get "
                                  "off it")
    # a compromise listing of the host's address is what the open proxy caused
    xbl = _listing("BL-LISTED-COMPROMISE", "192.0.2.1")
    told = stories([proxy, pbl, xbl])
    assert told[0].findings == [proxy, xbl]
    assert told[0].headline().endswith("; the host is blocklisted for it")
    assert told[1].findings == [pbl]
    # only a policy listing: no relay story, no "blocklisted for it", not LISTED either
    assert [s.key for s in stories([pbl])] == ["listings"]
    assert verdict([pbl], []) == "AT-RISK"


def _incident(kind: str, category: str, first: str, last: str, verdict: str,
              finding: Finding | None = None) -> dict[str, object]:
    """An incident as `logs` puts it in stats (only the fields stories read)."""
    return {"kind": kind, "category": category, "verdict": verdict,
            "first_seen": f"2026-03-01T{first}:00Z", "last_seen": f"2026-03-01T{last}:59Z",
            **({"finding": finding.fingerprint()} if finding else {})}


def test_spikes_follow_the_relaying_they_happened_with() -> None:
    proxy = _f("LOGS-PROXY-SMTP", Category.PROXY_ABUSE, Severity.CRITICAL)
    relay = _f("LOGS-SMTP-RELAYED", Category.RELAY_ABUSE, Severity.CRITICAL)
    during = _f("LOGS-VOLUME-SPIKE", Category.VOLUME_ANOMALY, Severity.MEDIUM,
                Confidence.CONFIRMED)
    bounces = replace(during, rule="LOGS-MAIL-FAILURE-SPIKE", title="bounces")
    later = replace(during, title="two hours later")
    incidents = [
        _incident("proxy-smtp", "proxy-abuse", "10:00", "10:05", "relayed", proxy),
        _incident("smtp-relayed", "relay-abuse", "10:10", "10:15", "relayed", relay),
        _incident("volume-spike", "volume-anomaly", "10:50", "10:52", "observed", during),
        _incident("mail-outcome-spike", "volume-anomaly", "10:12", "10:12", "observed",
                  bounces),
        _incident("volume-spike", "volume-anomaly", "12:30", "12:30", "observed", later),
    ]
    told = {s.key: s for s in stories([proxy, relay, during, bounces, later], incidents)}
    assert told["proxy"].findings == [proxy, during]  # within the hour after the relaying
    assert told["mail"].findings == [relay, bounces]  # bounces follow the mail relaying
    assert told["volume"].findings == [later]  # long after: told alone, no relay claimed
    assert "no relaying was seen at the same time" in told["volume"].headline()
    assert told["proxy"].followed() == [
        "the server slowed down under a flood of requests: title LOGS-VOLUME-SPIKE"]
    # the spike is a consequence, not proof: it does not raise the story's confidence
    assert told["proxy"].confidence is Confidence.LIKELY
    assert told["volume"].followed() == []
    # relaying that was refused, or no incidents at all: the spike is its own story
    refused = [_incident("proxy-smtp", "proxy-abuse", "10:00", "10:05", "refused", proxy),
               incidents[2]]
    assert [s.key for s in stories([proxy, during], refused)] == ["proxy", "volume"]
    assert [s.key for s in stories([proxy, during])] == ["proxy", "volume"]


@pytest.mark.parametrize(("findings", "errors", "word"), [
    ([_f("PROBE-SOCKS5", Category.OPEN_SOCKS_PROXY)], [], "OPEN"),
    ([_f("LOGS-SMTP-RELAYED", Category.RELAY_ABUSE)], [], "ABUSED"),
    ([_f("BL-LISTED-SPAM", Category.BLOCKLISTED)], [], "LISTED"),
    ([_f("X", Category.OPEN_HTTP_PROXY, Severity.MEDIUM)], [ErrorEntry("a", "b")],
     "INCOMPLETE"),
    ([_f("X", Category.OPEN_HTTP_PROXY, Severity.MEDIUM)], [], "AT-RISK"),
    ([_f("X", Category.OPEN_HTTP_PROXY, Severity.HIGH)], [ErrorEntry("a", "b")], "OPEN"),
    ([_f("X", Category.HARDENING, Severity.INFO)], [ErrorEntry("a", "b")], "INCOMPLETE"),
    ([_f("X", Category.HARDENING, Severity.INFO)], [], "CLEAN"),
    ([], [], "CLEAN"),
])
def test_verdicts(findings: list[Finding], errors: list[ErrorEntry], word: str) -> None:
    assert verdict(findings, errors) == word


def test_source_outside_the_mtas_trusted_networks_is_picked() -> None:
    nets = trusted_networks([{"server": "postfix", "listen": ["127.0.10.1:25"],
                              "trusted_networks": ["127.0.10.250/32", "!127.0.10.251"]}])
    source, notes = choose_source(["127.0.10.1"], None, nets, own_host=True)
    assert source == "127.0.10.251"
    assert notes == ["probes are sent from 127.0.10.251, an address no audited MTA trusts, so "
                     "they get a stranger's answers"]
    every = trusted_networks([{"trusted_networks": ["127.0.0.0/8"]}])
    source, notes = choose_source(["127.0.10.1"], None, every, own_host=True)
    assert source == "127.0.10.250"
    assert notes[0].startswith("TRUSTED SOURCE: the probes come from 127.0.10.250, which mta")


def test_ipv6_loopback_has_no_loopback_neighbour_to_probe_from() -> None:
    nets = trusted_networks([{"trusted_networks": ["127.0.0.0/8", "[::1]/128"]}])
    source, notes = choose_source(["::1"], None, nets, own_host=True)
    assert source is None
    assert notes[0].startswith("TRUSTED SOURCE: this host is probing itself")
    # mixed families: one source address cannot serve both
    source, _ = choose_source(["::1", "127.0.10.1"], None, nets, own_host=True)
    assert source is None


def test_own_address_is_probed_from_another_untrusted_address_of_the_machine() -> None:
    local = ["127.0.0.1", "198.51.100.4", "198.51.100.9", "fe80::1", "2001:db8::4"]
    nets = trusted_networks([{"server": "postfix", "listen": ["*:25"],
                              "trusted_networks": ["127.0.0.0/8", "198.51.100.4/32"]}])
    source, notes = choose_source(["198.51.100.4"], None, nets, own_host=True, local=local)
    assert source == "198.51.100.9"
    assert notes == ["probes are sent from 198.51.100.9, an address no audited MTA trusts, so "
                     "they get a stranger's answers"]
    # every other address is trusted too: the kernel chooses, and the plain note is kept
    wide = trusted_networks([{"trusted_networks": ["198.51.100.0/24"]}])
    source, notes = choose_source(["198.51.100.4"], None, wide, own_host=True, local=local)
    assert source is None and notes[0].startswith("TRUSTED SOURCE: this host is probing itself")
    # IPv6 own address: the other global IPv6 address only (never link-local, never IPv4)
    source, _ = choose_source(["2001:db8::4"], None, nets, own_host=True,
                              local=[*local, "2001:db8::7"])
    assert source == "2001:db8::7"
    # a remote target is never probed from a picked address
    assert choose_source(["203.0.113.5"], None, nets, own_host=False, local=local)[0] is None


def test_services_on_other_addresses_of_the_machine_are_included() -> None:
    socks = [Listener("0.0.0.0", 25), Listener("198.51.100.4", 8080),
             Listener("198.51.100.9", 3128), Listener("127.0.0.1", 5432),
             Listener("fe80::1", 1080), Listener("::", 443)]
    extra, note = other_addresses("198.51.100.4", socks)
    assert extra == [("198.51.100.9", 3128)]
    assert note == ("also probed at their own address (bound to another address of this "
                    "machine than 198.51.100.4): 198.51.100.9:3128; bound to link-local "
                    "addresses, not probed (they need an interface scope): [fe80::1]:1080")
    assert other_addresses("198.51.100.4", socks[:2]) == ([], "")


def _report(*sevs: Severity, errors: int = 0) -> Report:
    return Report("scan", tuple(_f(f"R{i}", Category.OPEN_HTTP_PROXY, s)
                                for i, s in enumerate(sevs)),
                  tuple(ErrorEntry("x", "y") for _ in range(errors)),
                  {"host": "h", "verdict": "X", "stories": [{"headline": "hl"}]})


@pytest.mark.parametrize(("report", "state"), [
    (_report(Severity.CRITICAL, errors=1), NagiosState.CRITICAL),
    (_report(Severity.MEDIUM), NagiosState.WARNING),
    (_report(Severity.LOW, errors=1), NagiosState.UNKNOWN),
    (_report(Severity.INFO), NagiosState.OK),
])
def test_nagios_states(report: Report, state: NagiosState) -> None:
    assert nagios_state([report]) is state
    line, got = render_nagios([report])
    assert got is state and line.startswith(f"RELAYGUARD {state.name} - ")


def test_nagios_line_cannot_be_broken_by_finding_text() -> None:
    r = Report("scan", (_f("R", Category.OPEN_HTTP_PROXY, Severity.HIGH),), (),
               {"host": "h|x", "verdict": "OPEN", "stories": [{"headline": "a | b\nc\x1b[31m"}]})
    line, _ = render_nagios([r])
    assert line.count("|") == 1 and line.count("\n") == 1 and "\x1b" not in line


def test_inventory_parses_defaults_and_relative_paths(tmp_path: Path) -> None:
    inv = tmp_path / "sites.toml"
    inv.write_text('[defaults]\nports = [25, 3128]\n[[site]]\nname = "a"\nhost = "a.example"\n'
                   'config_root = "backup/a"\nlogs = "logs/a.log"\n'
                   '[[site]]\nname = "b"\nhost = "192.0.2.7"\nports = [8080]\n')
    a, b = load_inventory(inv)
    assert (a.name, a.host, a.ports, a.config_root, a.logs) == (
        "a", "a.example", (25, 3128), tmp_path / "backup/a", (str(tmp_path / "logs/a.log"),))
    assert (b.ports, b.discover_local) == ((8080,), False)


@pytest.mark.parametrize(("text", "message"), [
    ("", "no [[site]] entries"),
    ("[[site]]\nhost = 'x'\n", "`name` is required"),
    ("[[site]]\nname = 'a'\n", "site 'a': `host` is required"),
    ("[[site]]\nname='a'\nhost='x'\nports=[0]\n", "`ports` must be a non-empty list"),
    ("[[site]]\nname='a'\nhost='x'\n[[site]]\nname='a'\nhost='y'\n", "duplicate name"),
    ("[[site]]\nname='a'\nhost='x'\nport=1\n", "unknown key(s) port"),
    ("[[site]\n", "not valid TOML"),
    ("site = 3\n", "no [[site]] entries"),
])
def test_bad_inventories_are_input_errors(tmp_path: Path, text: str, message: str) -> None:
    inv = tmp_path / "bad.toml"
    inv.write_text(text)
    with pytest.raises(InputError) as err:
        load_inventory(inv)
    assert message in err.value.message


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_inventory_fuzz_never_tracebacks(tmp_path_factory: pytest.TempPathFactory,
                                         text: str) -> None:
    inv = tmp_path_factory.mktemp("fuzz") / "sites.toml"
    inv.write_text(text, encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(InputError):
        load_inventory(inv)


_KEYS = ["name", "host", "ports", "configs", "logs", "config_root", "public_addresses",
         "mail_domains", "bogus"]
_VALUES = ['"a"', "1", "[1, 2]", '["p"]', "[]", "true", "[70000]", "{a = 1}", '""', "[true]"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(_KEYS), st.sampled_from(_VALUES)),
                         max_size=8), min_size=1, max_size=3))
def test_inventory_structured_fuzz_never_tracebacks(
        tmp_path_factory: pytest.TempPathFactory, sites: list[list[tuple[str, str]]]) -> None:
    text = ""
    for entries in sites:
        text += "[[site]]\n" + "".join(f"{k} = {v}\n" for k, v in dict(entries).items())
    inv = tmp_path_factory.mktemp("fuzz") / "sites.toml"
    inv.write_text(text)
    try:
        for site in load_inventory(inv):
            assert site.name and site.host
    except InputError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="0123456789ABCDEFG", max_size=40),
                          st.text(alphabet="0123456789ABCDEFxy", max_size=6),
                          st.sampled_from(["0A", "01", "0a", ""])), max_size=6))
def test_proc_net_parser_never_raises(rows: list[tuple[str, str, str]]) -> None:
    text = "header\n" + "\n".join(f"  {i}: {a}:{p} 00000000:0000 {st_}"
                                   for i, (a, p, st_) in enumerate(rows))
    for s in parse_proc_net(text):
        assert 0 < s.port < 65536


def test_fleet_markdown_table_renders_site_text_literally() -> None:
    """Site names and headlines land in a Markdown table: HTML, links and `|` must render as
    themselves in their own cell."""
    from relayguard.scan.render import fleet_header

    row = {"site": "a <b>x</b> | y", "host": "203.0.113.7", "verdict": "OPEN",
           "findings": 1, "errors": 0, "headline": "[click](http://evil.example) `x`"}
    text = fleet_header(Report("scan", stats={"sites": 1, "verdict": "OPEN", "fleet": [row]}),
                        md=True)
    line = next(ln for ln in text.splitlines() if "evil" in ln)
    assert "\\<b\\>" in line and "\\[click\\]" in line and "\\`x\\`" in line
    assert len(line.replace("\\|", "").split("|")) == 8  # six cells between the pipes


def test_nagios_ok_says_which_checks_did_not_run() -> None:
    """OK after --no-probe must not read as a probed host: the line names what did not run."""
    r = Report("scan", (), (), {"host": "h", "verdict": "CLEAN", "stories": [],
                                "not_run": ["probe", "logs (no log file)"]})
    line, state = render_nagios([r])
    assert state is NagiosState.OK
    assert line.startswith("RELAYGUARD OK - h: no relay path for strangers (not run: probe, "
                           "logs (no log file)) | ")
