"""`relayguard scan` end to end against real Apache, Postfix and rbldnsd on loopback.

The open host is the incident (open forward proxy, CONNECT to 25, a loopback-trusting Postfix,
spam already in the logs, a blocklist listing); the closed host is the same software fixed.
Every output format is produced by the real CLI in a subprocess and checked for what it says.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import ENV
from tests.scan.conftest import LISTED, OPEN_IP, WEB, Host, blocklist_args

pytestmark = pytest.mark.server

OPEN_RULES = {
    # config
    "APACHE-OPEN-FORWARD-PROXY", "APACHE-OPEN-CONNECT-PROXY", "APACHE-CONNECT-SMTP-PORT",
    "CROSS-PROXY-TO-LOCAL-MTA",
    # probe (canary-confirmed)
    "PROBE-CONNECT", "PROBE-CONNECT-SMTP", "PROBE-HTTP-ABSOLUTE-URI", "PROBE-HTTP-SMTP",
    # logs (the fixture's three spammers)
    "LOGS-PROXY-SMTP",
    # blocklist (DroneBL 9: open HTTP proxy, from the local rbldnsd)
    "BL-LISTED-COMPROMISE",
}


def scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relayguard", "scan", *args],
                          capture_output=True, text=True, timeout=120, env=ENV)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('hist')}/scan.sqlite"


@pytest.fixture(scope="module")
def open_json(open_host: Host, dnsbl: Any, db: str) -> dict[str, Any]:
    done = scan(*open_host.cli_args(), *blocklist_args(dnsbl), "--format", "json", "--db", db)
    assert done.returncode == 1, done.stderr
    return json.loads(done.stdout)


def test_open_host_every_kind_of_evidence_finds_the_hole(open_json: dict[str, Any]) -> None:
    assert {f["rule"] for f in open_json["findings"]} == OPEN_RULES
    assert open_json["errors"] == []
    by_rule = {f["rule"]: f for f in open_json["findings"]}
    for rule in ("PROBE-CONNECT-SMTP", "PROBE-HTTP-SMTP"):
        assert by_rule[rule]["confidence"] == "confirmed"
        assert by_rule[rule]["severity"] == "critical"
        assert by_rule[rule]["target"] == f"{OPEN_IP}:{WEB}"
    assert by_rule["LOGS-PROXY-SMTP"]["location"]["path"].endswith("access.snapshot.log")
    assert by_rule["BL-LISTED-COMPROMISE"]["target"] == LISTED
    stats = open_json["stats"]
    assert stats["verdict"] == "OPEN"
    assert stats["ports"] == {"considered": [25, 8080], "open": [25, 8080]}
    assert stats["evidence"] == {"audit": 4, "probe": 4, "logs": 1, "blocklist": 1}


def test_open_host_is_one_story_told_once_with_the_fix_first(open_json: dict[str, Any]) -> None:
    stories = open_json["stats"]["stories"]
    assert len(stories) == 1
    story = stories[0]
    assert story["key"] == "proxy"
    assert story["evidence"] == ["audit", "probe", "logs", "blocklist"]
    assert set(story["rules"]) == OPEN_RULES
    assert story["severity"] == "critical" and story["confidence"] == "confirmed"
    assert story["fix"].startswith("If this server is not meant to be a forward proxy: "
                                   "`ProxyRequests Off`.")
    assert "port 25" in story["headline"] and "abused" in story["headline"]
    assert "blocklisted" in story["headline"]
    assert len(story["findings"]) == len(open_json["findings"])


def test_trusted_probe_source_is_said_plainly(open_json: dict[str, Any]) -> None:
    notes = open_json["notes"]
    assert open_json["stats"]["probe_source"] == "127.0.10.250"
    trusted = [n for n in notes if n.startswith("TRUSTED SOURCE: the probes come from "
                                                 "127.0.10.250, which postfix")]
    assert len(trusted) == 1
    # Postfix relays for 127.0.0.0/8 by design: that is not reported as an open relay.
    assert "PROBE-SMTP-RELAY" not in {f["rule"] for f in open_json["findings"]}
    assert f"{OPEN_IP}:25: the MTA accepted relaying from 127.0.10.250, an address it trusts; " \
           "that is its trusted-client policy, not proof of an open relay (verdict withheld)" \
           in notes


def test_closed_host_is_clean(closed_host: Host, dnsbl: Any, db: str) -> None:
    done = scan(*closed_host.cli_args(), *blocklist_args(dnsbl, "11.22.33.45"),
                "--format", "json", "--db", db)
    assert done.returncode == 0, done.stderr + done.stdout
    doc = json.loads(done.stdout)
    # Stock Debian module set with the proxy off: only the hardening note remains.
    assert [f["rule"] for f in doc["findings"]] == ["APACHE-PROXY-MODULES-UNUSED"]
    assert doc["stats"]["verdict"] == "CLEAN"
    assert doc["errors"] == []
    assert "probes are sent from 127.0.10.250, an address no audited MTA trusts, so they get " \
           "a stranger's answers" in doc["notes"]
    assert doc["stats"]["blocklist"]["targets"]["11.22.33.45"]["verdict"] == "clean"


def test_text_report_leads_with_verdict_and_fix(open_host: Host, dnsbl: Any, db: str) -> None:
    done = scan(*open_host.cli_args(), *blocklist_args(dnsbl), "--db", db)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"relayguard scan: {OPEN_IP}  VERDICT OPEN"
    assert lines[1] == "strangers can make this host relay"
    story = lines.index("What to do, most urgent first:")
    assert lines[story + 2].startswith("1. CRITICAL, confirmed: Strangers can relay through an "
                                       f"open proxy ({OPEN_IP}:{WEB})")
    assert lines[story + 3] == "   FIX FIRST: If this server is not meant to be a forward " \
                               "proxy: `ProxyRequests Off`."
    assert "evidence agreeing: config, probe, logs, blocklist" in done.stdout
    # then the detailed findings, worst first
    assert "relayguard scan: 10 finding(s): 4 critical, 3 high, 3 low" in done.stdout
    assert "\x1b[" not in done.stdout


def test_markdown_report_for_a_ticket(open_host: Host, dnsbl: Any, db: str) -> None:
    done = scan(*open_host.cli_args(), *blocklist_args(dnsbl), "--format", "markdown",
                "--db", db)
    assert done.returncode == 1, done.stderr
    md = done.stdout
    assert md.startswith(f"## relayguard scan: {OPEN_IP} — OPEN\n")
    assert "### What to do, most urgent first" in md
    assert "1. **CRITICAL, confirmed: Strangers can relay through an open proxy" in md
    assert "   - **fix first:**" in md
    for rule in OPEN_RULES:
        assert rule in md


def test_sarif_report(open_host: Host, dnsbl: Any, db: str) -> None:
    done = scan(*open_host.cli_args(), *blocklist_args(dnsbl), "--format", "sarif",
                "--db", db)
    assert done.returncode == 1, done.stderr
    sarif = json.loads(done.stdout)
    assert sarif["version"] == "2.1.0"
    results = sarif["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == OPEN_RULES
    apache = next(r for r in results if r["ruleId"] == "APACHE-OPEN-FORWARD-PROXY")
    where = apache["locations"][0]["physicalLocation"]
    assert where["artifactLocation"]["uri"].endswith("body.conf")
    assert where["region"]["startLine"] == 1


def test_html_report_is_self_contained(open_host: Host, dnsbl: Any, db: str,
                                       tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    done = scan(*open_host.cli_args(), *blocklist_args(dnsbl), "--format", "html",
                "--output", str(out), "--db", db)
    assert done.returncode == 1, done.stderr
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "http-equiv" not in page
    assert not re.search(r"""(src|href)=["']?https?:""", page)
    assert "OPEN" in page and "ProxyRequests Off" in page
    for rule in OPEN_RULES:
        assert rule in page


