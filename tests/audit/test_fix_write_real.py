"""`relayguard audit --fix --write` closes the hole for real, for every proxy and MTA family.

Each test starts the real daemon on loopback with an open config, shows that the untrusted
127.0.11.250 gets relayed to a canary, runs the CLI's --fix --write on the daemon's own config
(the whole pipeline: verified in a scratch copy, checked by the daemon's own config test,
written with a backup), restarts the daemon on the patched files and shows the stranger gets
nothing. Apache has the same test in tests/audit/apache/test_fix.py.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audit.fixcli import fix_write, restarted
from tests.audit.proxytools import Canaries, canaries, http_proxy_verdicts, socks_verdicts
from tests.audit.relay_helpers import nginx, rcpt
from tests.servers import HttpCanary, free_port, http_canary, http_request
from tests.servers.dante import OPEN_RULES, danted
from tests.servers.postfix import postfix
from tests.servers.privoxy import privoxy
from tests.servers.squid import squid
from tests.servers.tinyproxy import tinyproxy

pytestmark = pytest.mark.server

STRANGER = "127.0.11.250"
CANARY = "127.0.11.60"


def installed(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which(name) is None and not Path(f"/usr/sbin/{name}")
                              .exists(), reason=f"{name} is not installed")


@pytest.fixture(scope="module")
def canary() -> Iterator[Canaries]:
    with canaries(CANARY) as c:
        yield c


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rg-audit-fixwrite-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def backups(doc: dict) -> list[Path]:
    return [Path(n.split("backup kept at ", 1)[1]) for n in doc["notes"]
            if "backup kept at " in n]


HTTP_PROXIES = {
    # name: (listen address, launcher, open config part, executable)
    "squid": ("127.0.11.61", squid, "http_access allow all\n", "squid"),
    "tinyproxy": ("127.0.11.62", tinyproxy, "", "tinyproxy"),
    "privoxy": ("127.0.11.63", privoxy, "", "privoxy"),
}


@pytest.mark.parametrize("name", HTTP_PROXIES)
def test_http_proxy_fix_write_closes_it(name: str, canary: Canaries, workdir: Path) -> None:
    host, launcher, body, exe = HTTP_PROXIES[name]
    if shutil.which(exe) is None:
        pytest.skip(f"{exe} is not installed")
    with launcher(host, free_port(host), body, workdir=workdir) as d:
        before = http_proxy_verdicts(host, d.port, canary, source=STRANGER)
        assert before["GET 80"] and before["CONNECT 443"], (before, d.diagnostics())
        original = d.config.read_text()
        # named relative to the working directory, as an admin in /etc/squid would
        doc = fix_write(d.config.name, outside=STRANGER, cwd=d.config.parent)
        assert [b.read_text() for b in backups(doc)] == [original]
    with restarted(d) as again:
        after = http_proxy_verdicts(host, again.port, canary, source=STRANGER)
    assert not any(after.values()), (after, d.config.read_text())


@installed("danted")
def test_dante_fix_write_closes_it(canary: Canaries, workdir: Path) -> None:
    host = "127.0.11.64"
    with danted(host, free_port(host), OPEN_RULES, workdir=workdir) as d:
        assert socks_verdicts(host, d.port, canary, source=STRANGER) == \
            {"SOCKS 443": True, "SOCKS 25": True}, d.diagnostics()
        fix_write(d.config, outside=STRANGER)
    with restarted(d) as again:
        after = socks_verdicts(host, again.port, canary, source=STRANGER)
    assert not any(after.values()), (after, d.config.read_text())


# Two servers, the same rule twice: each fix must be verified on its own place.
NGINX_TWO_OPEN = """pid nginx.pid;
error_log error.log;
events {{}}
http {{
    access_log off;
    server {{
        listen {host}:{p1};
        location / {{ proxy_pass http://$http_host$request_uri; }}
    }}
    server {{
        listen {host}:{p2};
        location / {{ proxy_pass http://$http_host$request_uri; }}
    }}
}}
"""


def nginx_relays(web: HttpCanary, host: str, port: int) -> bool:
    nonce = uuid.uuid4().hex
    http_request(host, port, f"GET /{nonce} HTTP/1.1\r\nHost: {CANARY}:{web.port}\r\n"
                 "Connection: close\r\n\r\n", source=STRANGER)
    return bool(web.wait_for(nonce, timeout=1.0))


@installed("nginx")
def test_nginx_fix_write_closes_both_servers(workdir: Path) -> None:
    host = "127.0.11.65"
    p1, p2 = free_port(host), free_port(host)
    with http_canary(CANARY) as web:
        with nginx(NGINX_TWO_OPEN.format(host=host, p1=p1, p2=p2), host, p1, workdir) as d:
            assert nginx_relays(web, host, p1) and nginx_relays(web, host, p2), d.diagnostics()
            doc = fix_write(d.config, outside=STRANGER)
            [plan] = doc["stats"]["fixes"]
            assert plan["not_offered"] == [] and len(plan["fixed"]) == 2, plan
        with restarted(d):
            assert not nginx_relays(web, host, p1) and not nginx_relays(web, host, p2), \
                d.config.read_text()


@installed("postfix")
def test_postfix_fix_write_with_its_map_in_the_config_dir(workdir: Path) -> None:
    host, port = "127.0.11.24", 2528
    conf = workdir / "conf"
    main = ("mynetworks = 127.0.0.1/32\nsmtpd_relay_restrictions = permit_mynetworks, "
            f"check_client_access cidr:{conf}/clients.cidr, reject_unauth_destination\n")
    with postfix(host, port, main, files={"clients.cidr": "0.0.0.0/0 OK\n"},
                 workdir=workdir) as mta:
        assert rcpt(host, port, source=STRANGER)[0] == 250, mta.diagnostics()
        doc = fix_write(conf, outside=STRANGER)
        assert f"cidr:{conf}/clients.cidr" in doc["stats"]["fixes"][0]["diff"]
    with restarted(mta) as again:
        code, text = rcpt(host, port, source=STRANGER)
        assert code in (454, 554) and "Relay access denied" in text, \
            (code, text, again.diagnostics())
