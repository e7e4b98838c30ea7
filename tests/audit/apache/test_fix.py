"""`audit --fix` offers only verified patches; `--write` closes the hole on the real httpd."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from relayguard.audit.fix import apply_edits, unified_diff
from relayguard.findings import Edit
from tests.servers import PROXY_MODULES, apache, free_port, http_canary, http_request, tcp_canary

HOST = "127.0.3.2"
STRANGER = "127.0.3.250"
CANARY = "127.0.3.202"
HAVE_APACHE = shutil.which("apache2") is not None or Path("/usr/sbin/apache2").exists()


def relayguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relayguard", "audit", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_apply_edits_replaces_exact_lines_and_refuses_stale_ones() -> None:
    text = "a\nProxyRequests On\nb\n"
    edit = Edit("x.conf", 2, ("ProxyRequests On",), ("ProxyRequests Off",))
    assert apply_edits(text, [edit]) == "a\nProxyRequests Off\nb\n"
    with pytest.raises(ValueError, match="no longer reads"):
        apply_edits("a\nsomething else\nb\n", [edit])


def test_unified_diff_names_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text("Listen 80\nProxyRequests On\n")
    diff = unified_diff([Edit(str(conf), 2, ("ProxyRequests On",), ("ProxyRequests Off",))])
    assert f"--- {conf}" in diff and "-ProxyRequests On" in diff and "+ProxyRequests Off" in diff


def test_fix_without_edits_is_not_offered(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text("LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so\n"
                    "LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so\n"
                    'ProxyPassMatch "^/p/([^/]+)/(.*)$" "http://$1/$2"\n')
    proc = relayguard(str(conf), "--fix", "--format", "json")
    doc = json.loads(proc.stdout)
    [plan] = doc["stats"]["fixes"]
    assert plan["diff"] == ""
    assert {n["rule"] for n in plan["not_offered"]} >= {"APACHE-PROXYPASS-DYNAMIC-HOST"}
    assert conf.read_text().count("ProxyPassMatch") == 1  # nothing written


def _relays(httpd, web, smtp) -> dict[str, bool]:
    n1, n2 = uuid.uuid4().hex, uuid.uuid4().hex
    http_request(httpd.host, httpd.port, f"GET http://{CANARY}:{web.port}/{n1} HTTP/1.0\r\n"
                 f"Host: {CANARY}\r\n\r\n", source=STRANGER)
    http_request(httpd.host, httpd.port, f"CONNECT {CANARY}:25 HTTP/1.0\r\n\r\n{n2}\r\n",
                 source=STRANGER, timeout=1.0)
    return {"http": bool(web.wait_for(n1, timeout=1.0)),
            "smtp": bool(smtp.wait_for(n2, timeout=1.0))}


@pytest.mark.server
@pytest.mark.skipif(not HAVE_APACHE, reason="apache2 is not installed")
def test_fix_write_closes_the_seed_incident_on_the_real_httpd() -> None:
    body = "# the seed incident, with SMTP allowed through CONNECT\nProxyRequests On\n" \
           "AllowCONNECT 25 443\n"
    with http_canary(CANARY) as web, tcp_canary(CANARY, 25) as smtp:
        with apache(HOST, free_port(HOST), body, modules=PROXY_MODULES) as httpd:
            assert _relays(httpd, web, smtp) == {"http": True, "smtp": True}
            conf = str(httpd.config)
            shown = relayguard(conf, "--outside-client", STRANGER, "--fix")
            assert "-ProxyRequests On" in shown.stdout and "+ProxyRequests Off" in shown.stdout
            assert "+AllowCONNECT 443" in shown.stdout
            assert "ProxyRequests On" in httpd.extra["body"].read_text()  # --fix alone: no write
            written = relayguard(conf, "--outside-client", STRANGER, "--fix", "--write",
                                 "--format", "json")
            doc = json.loads(written.stdout)
            assert written.returncode == 0, doc
            assert not [f for f in doc["findings"] if f["severity"] != "info"]
            patched = httpd.extra["body"].read_text()
            backups = list(httpd.workdir.glob("body.conf.relayguard-*.bak"))
            assert backups and backups[0].read_text() == body
        with apache(HOST, free_port(HOST), patched, modules=PROXY_MODULES) as fixed:
            assert _relays(fixed, web, smtp) == {"http": False, "smtp": False}
