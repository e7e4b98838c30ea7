"""CROSS-PROXY-TO-LOCAL-MTA: a proxy path into the host's own MTA from an address the MTA
trusts. Static combinations of facts, and the real chain: nginx stream on 127.0.8.30 binding
127.0.8.20 towards a real Postfix on 127.0.8.22 that trusts 127.0.8.20; the stranger
127.0.8.250 relays through it exactly when the audit says so."""

from __future__ import annotations

import ipaddress
import shutil
import smtplib
from pathlib import Path

import pytest

from relayguard.audit.base import AuditOptions, AuditResult
from relayguard.audit.cross import PROXY_TO_LOCAL_MTA, cross_findings
from relayguard.audit.exim import EximAuditor
from relayguard.audit.nginx import NginxAuditor
from relayguard.audit.postfix import PostfixAuditor
from relayguard.findings import Category, Severity
from tests.audit.relay_helpers import STRANGER, apply_edits, nginx, rcpt

REAL = Path("/work/shared/data/real-configs")
if not REAL.is_dir():
    REAL = Path(__file__).resolve().parents[4] / "shared/data/real-configs"
OPTIONS = AuditOptions(outside_client=ipaddress.ip_address(STRANGER))
STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"


def stock_postfix(tmp: Path) -> AuditResult:
    d = tmp / "postfix"
    d.mkdir()
    shutil.copy(REAL / "postfix/main.cf", d / "main.cf")
    shutil.copy(REAL / "postfix/master.cf", d / "master.cf")
    return PostfixAuditor().audit(d, AuditOptions())


def nginx_result(tmp: Path, text: str) -> AuditResult:
    d = tmp / "nginx"
    d.mkdir()
    (d / "nginx.conf").write_text(text)
    return NginxAuditor().audit(d / "nginx.conf", AuditOptions())


def test_catalogue_bad_fires_once_with_both_configs_as_evidence(tmp_path: Path) -> None:
    results = [nginx_result(tmp_path, PROXY_TO_LOCAL_MTA.bad), stock_postfix(tmp_path)]
    assert [f for r in results for f in r.findings] == []  # neither is open on its own
    [f] = cross_findings(results)
    assert (f.rule, f.category, f.severity) == ("CROSS-PROXY-TO-LOCAL-MTA",
                                                Category.SMTP_VIA_PROXY, Severity.CRITICAL)
    texts = "\n".join(e.text for e in f.evidence)
    assert "proxy_pass 127.0.0.1:25" in texts
    assert "mynetworks = 127.0.0.0/8" in texts
    assert f.location.line == PROXY_TO_LOCAL_MTA.bad.splitlines().index(
        "        proxy_pass 127.0.0.1:25;") + 1
    # Its edit closes the proxy to outsiders, which ends the chain; nginx accepts the result.
    apply_edits([f])
    assert cross_findings([NginxAuditor().audit(tmp_path / "nginx" / "nginx.conf",
                                                AuditOptions()), results[1]]) == []
    if Path(STREAM).exists():
        ok, out = NginxAuditor().config_test(tmp_path / "nginx" / "nginx.conf") or (False, "")
        assert ok, out


def test_catalogue_good_is_quiet(tmp_path: Path) -> None:
    results = [nginx_result(tmp_path, PROXY_TO_LOCAL_MTA.good), stock_postfix(tmp_path)]
    assert cross_findings(results) == []


def test_mta_not_trusting_loopback_breaks_the_chain(tmp_path: Path) -> None:
    d = tmp_path / "pf"
    d.mkdir()
    (d / "main.cf").write_text("compatibility_level = 3.6\nmynetworks = 192.168.1.0/24\n")
    results = [nginx_result(tmp_path, PROXY_TO_LOCAL_MTA.bad),
               PostfixAuditor().audit(d, AuditOptions())]
    assert cross_findings(results) == []


HTTP_ANY = """pid nginx.pid;
error_log error.log;
events {}
http {
    server {
        listen 8080;
        location / { proxy_pass http://$http_host; }
    }
}
"""


def test_http_level_proxy_to_postfix_is_not_a_chain_but_to_exim_it_is(tmp_path: Path) -> None:
    ngx = nginx_result(tmp_path, HTTP_ANY)
    assert cross_findings([ngx, stock_postfix(tmp_path)]) == []  # GET/POST end the session
    ex = tmp_path / "exim.conf"
    ex.write_text("hostlist relay_from_hosts = 127.0.0.1\nacl_smtp_rcpt = acl_check_rcpt\n"
                  "begin acl\nacl_check_rcpt:\n  accept hosts = +relay_from_hosts\n"
                  "  require domains = @\n")
    [f] = cross_findings([ngx, EximAuditor().audit(ex, AuditOptions())])
    assert f.severity == Severity.MEDIUM


