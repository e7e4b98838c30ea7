"""What counts as canary proof: the listener the probe asked for, reached by the target.

A real nginx with `proxy_pass http://$host$request_uri` drops the port of the request, so
`GET http://canary:25/nonce` lands on the canary's HTTP listener (port 80). That proves an
open HTTP proxy, never a path to SMTP.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from relayguard.findings import Confidence, Report
from relayguard.probe.canary import Canary, new_nonce
from relayguard.probe.context import ProbeContext, ProbeOptions, split_hits
from relayguard.probe.http import build_request, read_response
from relayguard.probe.net import Transcript
from relayguard.probe.runner import run_probe
from relayguard.probe.targets import Target
from tests.audit.relay_helpers import nginx
from tests.servers.microsocks import microsocks
from tests.servers.nat import one_to_one_nat

pytestmark = pytest.mark.server

SCANNER = "127.0.4.99"
NGINX_HOST = "127.0.4.60"
NGINX_CANARY = "127.0.4.61"

NGINX_HOST_PROXY = f"""pid nginx.pid;
error_log error.log;
events {{}}
http {{
    access_log off;
    server {{
        listen {NGINX_HOST}:8080;
        location / {{ proxy_pass http://$host$request_uri; }}
    }}
}}
"""


@pytest.fixture(scope="module")
def nginx_report() -> Report:
    with nginx(NGINX_HOST_PROXY, NGINX_HOST, 8080):
        options = ProbeOptions(timeout=3.0, source=SCANNER, canary_host=NGINX_CANARY)
        return asyncio.run(run_probe([Target(NGINX_HOST, 8080)], options))


def test_port_dropping_proxy_is_an_http_proxy_not_smtp_via_proxy(nginx_report: Report) -> None:
    report = nginx_report
    assert report.stats["canary"]["http_port"] == 80, report.notes  # needs root, as ever
    assert 25 in report.stats["canary"]["smtp_ports"], report.notes
    assert {f.rule for f in report.findings} == {"PROBE-HTTP-ABSOLUTE-URI",
                                                 "PROBE-HTTP-HOST-HEADER"}, [
        (f.rule, f.title) for f in report.findings]
    assert {f.category.value for f in report.findings} == {"open-http-proxy"}
    assert all(f.confidence is Confidence.CONFIRMED for f in report.findings)
    assert report.errors == ()


def test_a_hit_on_the_wrong_listener_says_so_in_the_evidence(nginx_report: Report) -> None:
    notes = [e.text for f in nginx_report.findings for e in f.evidence if e.kind == "note"]
    wrong = [n for n in notes if "asked to reach the canary's smtp listener on port 25" in n]
    assert wrong, notes
    assert all("arrived at its http listener on port 80" in n for n in wrong), wrong
    assert all("proves open-http-proxy only, not smtp-via-proxy (PROBE-HTTP-SMTP)" in n
               for n in wrong), wrong


def test_the_canary_is_never_probed_as_a_target() -> None:
    """`probe X --canary-host X`: the canary's own ports are skipped, never "open"."""
    options = ProbeOptions(timeout=1.0, source=SCANNER, canary_host="127.0.4.62",
                           ports=(25, 80, 443))
    report = asyncio.run(run_probe([Target("127.0.4.62")], options))
    assert report.findings == (), [(f.rule, f.title) for f in report.findings]
    assert report.errors == ()
    assert report.stats["services"] == {"canary": 3}, report.notes
    skipped = [n for n in report.notes if "scanner's own canary" in n]
    assert {n.split(":")[1] for n in skipped} == {"25", "80", "443"}, skipped


def test_an_ipv4_mapped_name_for_the_canary_is_skipped_too() -> None:
    options = ProbeOptions(timeout=1.0, canary_host="127.0.4.62", ports=(80,))
    report = asyncio.run(run_probe([Target("::ffff:127.0.4.62")], options))
    assert report.findings == ()
    assert report.stats["services"] == {"canary": 1}, report.notes


def test_a_nonce_the_scanner_itself_carries_to_the_canary_is_marked_own() -> None:
    """Defence in depth below the skip: the canary knows the scanner's own sockets."""
    async def main() -> None:
        canary = Canary("127.0.4.64", http_port=0, raw_port=0, smtp_ports=())
        await canary.start()
        try:
            ctx = ProbeContext(ProbeOptions(timeout=2.0, source=SCANNER), canary)
            nonce = new_nonce()
            async with ctx.connection("127.0.4.64", canary.http_port, Transcript()) as conn:
                await asyncio.sleep(0.1)  # the canary waits for the request meanwhile
                assert canary.serving(conn.local_endpoint, conn.remote_endpoint) == "http"
                await conn.send(build_request("GET", f"/{nonce}", "x"))
                await read_response(conn)
            (hit,) = await canary.wait(nonce, 2.0)
            assert hit.own
            assert split_hits([hit], "http", canary.http_port) == ([], [], [hit])
        finally:
            await canary.stop()

    asyncio.run(main())


def test_a_nonce_the_scanner_carries_to_the_canary_through_nat_is_marked_own() -> None:
    """A port the kernel forwards straight to the canary (here 1:1 NAT): the canary sees the
    scanner's local end but not the address it dialled, and it is still the scanner's own."""
    public, private = "127.0.4.110", "127.0.4.111"

    async def main() -> None:
        canary = Canary(private, http_port=0, raw_port=0, smtp_ports=())
        await canary.start()
        try:
            ctx = ProbeContext(ProbeOptions(timeout=2.0, source=SCANNER), canary)
            nonce = new_nonce()
            async with ctx.connection(public, canary.http_port, Transcript()) as conn:
                await asyncio.sleep(0.1)  # the canary waits for the request meanwhile
                assert conn.remote_endpoint == (public, canary.http_port)
                assert canary.serving(conn.local_endpoint, conn.remote_endpoint) == "http"
                await conn.send(build_request("GET", f"/{nonce}", "x"))
                await read_response(conn)
            (hit,) = await canary.wait(nonce, 2.0)
            assert hit.own
        finally:
            await canary.stop()

    with one_to_one_nat(public, private):
        asyncio.run(main())


def test_probe_localhost_as_root_does_not_report_itself() -> None:
    """`relayguard probe 127.0.0.1`: the default canary is 127.0.0.1 itself."""
    done = subprocess.run(
        [sys.executable, "-m", "relayguard", "probe", "127.0.0.1", "--ports", "25,80,443",
         "--timeout", "1", "--format", "json"],
        capture_output=True, text=True, timeout=120)
    doc = json.loads(done.stdout)
    canary = doc["stats"]["canary"]
    held = {canary["http_port"], canary["raw_port"], *canary["smtp_ports"]} & {25, 80, 443}
    if canary["host"] != "127.0.0.1" or not held:
        pytest.skip(f"the canary could not take 127.0.0.1:25/80/443 ({doc['notes']})")
    assert doc["findings"] == [], doc["findings"]
    assert doc["stats"]["services"].get("canary") == len(held), doc["notes"]


def test_canary_behind_nat_binds_one_address_and_advertises_another() -> None:
    public, private, proxy = "127.0.4.67", "127.0.4.68", "127.0.4.69"
    with one_to_one_nat(public, private), microsocks(proxy, 1080):
        options = ProbeOptions(timeout=3.0, source=SCANNER, canary_host=public,
                               canary_bind=private)
        targets = [Target(proxy, 1080), Target(public, 80), Target(private, 25)]
        report = asyncio.run(run_probe(targets, options))
    assert report.errors == ()
    assert report.stats["canary"]["host"] == public
    assert report.stats["canary"]["bind"] == private
    assert {f.rule for f in report.findings} == {"PROBE-SOCKS5", "PROBE-SOCKS-SMTP"}
    assert all(f.confidence is Confidence.CONFIRMED for f in report.findings)
    transcripts = "\n".join(e.text for f in report.findings for e in f.evidence)
    assert f"Host: {public}:80" in transcripts  # what the target was told
    # Both names of the canary are the canary: neither is probed.
    assert report.stats["services"] == {"canary": 2, "socks5": 1}, report.notes


@pytest.mark.parametrize("command", ["probe", "scan"])
def test_cli_canary_bind_must_be_an_address_and_canary_host_not_a_wildcard(command: str) -> None:
    for args, message in ((("--canary-bind", "nowhere"), "--canary-bind 'nowhere' is not an"),
                          (("--canary-host", "0.0.0.0"), "use --canary-bind")):
        done = subprocess.run([sys.executable, "-m", "relayguard", command, "127.0.4.1", *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_an_address_the_canary_cannot_bind_points_to_canary_bind() -> None:
    # 192.0.2.1 (TEST-NET-1) is not on this host: binding fails, nothing is sent anywhere.
    options = ProbeOptions(timeout=1.0, canary_host="192.0.2.1", ports=(1,))
    report = asyncio.run(run_probe([Target("127.0.4.70")], options))
    assert [e.source for e in report.errors] == ["canary"]
    assert "--canary-bind" in report.errors[0].message
