"""nginx audit without a running daemon: each rule's must-fire / must-not-fire fixtures
(also accepted by `nginx -t`), includes, the stock Debian config, bad input, fuzzing."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relayguard.audit.base import AuditOptions
from relayguard.audit.nginx import NginxAuditor, load
from relayguard.audit.rules.nginx import RULES
from relayguard.errors import InputError
from relayguard.findings import Severity

REAL = Path("/work/shared/data/real-configs/nginx")
if not REAL.is_dir():  # CI clones the repo with shared/ beside it
    REAL = Path(__file__).resolve().parents[4] / "shared/data/real-configs/nginx"
OUTSIDE = AuditOptions(outside_client=ipaddress.ip_address("127.0.8.250"))
AUDITOR = NginxAuditor()
HAVE_NGINX = shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()

HEAD = """pid nginx.pid;
error_log error.log;
events {}
http {
    access_log off;
"""


def conf(servers: str) -> str:
    return HEAD + servers + "}\n"


# (name, config, rule id that must fire or None, unused); the finding must name the line of
# the config's (only) proxy_pass.
CASES = [
    ("http_host_default", conf("""    server {
        listen 127.0.8.10:8080 default_server;
        location / { proxy_pass http://$http_host$request_uri; }
    }
"""), "NGINX-OPEN-PROXY-HTTP-HOST", 8),
    # N4: $http_host is open even in a server that only receives its own name.
    ("http_host_named_server", conf("""    server {
        listen 127.0.8.10:8080 default_server;
        return 404;
    }
    server {
        listen 127.0.8.10:8080;
        server_name www.example.test;
        location / {
            proxy_pass http://$http_host;
        }
    }
"""), "NGINX-OPEN-PROXY-HTTP-HOST", 15),
    ("arg_through_set", conf("""    server {
        listen 127.0.8.10:8080;
        set $target $arg_url;
        location / { proxy_pass http://$target; }
    }
"""), "NGINX-OPEN-PROXY-HTTP-HOST", 9),
    ("capture_from_location", conf("""    server {
        listen 127.0.8.10:8080;
        location ~ ^/p/([^/]+)/(.*)$ { proxy_pass http://$1/$2; }
    }
"""), "NGINX-OPEN-PROXY-HTTP-HOST", 8),
    ("host_default", conf("""    server {
        listen 127.0.8.10:8080;
        location / { proxy_pass http://$host:8081$request_uri; }
    }
"""), "NGINX-OPEN-PROXY-HOST", 8),
    # The classic forward-proxy recipe (gixy and gixy-ng miss it).
    ("scheme_host_forward_proxy", conf("""    server {
        listen 127.0.8.10:8080 default_server;
        resolver 127.0.0.53;
        location / { proxy_pass $scheme://$host$request_uri; }
    }
"""), "NGINX-OPEN-PROXY-HOST", 0),
    ("host_regex_catch_all", conf("""    server {
        listen 127.0.8.10:8080 default_server;
        return 404;
    }
    server {
        listen 127.0.8.10:8080;
        server_name ~^(?<sub>.+)$;
        location / { proxy_pass http://$host; }
    }
"""), "NGINX-OPEN-PROXY-HOST", 13),
    ("realip_trusts_everyone", conf("""    server {
        listen 127.0.8.10:8080;
        set_real_ip_from 0.0.0.0/0;
        allow 127.0.0.1;
        deny all;
        location / { proxy_pass http://$http_host$request_uri; }
    }
"""), "NGINX-REALIP-TRUST-ALL", 0),
    ("unanchored_host_check", conf("""    server {
        listen 127.0.8.10:8080;
        if ($http_host !~ "example\\.test") { return 403; }
        location / { proxy_pass http://$http_host$request_uri; }
    }
"""), "NGINX-OPEN-PROXY-HTTP-HOST", 0),
    # Must not fire:
    ("anchored_host_whitelist", conf("""    server {
        listen 127.0.8.10:8080;
        if ($http_host !~* "^(www\\.)?example\\.test$") { return 403; }
        location / { proxy_pass http://$http_host$request_uri; }
    }
"""), None, 0),
    ("realip_trusts_the_balancer", conf("""    server {
        listen 127.0.8.10:8080;
        set_real_ip_from 192.0.2.10;
        allow 127.0.0.1;
        deny all;
        location / { proxy_pass http://$http_host$request_uri; }
    }
"""), None, 0),
    ("host_named_server", conf("""    server {
        listen 127.0.8.10:8080 default_server;
        return 404;
    }
    server {
        listen 127.0.8.10:8080;
        server_name www.example.test;
        location / { proxy_pass http://$host:8081; }
    }
"""), None, 0),
    ("http_host_acl", conf("""    server {
        listen 127.0.8.10:8080;
        allow 127.0.0.1;
        deny all;
        location / { proxy_pass http://$http_host$request_uri; }
    }
"""), None, 0),
    ("http_host_basic_auth", conf("""    server {
        listen 127.0.8.10:8080;
        location / {
            auth_basic "proxy";
            auth_basic_user_file htpasswd;
            proxy_pass http://$http_host;
        }
    }
"""), None, 0),
    ("internal_location", conf("""    server {
        listen 127.0.8.10:8080;
        location /x { internal; proxy_pass http://$http_host; }
    }
"""), None, 0),
    ("map_whitelist", conf("""    map $http_host $backend {
        default 127.0.0.1:1;
        www.example.test 127.0.8.11:8081;
    }
    server {
        listen 127.0.8.10:8080;
        location / { proxy_pass http://$backend; }
    }
"""), None, 0),
    ("literal_upstream", conf("""    upstream backend { server 127.0.8.11:8081; }
    server {
        listen 127.0.8.10:8080;
        location / { proxy_pass http://backend$request_uri; }
    }
"""), None, 0),
]


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    p = tmp_path / "nginx.conf"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(("name", "text", "rule", "line"), CASES, ids=[c[0] for c in CASES])
def test_fixture(tmp_path: Path, name: str, text: str, rule: str | None, line: int) -> None:
    path = write(tmp_path, text)
    result = AUDITOR.audit(path, OUTSIDE)
    assert result.errors == []
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "proxy_pass" in t)
    got = [(f.rule, f.location.line) for f in result.findings]
    assert got == ([(rule, line)] if rule else [])
    for f in result.findings:
        assert f.edits, "every finding proposes an edit"
        assert any(e.location and e.location.line == line for e in f.evidence)


@pytest.mark.skipif(not HAVE_NGINX, reason="nginx not installed")
@pytest.mark.parametrize(("name", "text"), [(c[0], c[1]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_fixture_accepted_by_nginx(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path, text)
    if "auth_basic_user_file" in text:
        (tmp_path / "htpasswd").write_text("u:x\n")
    ok, out = AUDITOR.config_test(path) or (False, "no nginx")
    assert ok, out


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_catalogue_examples(tmp_path: Path, rule) -> None:
    bad = AUDITOR.audit(write(tmp_path, rule.bad), OUTSIDE)
    assert rule.id in {f.rule for f in bad.findings}
    good = AUDITOR.audit(write(tmp_path, rule.good), OUTSIDE)
    assert good.findings == []
    if HAVE_NGINX and "proxy_connect" not in rule.bad:
        # proxy_connect is a third-party module Debian does not ship: nginx -t cannot load it.
        for text in (rule.bad, rule.good):
            ok, out = AUDITOR.config_test(write(tmp_path, text)) or (False, "")
            assert ok, out


def test_proxy_connect_to_smtp_port_fires_critical_and_edit_narrows_ports(tmp_path: Path) -> None:
    text = conf("""    server {
        listen 127.0.8.10:8080;
        proxy_connect;
        proxy_connect_allow 443 563 20-30;
    }
""")
    result = AUDITOR.audit(write(tmp_path, text), OUTSIDE)
    [f] = result.findings
    assert (f.rule, f.severity, f.category.value) == ("NGINX-PROXY-CONNECT", Severity.CRITICAL,
                                                      "smtp-via-proxy")
    assert [e.line for e in f.edits] == [8, 9]
    assert f.edits[1].new == ("        proxy_connect_allow 443;",)


def test_edit_closes_the_hole_and_nginx_accepts_it(tmp_path: Path) -> None:
    from tests.audit.relay_helpers import apply_edits

    path = write(tmp_path, CASES[1][1])
    apply_edits(AUDITOR.audit(path, OUTSIDE).findings)
    assert AUDITOR.audit(path, OUTSIDE).findings == []
    if HAVE_NGINX:
        ok, out = AUDITOR.config_test(path) or (False, "")
        assert ok, out


def test_includes_globs_relative_to_prefix(tmp_path: Path) -> None:
    (tmp_path / "sites-enabled").mkdir()
    (tmp_path / "sites-enabled" / "b.conf").write_text(
        "server {\n    listen 127.0.8.10:8080;\n"
        "    location / { proxy_pass http://$http_host; }\n}\n")
    (tmp_path / "sites-enabled" / "a.conf").write_text(
        "server {\n    listen 127.0.8.10:8080 default_server;\n    return 404;\n}\n")
    path = write(tmp_path, HEAD + "    include sites-enabled/*.conf;\n}\n")
    result = AUDITOR.audit(path, OUTSIDE)
    [f] = result.findings
    assert f.location.path == str(tmp_path / "sites-enabled" / "b.conf")
    assert f.location.line == 3
    assert len(result.files) == 3


def test_missing_plain_include_is_an_error_not_silence(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "    include nothere.conf;\n    include none/*.conf;\n}\n")
    result = AUDITOR.audit(path, OUTSIDE)
    assert [(e.line, "nothere.conf" in e.message) for e in result.errors] == [(6, True)]


def test_stock_debian_config_has_nothing_above_info(tmp_path: Path) -> None:
    shutil.copy(REAL / "nginx.conf", tmp_path / "nginx.conf")
    (tmp_path / "sites-enabled").mkdir()
    shutil.copy(REAL / "sites-available-default", tmp_path / "sites-enabled" / "default")
    shutil.copy(REAL / "proxy_params", tmp_path / "proxy_params")
    (tmp_path / "mime.types").write_text("types { text/html html; }\n")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "modules-enabled").mkdir()
    result = AUDITOR.audit(tmp_path, AuditOptions())
    assert result.errors == []
    assert [f for f in result.findings if f.severity > Severity.INFO] == []
    assert str(tmp_path / "sites-enabled" / "default") in result.files


@pytest.mark.skipif(not Path("/etc/nginx/nginx.conf").is_file(), reason="nginx not installed")
def test_installed_config_has_nothing_above_info() -> None:
    assert AUDITOR.candidates(Path("/")) == [Path("/etc/nginx/nginx.conf")]
    result = AUDITOR.audit(Path("/etc/nginx/nginx.conf"), AuditOptions())
    assert [f for f in result.findings if f.severity > Severity.INFO] == []


def test_unbalanced_braces_are_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        load(write(tmp_path, "http {\n  server {\n"))
    assert "expecting" in exc.value.message


def test_not_a_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        load(tmp_path / "absent.conf")


def test_recognise(tmp_path: Path) -> None:
    assert AUDITOR.recognise(write(tmp_path, CASES[0][1]))
    other = tmp_path / "main.cf"
    other.write_text("mynetworks = 127.0.0.0/8\n")
    assert not AUDITOR.recognise(other)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("server{}; $http_host proxy_pass listen#\"'\\\n\t"
                                              "location~^()include*.:/80abc")), max_size=300))
def test_fuzz_parser_never_crashes(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "nginx.conf"
        p.write_text(text, encoding="utf-8")
        try:
            result = AUDITOR.audit(p, OUTSIDE)
        except InputError:
            return
        for f in result.findings:
            assert f.location.path is not None


@pytest.mark.skipif(not HAVE_NGINX, reason="nginx not installed")
def test_config_test_of_a_copied_debian_tree_checks_the_copy(tmp_path: Path) -> None:
    shutil.copy(REAL / "nginx.conf", tmp_path / "nginx.conf")
    (tmp_path / "sites-enabled").mkdir()
    shutil.copy(REAL / "sites-available-default", tmp_path / "sites-enabled" / "default")
    shutil.copy("/etc/nginx/mime.types", tmp_path / "mime.types")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "modules-enabled").mkdir()
    ok, out = AUDITOR.config_test(tmp_path) or (False, "")
    assert ok, out
    # nginx itself would read the live /etc/nginx/sites-enabled; the check reads the copy.
    (tmp_path / "sites-enabled" / "default").write_text("server { bogus_directive; }\n")
    ok, out = AUDITOR.config_test(tmp_path) or (True, "")
    assert not ok and "bogus_directive" in out


def test_host_header_forward_is_low_hardening_with_an_edit(tmp_path: Path) -> None:
    text = conf("""    server {
        listen 127.0.8.10:8080;
        location / {
            proxy_set_header Host $http_host;
            proxy_pass http://127.0.8.11:8081;
        }
    }
""")
    path = write(tmp_path, text)
    [f] = AUDITOR.audit(path, OUTSIDE).findings
    assert (f.rule, f.severity, f.category.value, f.location.line) == (
        "NGINX-HOST-HEADER-FORWARD", Severity.LOW, "hardening", 9)
    assert f.edits[0].new == ("            proxy_set_header Host $host;",)


def test_include_loops_and_fan_out_are_bounded(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    for i in range(8):
        (tmp_path / "d" / f"{i}.conf").write_text("include d/*.conf;\n")
    path = write(tmp_path, HEAD + "    include d/*.conf;\n}\n")
    result = AUDITOR.audit(path, OUTSIDE)
    assert result.errors and len(result.files) <= 2001


STREAM_HEAD = ("load_module /usr/lib/nginx/modules/ngx_stream_module.so;\npid nginx.pid;\n"
               "error_log error.log;\nevents {}\nstream {\n")


@pytest.mark.parametrize(("body", "expected"), [
    ("    server {\n        listen 127.0.8.10:8443;\n        ssl_preread on;\n"
     "        resolver 127.0.0.53;\n        proxy_pass $ssl_preread_server_name:443;\n    }\n",
     ("NGINX-STREAM-SNI-PROXY", Severity.HIGH, "open-connect-proxy")),
    ("    map $ssl_preread_server_name $up {\n        default 127.0.0.1:1;\n"
     "        www.example.test 127.0.8.11:443;\n    }\n"
     "    server {\n        listen 127.0.8.10:8443;\n        ssl_preread on;\n"
     "        proxy_pass $up;\n    }\n", None),
], ids=["sni_any_host", "sni_whitelist_map"])
def test_stream_sni_proxy(tmp_path: Path, body: str, expected: tuple | None) -> None:
    path = write(tmp_path, STREAM_HEAD + body + "}\n")
    got = [(f.rule, f.severity, f.category.value) for f in AUDITOR.audit(path, OUTSIDE).findings]
    assert got == ([expected] if expected else [])
    if HAVE_NGINX and Path("/usr/lib/nginx/modules/ngx_stream_module.so").exists():
        ok, out = AUDITOR.config_test(path) or (False, "")
        assert ok, out


def test_http_host_proxy_counts_as_open_http_proxy_and_smtp_via_proxy(tmp_path: Path) -> None:
    """Like Apache's dynamic ProxyPass, a client-steered proxy_pass is an open HTTP proxy;
    reaching any port makes it the spam vector too: one finding, both categories."""
    p = tmp_path / "nginx.conf"
    p.write_text(conf("    server {\n        listen 8080;\n"
                      "        location / { proxy_pass http://$http_host; }\n    }\n"))
    [f] = AUDITOR.audit(p, OUTSIDE).findings
    assert f.rule == "NGINX-OPEN-PROXY-HTTP-HOST" and f.severity is Severity.CRITICAL
    assert [c.value for c in f.categories] == ["smtp-via-proxy", "open-http-proxy"]
