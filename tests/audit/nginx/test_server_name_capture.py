"""A named capture of a `server_name` regex is client data: `server_name ~^(?<h>.+)\\.gw\\.test$;`
with `proxy_pass http://$h;` proxies to whatever host the client puts before `.gw.test`.
The real nginx on 127.0.11.40 relays the stranger's request to a canary on 127.0.11.41:80; the
audit must call it an open HTTP proxy, on port 80 only, since nginx matches server names
without the port."""

from __future__ import annotations

import ipaddress
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from relayguard.audit.base import AuditOptions
from relayguard.audit.nginx import NginxAuditor
from relayguard.findings import Category, Severity
from tests.audit.relay_helpers import nginx
from tests.servers import HttpCanary, free_port, http_canary, http_request

pytestmark = [pytest.mark.server,
              pytest.mark.skipif(shutil.which("nginx") is None
                                 and not Path("/usr/sbin/nginx").exists(),
                                 reason="nginx not installed")]

NGX, CANARY, STRANGER = "127.0.11.40", "127.0.11.41", "127.0.11.250"


def conf(port: int, resolver: bool) -> str:
    return ("pid nginx.pid;\nerror_log error.log;\nevents {}\nhttp {\n    access_log off;\n"
            + ("    resolver 127.0.0.1;\n" if resolver else "")
            + f"    server {{\n        listen {NGX}:{port} default_server;\n"
            "        return 404;\n    }\n"
            f"    server {{\n        listen {NGX}:{port};\n"
            "        server_name ~^(?<h>.+)\\.gw\\.test$;\n"
            "        location / { proxy_pass http://$h; }\n    }\n}\n")


@pytest.fixture(scope="module")
def canary() -> Iterator[HttpCanary]:
    try:
        with http_canary(CANARY, 80) as c:
            yield c
    except PermissionError:
        pytest.skip("the canary needs port 80: run as root")


@pytest.mark.parametrize("resolver", [True, False], ids=["resolver", "no-resolver"])
def test_server_name_capture_steers_the_proxy(canary: HttpCanary, resolver: bool) -> None:
    port = free_port(NGX)
    text = conf(port, resolver)
    line = next(n for n, ln in enumerate(text.splitlines(), 1) if "proxy_pass" in ln)
    with nginx(text, NGX, port) as d:
        nonce = uuid.uuid4().hex
        reply = http_request(NGX, port, f"GET /{nonce} HTTP/1.1\r\nHost: {CANARY}.gw.test\r\n"
                             "Connection: close\r\n\r\n", source=STRANGER)
        assert canary.wait_for(nonce, timeout=2.0) and b"canary" in reply.body, d.diagnostics()
        result = NginxAuditor().audit(
            d.config, AuditOptions(outside_client=ipaddress.ip_address(STRANGER)))
    [f] = result.findings
    assert f.rule == "NGINX-OPEN-PROXY-HTTP-HOST" and f.location.line == line
    assert (f.category, f.severity) == (Category.OPEN_HTTP_PROXY, Severity.HIGH)
    assert "port 80" in f.title
