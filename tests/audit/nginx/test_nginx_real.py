"""Agreement with reality: real nginx on 127.0.8.10 with each fixture, a canary on
127.0.8.11, requests from the untrusted 127.0.8.250. The audit's verdict (finding or not)
must be what nginx really does (relays to the canary or not); after applying the finding's
edits and restarting, the hole is closed for real."""

from __future__ import annotations

import ipaddress
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from relayguard.audit.base import AuditOptions
from relayguard.audit.nginx import NginxAuditor
from tests.audit.relay_helpers import STRANGER, apply_edits, nginx
from tests.servers import HttpCanary, http_canary, http_request

pytestmark = [pytest.mark.server,
              pytest.mark.skipif(shutil.which("nginx") is None
                                 and not Path("/usr/sbin/nginx").exists(),
                                 reason="nginx not installed")]

NGX, NGX_PORT = "127.0.8.10", 8080
CANARY, CANARY_PORT = "127.0.8.11", 8081
OPTIONS = AuditOptions(outside_client=ipaddress.ip_address(STRANGER))
HEAD = "pid nginx.pid;\nerror_log error.log;\nevents {}\nhttp {\n    access_log off;\n"

# (name, server blocks, how the stranger asks: "host-header" / "absolute+host")
CASES = [
    ("http_host_default", """    server {
        listen 127.0.8.10:8080 default_server;
        location / { proxy_pass http://$http_host$request_uri; }
    }
""", "host-header", "NGINX-OPEN-PROXY-HTTP-HOST"),
    ("http_host_named_server", """    server {
        listen 127.0.8.10:8080 default_server;
        return 404;
    }
    server {
        listen 127.0.8.10:8080;
        server_name www.example.test;
        location / { proxy_pass http://$http_host$request_uri; }
    }
""", "absolute+host", "NGINX-OPEN-PROXY-HTTP-HOST"),
    ("host_default_no_resolver", """    server {
        listen 127.0.8.10:8080;
        location / { proxy_pass http://$host:8081$request_uri; }
    }
""", "host-header", "NGINX-OPEN-PROXY-HOST"),
    ("host_named_server", """    server {
        listen 127.0.8.10:8080 default_server;
        return 404;
    }
    server {
        listen 127.0.8.10:8080;
        server_name www.example.test;
        location / { proxy_pass http://$host:8081$request_uri; }
    }
""", "host-header", None),
    ("realip_bypasses_acl", """    server {
        listen 127.0.8.10:8080;
        set_real_ip_from 0.0.0.0/0;
        allow 127.0.0.1;
        deny all;
        location / { proxy_pass http://$http_host$request_uri; }
    }
""", "host-header+x-real-ip", "NGINX-REALIP-TRUST-ALL"),
    ("realip_narrow_keeps_acl", """    server {
        listen 127.0.8.10:8080;
        set_real_ip_from 192.0.2.10;
        allow 127.0.0.1;
        deny all;
        location / { proxy_pass http://$http_host$request_uri; }
    }
""", "host-header+x-real-ip", None),
    ("anchored_host_whitelist", """    server {
        listen 127.0.8.10:8080;
        if ($http_host !~* "^(www\\.)?example\\.test$") { return 403; }
        location / { proxy_pass http://$http_host$request_uri; }
    }
""", "host-header", None),
    ("http_host_acl", """    server {
        listen 127.0.8.10:8080;
        allow 127.0.0.1;
        deny all;
        location / { proxy_pass http://$http_host$request_uri; }
    }
""", "host-header", None),
]


@pytest.fixture(scope="module")
def canary() -> Iterator[HttpCanary]:
    with http_canary(CANARY, CANARY_PORT) as c:
        yield c


def stranger_relayed(canary: HttpCanary, how: str) -> bool:
    nonce = uuid.uuid4().hex
    if how == "absolute+host":
        raw = (f"GET http://www.example.test/{nonce} HTTP/1.1\r\n"
               f"Host: {CANARY}:{CANARY_PORT}\r\nConnection: close\r\n\r\n")
    else:
        extra = "X-Real-IP: 127.0.0.1\r\n" if how.endswith("x-real-ip") else ""
        raw = (f"GET /{nonce} HTTP/1.1\r\nHost: {CANARY}:{CANARY_PORT}\r\n{extra}"
               "Connection: close\r\n\r\n")
    reply = http_request(NGX, NGX_PORT, raw, source=STRANGER)
    return bool(canary.wait_for(nonce, timeout=1.0)) and b"canary" in reply.body


@pytest.mark.parametrize(("name", "servers", "how", "rule"), CASES, ids=[c[0] for c in CASES])
def test_verdict_matches_real_nginx(canary: HttpCanary, name: str, servers: str, how: str,
                                    rule: str | None) -> None:
    text = HEAD + servers + "}\n"
    with nginx(text, NGX, NGX_PORT) as d:
        relayed = stranger_relayed(canary, how)
        result = NginxAuditor().audit(d.config, OPTIONS)
        assert [f.rule for f in result.findings] == ([rule] if rule else []), d.diagnostics()
        assert relayed is (rule is not None), d.diagnostics()


FIRING = [c for c in CASES if c[3] is not None]


@pytest.mark.parametrize(("name", "servers", "how", "rule"), FIRING, ids=[c[0] for c in FIRING])
def test_edits_close_the_hole_for_real(canary: HttpCanary, name: str, servers: str, how: str,
                                       rule: str) -> None:
    text = HEAD + servers + "}\n"
    with nginx(text, NGX, NGX_PORT) as d:
        assert stranger_relayed(canary, how)
        result = NginxAuditor().audit(d.config, OPTIONS)
        assert apply_edits(result.findings)
        conf_text = d.config.read_text()
    with nginx(conf_text, NGX, NGX_PORT) as d2:
        assert not stranger_relayed(canary, how), d2.diagnostics()
        assert NginxAuditor().audit(d2.config, OPTIONS).findings == []