def test_unreachable_host_is_an_error_not_clean(db: str) -> None:
    done = scan("127.0.10.99", "--ports", "8080,25", "--no-blocklist", "--no-logs",
                "--no-audit", "--format", "json", "--db", db)
    assert done.returncode == 2, done.stderr
    doc = json.loads(done.stdout)
    assert doc["stats"]["verdict"] == "INCOMPLETE"
    assert [e["source"] for e in doc["errors"]] == ["127.0.10.99"]
    assert doc["errors"][0]["message"].startswith("unreachable: none of 2 port(s) accepted")


@pytest.mark.parametrize(("args", "message"), [
    (["--ports", "0"], "--ports"),
    (["--source-address", "nope"], "--source-address 'nope' is not an IP address"),
    (["--timeout", "0"], "--timeout must be between"),
    (["--inventory", "/nonexistent.toml"], "give a HOST or --inventory, not both"),
    (["--db", "nosuchdialect://x"], "cannot open history store"),
    (["--zones", "x:bogus"], "kind must be `ip` or `domain`"),
    (["--resolver", "dns.example"], "'dns.example' is not an IP address"),
])
def test_bad_options_exit_2_with_a_message(args: list[str], message: str) -> None:
    done = scan("127.0.10.99", *args, "--no-probe", "--no-blocklist")
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_ipv6_loopback_target_is_scanned_not_a_traceback(db: str) -> None:
    """::1 has no loopback neighbour to probe from (127.x is another family): the scan runs
    from the kernel's choice and says the source is this host itself."""
    import socket

    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = scan("::1", "--ports", str(port), "--no-audit", "--no-logs", "--no-blocklist",
                    "--format", "json", "--db", db, "--timeout", "0.5", "--max-time", "20")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 2), done.stderr
    doc = json.loads(done.stdout)
    assert doc["stats"]["address"] == "::1" and doc["stats"]["probe_source"] is None
    assert doc["stats"]["ports"]["open"] == [port]
    assert any(n.startswith("TRUSTED SOURCE: this host is probing itself") for n in doc["notes"])