def test_reads_the_shape_other_proxy_auditors_publish() -> None:
    squid = AuditResult(server="squid", config="/etc/squid/squid.conf", facts={"proxy_paths": [
        {"server": "squid", "config": "/etc/squid/squid.conf", "listen": "*:3128",
         "open_to_outside": True, "reaches_ports": [25, 443], "tunnel_ports": [25, 443],
         "reaches_loopback": True, "loopback_ports": [25, 443], "clients": "outside"}]})
    mta = AuditResult(server="postfix", config="/etc/postfix", facts={"mta": [
        {"server": "postfix", "service": "smtp", "listen": ["*:25"],
         "trusted_networks": ["127.0.0.0/8"], "trusts_loopback": True,
         "relays_for_trusted": True, "forbids_http_commands": True, "evidence": []}]})
    [f] = cross_findings([squid, mta])
    assert f.severity == Severity.CRITICAL
    assert f.location.path == "/etc/squid/squid.conf"
    # one hole, reported once, counted in both categories it is
    assert f.categories == (Category.SMTP_VIA_PROXY, Category.OPEN_SMTP_RELAY)
    assert f.to_dict()["categories"] == ["smtp-via-proxy", "open-smtp-relay"]
    path = squid.facts["proxy_paths"][0]
    # tunnels to 443 only: port 25 is reached by plain HTTP alone, which Postfix drops
    path["tunnel_ports"] = [443]
    assert cross_findings([squid, mta]) == []
    path["tunnel_ports"], path["loopback_tunnel_ports"] = [25, 443], [443]
    assert cross_findings([squid, mta]) == []
    path["loopback_tunnel_ports"] = [25]
    assert [f.severity for f in cross_findings([squid, mta])] == [Severity.CRITICAL]
    path["loopback_ports"] = [443]
    del path["loopback_tunnel_ports"]
    assert cross_findings([squid, mta]) == []


# ---- the real chain ------------------------------------------------------------------------

PROXY, PROXY_PORT, BIND = "127.0.8.30", 2525, "127.0.8.20"
MTA = "127.0.8.22"


def stream_conf(acl: str) -> str:
    return (f"load_module {STREAM};\npid nginx.pid;\nerror_log error.log;\nevents {{}}\n"
            f"stream {{\n    server {{\n        listen {PROXY}:{PROXY_PORT};\n{acl}"
            f"        proxy_bind {BIND};\n        proxy_pass {MTA}:25;\n    }}\n}}\n")


def stranger_relays_through_proxy() -> bool:
    try:
        code, _ = rcpt(PROXY, PROXY_PORT)
    except (smtplib.SMTPException, OSError):
        return False
    return code == 250


@pytest.mark.server
@pytest.mark.skipif(not Path(STREAM).exists() or shutil.which("postfix") is None,
                    reason="needs nginx's stream module and postfix")
def test_real_chain_agrees_with_the_audit() -> None:
    from tests.servers.postfix import postfix

    workdir = Path("/tmp/rg-audit-cross-postfix")
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        with postfix(MTA, 25, f"mynetworks = {BIND}/32\n", workdir=workdir) as mta:
            conf_dir = Path(str(mta.extra["conf_dir"]))
            pf = PostfixAuditor().audit(conf_dir, OPTIONS)
            assert pf.findings == []
            code, text = rcpt(MTA, 25)
            assert code in (454, 554), text  # the MTA alone is closed to the stranger
            for acl, chained in (("", True),
                                 ("        allow 127.0.0.1;\n        deny all;\n", False)):
                with nginx(stream_conf(acl), PROXY, PROXY_PORT) as proxy:
                    relayed = stranger_relays_through_proxy()
                    ngx = NginxAuditor().audit(proxy.config, OPTIONS)
                    found = cross_findings([ngx, pf])
                    diag = proxy.diagnostics() + mta.diagnostics()
                    assert relayed is chained, diag
                    assert [f.rule for f in found] == (
                        ["CROSS-PROXY-TO-LOCAL-MTA"] if chained else []), diag
                    if chained:
                        assert found[0].severity == Severity.CRITICAL
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.skipif(not Path(STREAM).exists(), reason="needs nginx's stream module")
def test_catalogue_examples_accepted_by_nginx(tmp_path: Path) -> None:
    for kind in ("bad", "good"):
        d = tmp_path / kind
        d.mkdir()
        (d / "nginx.conf").write_text(getattr(PROXY_TO_LOCAL_MTA, kind))
        ok, out = NginxAuditor().config_test(d / "nginx.conf") or (False, "no nginx")
        assert ok, out


# ---- every proxy family cites its own file:line in the chain finding -----------------------

PROXY_CONFIGS = [
    ("squid", "squid.conf", "# open\nhttp_port 3128\nhttp_access allow all\n", "http_port"),
    ("tinyproxy", "tinyproxy.conf", "# open\nPort 8888\n", "Port"),
    ("privoxy", "config", "# open\nlisten-address 0.0.0.0:8118\n", "listen-address"),
    ("dante", "danted.conf", "# open\ninternal: 0.0.0.0 port = 1080\nexternal: eth0\n"
     "socksmethod: none\nclient pass {\n from: 0/0 to: 0/0\n}\nsocks pass {\n"
     " from: 0/0 to: 0/0\n}\n", "internal:"),
    ("microsocks", "microsocks.sh", "# open\nmicrosocks -i 0.0.0.0 -p 1080\n", "microsocks"),
]


@pytest.mark.parametrize(("server", "name", "text", "listener"), PROXY_CONFIGS,
                         ids=[c[0] for c in PROXY_CONFIGS])
def test_chain_finding_cites_the_proxy_listener_line(tmp_path: Path, server: str, name: str,
                                                     text: str, listener: str) -> None:
    """The chain finding's location and evidence must name the proxy's file *and line*
    (the listener that opens the path), as for Apache and nginx, not the bare file."""
    from relayguard.audit import auditor_named

    conf = tmp_path / name
    conf.write_text(text, encoding="utf-8")
    proxy = auditor_named(server).audit(conf, OPTIONS)
    assert proxy.errors == []
    [f] = cross_findings([proxy, stock_postfix(tmp_path)])
    assert f.location.path == str(conf)
    assert f.location.line is not None
    assert text.splitlines()[f.location.line - 1].startswith(listener)
    assert any(e.location is not None and e.location.path == str(conf) and e.location.line
               for e in f.evidence)
