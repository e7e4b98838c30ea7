"""Bad input gets a clear error naming file and line, exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayguard.audit import AuditOptions
from relayguard.audit.apache import logical_lines, parse_apache, split_args
from relayguard.audit.rules.apache import check

HEADER = "LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so\n" \
         "LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so\n"


def run_audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relayguard", "audit", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    for needle in needles:
        assert needle in out, out


def test_missing_path(tmp_path: Path) -> None:
    assert_clean_error(run_audit(str(tmp_path / "nope.conf")), "nope.conf", "no such file")


def test_missing_include_names_the_including_line(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text("ProxyRequests Off\n\nInclude conf.d/missing.conf\n")
    assert_clean_error(run_audit(str(conf)), f"{conf}:3", "missing.conf")


def test_include_glob_matching_nothing_is_an_error_but_includeoptional_is_not(
        tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text("IncludeOptional nothing/*.conf\nInclude nothing/*.conf\n")
    proc = run_audit(str(conf), "--format", "json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2
    assert [(e["source"], e["line"]) for e in doc["errors"]] == [(str(conf), 2)]


def test_dangling_include_is_unreadable(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    os.symlink(tmp_path / "gone.conf", tmp_path / "site.conf")
    conf.write_text(HEADER + "Include site.conf\n")
    assert_clean_error(run_audit(str(conf)), f"{conf}:3")


def test_include_loop(tmp_path: Path) -> None:
    (tmp_path / "httpd.conf").write_text("ProxyRequests Off\nInclude a.conf\n")
    (tmp_path / "a.conf").write_text("# a\nInclude b.conf\n")
    (tmp_path / "b.conf").write_text("Include a.conf\n")
    assert_clean_error(run_audit(str(tmp_path / "httpd.conf")), "include loop",
                       f"{tmp_path / 'b.conf'}:1")


def test_binary_garbage(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_bytes(b"ProxyRequests On\n" + bytes(range(256)) * 10)
    assert_clean_error(run_audit(str(conf)), "binary data", f"{conf}:2")


def test_binary_include_is_reported_and_the_rest_still_audited(tmp_path: Path) -> None:
    (tmp_path / "httpd.conf").write_text(HEADER + "Include blob.conf\nProxyRequests On\n")
    (tmp_path / "blob.conf").write_bytes(b"\x7fELF\x00\x01\x02")
    proc = run_audit(str(tmp_path / "httpd.conf"), "--format", "json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2
    assert "binary data" in doc["errors"][0]["message"]
    assert "APACHE-OPEN-FORWARD-PROXY" in {f["rule"] for f in doc["findings"]}


def test_unterminated_section(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text(HEADER + "ProxyRequests On\n<Proxy \"*\">\n    Require all denied\n")
    assert_clean_error(run_audit(str(conf)), f"{conf}:4", "never closed")


def test_sections_nested_without_end_are_an_error_not_a_recursion_crash(tmp_path: Path) -> None:
    """An HTML page dropped into a directory that `IncludeOptional` reads (thousands of
    unclosed `<div>`-like tags) once crashed the walk with RecursionError."""
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "notes.conf").write_text("<div class=x>\n" * 3000)
    conf = tmp_path / "httpd.conf"
    conf.write_text(HEADER + "IncludeOptional conf.d\nProxyRequests On\n")
    proc = run_audit("--format", "json", str(conf))
    assert_clean_error(proc, "nested deeper than")
    doc = json.loads(proc.stdout)
    assert any(f["rule"] == "APACHE-OPEN-FORWARD-PROXY" for f in doc["findings"])


def test_mismatched_close(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text("<Proxy *>\n</Location>\n</Proxy>\n")
    assert_clean_error(run_audit(str(conf)), f"{conf}:2", "expected </Proxy>")


def test_huge_line_is_skipped_with_an_error(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text(HEADER + "ServerAdmin " + "x" * 200_000 + "\nProxyRequests On\n")
    proc = run_audit(str(conf), "--format", "json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2
    assert doc["errors"][0]["line"] == 3
    assert "APACHE-OPEN-FORWARD-PROXY" in {f["rule"] for f in doc["findings"]}


def test_directory_without_a_root_config(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    assert_clean_error(run_audit(str(tmp_path), "--type", "apache"), "no apache2.conf")


def test_bad_outside_client_is_a_usage_error(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text("ProxyRequests Off\n")
    assert_clean_error(run_audit(str(conf), "--outside-client", "not-an-ip"), "not an IP")


def test_json_contract_on_a_finding(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text(HEADER + "ProxyRequests On\n")
    proc = run_audit(str(conf), "--format", "json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert {"tool", "version", "command", "findings", "errors", "stats"} <= doc.keys()
    f = next(x for x in doc["findings"] if x["rule"] == "APACHE-OPEN-FORWARD-PROXY")
    assert f["category"] == "open-http-proxy"
    assert f["severity"] == "critical"
    assert f["location"] == {"path": str(conf), "line": 3}
    assert f["evidence"] and f["fix"]
    assert run_audit(str(conf), "--fail-on", "info").returncode == 1
    quiet = tmp_path / "quiet.conf"
    quiet.write_text("ProxyRequests Off\n")
    assert run_audit(str(quiet)).returncode == 0


# --------------------------------------------------------------------------- fuzzing

apache_text = st.text(
    alphabet=st.sampled_from(list("<>/\\\"' \t\n#*${}:.-_ProxyRequestsOnIncludeLocation"
                                  "Require all granted VirtualHost IfModule AllowCONNECT 25")),
    max_size=400)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=apache_text)
def test_parser_and_rules_never_crash_on_random_text(tmp_path: Path, text: str) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text(HEADER + text, encoding="utf-8")
    cfg = parse_apache(conf)
    findings, _ = check(cfg, AuditOptions())
    for e in cfg.errors:
        assert e.line is None or e.line >= 1
    for f in findings:  # every finding points at a real line of the file
        assert f.location.path == str(conf) and (f.location.line or 0) >= 1


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_tokenizers_total_on_any_unicode(text: str) -> None:
    for _, line in logical_lines(text):
        split_args(line)