@pytest.mark.parametrize("ports", [[], ["--ports", "1080"]])
def test_every_address_of_the_site_name_is_scanned(tmp_path: Path, ports: list[str]) -> None:
    """The site's name has two addresses and the open SOCKS proxy listens on the second only;
    found whether its ports are read from this machine's listeners or given."""
    from tests.servers.hosts import with_hosts
    from tests.servers.microsocks import microsocks

    argv = with_hosts([sys.executable, "-m", "relayguard", "scan", "twoaddr.test", *ports,
                       "--no-blocklist", "--no-logs", "--no-audit", "--no-history",
                       "--timeout", "2", "--format", "json"],
                      {"twoaddr.test": ["127.0.10.35", "127.0.10.36"]}, tmp_path)
    with microsocks("127.0.10.36", 1080):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert {f["target"] for f in doc["findings"]} == {"127.0.10.36:1080"}
    assert doc["stats"]["verdict"] == "OPEN"
    assert doc["stats"]["ports"]["other_addresses"] == ["127.0.10.36:1080"]
    assert any("twoaddr.test resolves to 2 addresses" in n for n in doc["notes"]), doc["notes"]


def test_canary_behind_nat_with_canary_bind(tmp_path: Path) -> None:
    """`scan --canary-bind`: the canary listens on one address and targets are told another
    (NAT in between); the relayed connections still reach it and confirm the open proxy."""
    from tests.servers.microsocks import microsocks
    from tests.servers.nat import one_to_one_nat

    public, private, proxy = "127.0.10.67", "127.0.10.68", "127.0.10.69"
    with one_to_one_nat(public, private), microsocks(proxy, 1080):
        done = scan(proxy, "--ports", "1080", "--canary-host", public, "--canary-bind",
                    private, "--no-blocklist", "--no-logs", "--no-audit", "--no-history",
                    "--timeout", "2", "--format", "json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["errors"] == []
    assert {f["rule"] for f in doc["findings"]} == {"PROBE-SOCKS5", "PROBE-SOCKS-SMTP"}
    assert {f["confidence"] for f in doc["findings"]} == {"confirmed"}
    transcripts = "\n".join(e["text"] for f in doc["findings"] for e in f["evidence"]
                            if e["kind"] == "transcript")
    assert public in transcripts and private not in transcripts


def test_every_check_skipped_is_a_usage_error_not_clean() -> None:
    """With all four checks off nothing is assessed: a CLEAN verdict would be a lie."""
    done = scan("127.0.10.99", "--no-probe", "--no-audit", "--no-logs", "--no-blocklist",
                "--no-history")
    assert done.returncode == 2
    assert "nothing to check" in done.stderr
    assert "CLEAN" not in done.stdout and "Traceback" not in done.stderr
    nagios = scan("127.0.10.99", "--no-probe", "--no-audit", "--no-logs", "--no-blocklist",
                  "--no-history", "--nagios")
    assert nagios.returncode == 3 and nagios.stdout.startswith("RELAYGUARD UNKNOWN")


def test_no_probe_scan_does_not_claim_probes(dnsbl: Any, db: str) -> None:
    """--no-probe: no report may say where probes came from, since none were sent."""
    args = ["127.0.10.99", "--no-probe", "--no-audit", "--no-logs", *blocklist_args(dnsbl),
            "--db", db]
    text = scan(*args)
    assert text.returncode == 1, text.stderr
    assert "VERDICT LISTED" in text.stdout and "probes came from" not in text.stdout
    doc = json.loads(scan(*args, "--format", "json").stdout)
    assert doc["stats"]["probe_source"] is None
    page = scan(*args, "--format", "html").stdout
    assert "not probed (--no-probe)" in page and "probes from" not in page


def test_remote_host_with_nothing_to_look_at_is_not_clean() -> None:
    """--no-probe on a remote host with no config, no log and no blocklist: every step was
    on or off, yet none looked at anything, so the scan may not say CLEAN. (192.0.2.1 is
    TEST-NET-1; with --no-probe and --no-blocklist no packet is sent anywhere.)"""
    done = scan("192.0.2.1", "--no-probe", "--no-blocklist", "--no-history",
                "--format", "json")
    assert done.returncode == 2, done.stderr
    doc = json.loads(done.stdout)
    assert doc["stats"]["verdict"] == "INCOMPLETE"
    [error] = doc["errors"]
    assert error["message"].startswith(
        "nothing was checked (probe, blocklist, audit (no config), logs (no log file))")
