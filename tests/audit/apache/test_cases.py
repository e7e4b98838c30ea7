"""Apache access-control cases, each checked three ways.

Every `cases/*.conf` states what it must produce (`# expect: RULE@line …`) and what a real
httpd does for an untrusted client (`# live: http=open connect=closed …`). The tests:
1. audit it and compare the exact (rule, line) set;
2. feed it to the real `apache2 -t`, so every case is a config httpd accepts;
3. run the real httpd with it on loopback, send proxy requests from 127.0.3.250 (a loopback
   address no case trusts) to canaries, and check the audit's verdict is what httpd did.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from relayguard.audit import AuditOptions, audit_paths
from relayguard.audit.rules.apache import RULES as APACHE_RULES
from relayguard.catalogue import Rule
from relayguard.findings import Category
from tests.servers import PROXY_MODULES, apache, free_port, http_canary, http_request, tcp_canary
from tests.servers.apache import preamble

CASES = sorted((Path(__file__).parent / "cases").glob("*.conf"))
HOST = "127.0.3.1"
STRANGER = "127.0.3.250"
CANARY = "127.0.3.201"
MODULES = (*PROXY_MODULES, "rewrite")
HAVE_APACHE = shutil.which("apache2") is not None or Path("/usr/sbin/apache2").exists()


def expectations(case: Path) -> tuple[set[tuple[str, int]], dict[str, str]]:
    head = case.read_text().splitlines()[:2]
    expect = {(m.group(1), int(m.group(2)))
              for m in re.finditer(r"([A-Z0-9-]+)@(\d+)", head[0])}
    live = dict(re.findall(r"(\w+)=(\w+)", head[1]))
    return expect, live


def write_config(case: Path, workdir: Path) -> Path:
    """The same two-file layout the live harness runs: preamble + the case as body.conf."""
    conf = workdir / "httpd.conf"
    conf.write_text(preamble(HOST, 8080, workdir, MODULES), encoding="utf-8")
    shutil.copy(case, workdir / "body.conf")
    (workdir / "htdocs").mkdir(exist_ok=True)
    return conf


def audit_case(conf: Path) -> list[tuple[str, int, Category]]:
    report = audit_paths([conf], options=AuditOptions(
        outside_client=ipaddress.ip_address(STRANGER)))
    assert not report.errors, report.errors
    return [(f.rule, f.location.line or 0, f.category) for f in report.findings
            if f.location.path and f.location.path.endswith("body.conf")]


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_audit_reports_exactly_the_expected_rules(case: Path, tmp_path: Path) -> None:
    expect, _ = expectations(case)
    found = {(rule, line) for rule, line, _ in audit_case(write_config(case, tmp_path))}
    assert found == expect


@pytest.mark.skipif(not HAVE_APACHE, reason="apache2 is not installed")
@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_real_httpd_accepts_the_case(case: Path, tmp_path: Path) -> None:
    conf = write_config(case, tmp_path)
    proc = subprocess.run(["apache2", "-t", "-f", str(conf)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- live agreement

@pytest.fixture(scope="module")
def canaries():
    with http_canary(CANARY) as web, tcp_canary(CANARY, 443) as tls, \
            tcp_canary(CANARY, 25, banner=b"220 canary ESMTP\r\n") as smtp:
        yield web, tls, smtp


def _relayed_to(httpd, canary, raw: str, nonce: str) -> bool:
    # A refused request is answered only after httpd decided, so a relayed connection would
    # already have reached the canary; only a 2xx (tunnel/forward) needs a longer look.
    tunnel = raw.startswith("CONNECT")
    reply = http_request(httpd.host, httpd.port, raw, source=STRANGER,
                         timeout=1.0 if tunnel else 5.0)
    return bool(canary.wait_for(nonce, timeout=1.5 if reply.status in (0, 200) else 0.2))


def live_verdicts(httpd, web, tls, smtp, wanted: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    if "http" in wanted:
        n = uuid.uuid4().hex
        ok = _relayed_to(httpd, web, f"GET http://{CANARY}:{web.port}/{n} HTTP/1.0\r\n"
                         f"Host: {CANARY}:{web.port}\r\n\r\n", n)
        # Host-header proxying (mod_rewrite [P] with %{HTTP_HOST}) is also HTTP relaying.
        n2 = uuid.uuid4().hex
        ok = ok or _relayed_to(httpd, web, f"GET /{n2} HTTP/1.0\r\nHost: {CANARY}:{web.port}"
                               "\r\n\r\n", n2)
        out["http"] = "open" if ok else "closed"
    if "connect" in wanted:
        n = uuid.uuid4().hex
        ok = _relayed_to(httpd, tls, f"CONNECT {CANARY}:443 HTTP/1.0\r\n\r\n{n}\r\n", n)
        out["connect"] = "open" if ok else "closed"
    if "smtp" in wanted:
        n = uuid.uuid4().hex
        ok = _relayed_to(httpd, smtp, f"CONNECT {CANARY}:25 HTTP/1.0\r\n\r\n{n}\r\n", n)
        n2 = uuid.uuid4().hex
        ok = ok or _relayed_to(httpd, smtp, f"GET http://{CANARY}:25/{n2} HTTP/1.0\r\n"
                               f"Host: {CANARY}:25\r\n\r\n", n2)
        n3 = uuid.uuid4().hex
        ok = ok or _relayed_to(httpd, smtp, f"GET /{n3} HTTP/1.0\r\nHost: {CANARY}:25\r\n\r\n",
                               n3)
        out["smtp"] = "open" if ok else "closed"
    if "pathhost" in wanted:
        n = uuid.uuid4().hex
        ok = _relayed_to(httpd, web, f"GET /p/{CANARY}:{web.port}/{n} HTTP/1.0\r\n"
                         f"Host: {HOST}\r\n\r\n", n)
        out["pathhost"] = "open" if ok else "closed"
    return out


def audit_verdicts(found: list[tuple[str, int, Category]], wanted: set[str]) -> dict[str, str]:
    cats = {c for _, _, c in found}
    rules = {r for r, _, _ in found}
    table = {
        # a broad-but-restricted ACL is a weaker finding, not "open to this client"
        "http": any(c is Category.OPEN_HTTP_PROXY and r != "APACHE-PROXY-ACL-BROAD"
                    for r, _, c in found),
        "connect": Category.OPEN_CONNECT_PROXY in cats,
        "smtp": Category.SMTP_VIA_PROXY in cats and any(
            r != "APACHE-CONNECT-SMTP-PORT" or Category.OPEN_CONNECT_PROXY in cats
            for r, _, c in found if c is Category.SMTP_VIA_PROXY),
        "pathhost": "APACHE-PROXYPASS-DYNAMIC-HOST" in rules,
    }
    return {k: ("open" if table[k] else "closed") for k in wanted}


@pytest.mark.server
@pytest.mark.skipif(not HAVE_APACHE, reason="apache2 is not installed")
@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_audit_agrees_with_real_httpd(case: Path, canaries) -> None:
    web, tls, smtp = canaries
    _, live_expect = expectations(case)
    wanted = set(live_expect)
    with apache(HOST, free_port(HOST), case.read_text(), modules=MODULES) as httpd:
        found = audit_case(httpd.config)
        live = live_verdicts(httpd, web, tls, smtp, wanted)
    assert live == live_expect, f"httpd itself did not behave as the case says:\n{live}"
    assert audit_verdicts(found, wanted) == live, found


@pytest.mark.skipif(not HAVE_APACHE, reason="apache2 is not installed")
@pytest.mark.parametrize("rule", APACHE_RULES, ids=[r.id for r in APACHE_RULES])
@pytest.mark.parametrize("kind", ["bad", "good"])
def test_rule_examples_are_configs_httpd_accepts(rule: Rule, kind: str, tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text(getattr(rule, kind), encoding="utf-8")
    proc = subprocess.run(["apache2", "-t", "-f", str(conf)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
