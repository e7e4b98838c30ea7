"""What counts as canary proof: the listener the probe asked for, reached by the target.

A real nginx with `proxy_pass http://$host$request_uri` drops the port of the request, so
`GET http://canary:25/nonce` lands on the canary's HTTP listener (port 80). That proves an
open HTTP proxy, never a path to SMTP.
"""

from __future__ import annotations

import asyncio

import pytest

from relayguard.findings import Confidence, Report
from relayguard.probe.context import ProbeOptions
from relayguard.probe.runner import run_probe
from relayguard.probe.targets import Target
from tests.audit.relay_helpers import nginx

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
