"""`relayguard audit --fix` verifies each patch in a scratch copy of the config directory.

These cases once made it refuse a good patch: a config named by a bare file name or `.`, a
Postfix map inside the config directory named by its absolute path (the copy rewrote the line
the edit quotes), and one rule firing twice (each fix was judged by the other finding). The
server's own config test runs on the copy wherever the daemon is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relayguard.audit.fix import _still_open
from relayguard.findings import Category, Confidence, Edit, Finding, Location, Severity

REAL = Path("/work/shared/data/real-configs")
if not REAL.is_dir():
    REAL = Path(__file__).resolve().parents[3] / "shared/data/real-configs"
MODULES = "/usr/lib/apache2/modules"


def fix_json(*args: str, cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "relayguard", "audit", *args, "--fix",
                           "--format", "json"], capture_output=True, text=True, timeout=180,
                          cwd=cwd, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def offered_rules(doc: dict) -> list[str]:
    by_print = {f["fingerprint"]: f["rule"] for f in doc["findings"]}
    return sorted(by_print[x] for p in doc["stats"]["fixes"] for x in p["fixed"])


def refusals(doc: dict) -> list[str]:
    return [f"{n['rule']}: {n['why']}" for p in doc["stats"]["fixes"] for n in p["not_offered"]]


@pytest.mark.parametrize("arg", ["httpd.conf", "."])
def test_config_named_relative_to_the_working_directory(tmp_path: Path, arg: str) -> None:
    (tmp_path / "httpd.conf").write_text(
        f"ServerRoot {tmp_path}\nPidFile {tmp_path}/httpd.pid\nListen 127.0.11.9:8099\n"
        f"LoadModule mpm_event_module {MODULES}/mod_mpm_event.so\n"
        f"LoadModule authz_core_module {MODULES}/mod_authz_core.so\n"
        f"LoadModule proxy_module {MODULES}/mod_proxy.so\n"
        f"LoadModule proxy_http_module {MODULES}/mod_proxy_http.so\n"
        f"ErrorLog {tmp_path}/error.log\nProxyRequests On\n")
    doc = fix_json(arg, cwd=tmp_path)
    assert "APACHE-OPEN-FORWARD-PROXY" in offered_rules(doc), refusals(doc)
    [plan] = doc["stats"]["fixes"]
    assert "-ProxyRequests On" in plan["diff"] and "+ProxyRequests Off" in plan["diff"]
    assert not [r for r in refusals(doc) if "cannot verify" in r]


def test_postfix_map_inside_the_config_directory(tmp_path: Path) -> None:
    conf = tmp_path / "postfix"
    conf.mkdir()
    shutil.copy(REAL / "postfix/master.cf", conf / "master.cf")
    (conf / "clients.cidr").write_text("0.0.0.0/0 OK\n")
    (conf / "main.cf").write_text(
        "compatibility_level = 3.6\nmyhostname = mx.example.test\n"
        "mynetworks = 127.0.0.0/8 [::1]/128\nsmtpd_relay_restrictions = permit_mynetworks, "
        f"check_client_access cidr:{conf}/clients.cidr, reject_unauth_destination\n")
    doc = fix_json(str(conf), cwd=tmp_path)
    assert offered_rules(doc) == ["POSTFIX-PERMIT-BEFORE-UNAUTH-DEST"], refusals(doc)
    assert f"cidr:{conf}/clients.cidr" in doc["stats"]["fixes"][0]["diff"]


def test_one_rule_firing_twice_gets_both_fixes(tmp_path: Path) -> None:
    (tmp_path / "nginx.conf").write_text(
        "pid nginx.pid;\nerror_log error.log;\nevents {}\nhttp {\n"
        "    server {\n        listen 127.0.11.9:8083;\n"
        "        location / { proxy_pass http://$http_host; }\n    }\n"
        "    server {\n        listen 127.0.11.9:8084;\n"
        "        location / { proxy_pass http://$http_host$request_uri; }\n    }\n}\n")
    doc = fix_json("nginx.conf", cwd=tmp_path)
    assert offered_rules(doc) == ["NGINX-OPEN-PROXY-HTTP-HOST"] * 2, refusals(doc)
    assert doc["stats"]["fixes"][0]["diff"].count("+        deny all;") == 2


def test_a_fix_outside_the_config_directory_is_refused_in_plain_words(tmp_path: Path) -> None:
    (tmp_path / "actions").mkdir()
    (tmp_path / "actions" / "default.action").write_text("{+block}\n/ads\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config").write_text(
        f"confdir {tmp_path}/actions\nlisten-address 0.0.0.0:8118\nactionsfile default.action\n")
    doc = fix_json(str(tmp_path / "conf" / "config"), cwd=tmp_path)
    [why] = [r for r in refusals(doc) if r.startswith("PRIVOXY-CONNECT-ANY-PORT")]
    assert f"it edits {tmp_path}/actions/default.action, outside the config directory " \
        f"{tmp_path}/conf; apply the rule's fix by hand" in why
    assert "subpath" not in why and "relative" not in why


def _finding(line: int) -> Finding:
    return Finding("X-RULE", Category.OPEN_HTTP_PROXY, Severity.HIGH, Confidence.LIKELY, "t",
                   Location("/cfg/a.conf", line))


def test_a_hole_is_followed_to_where_the_edits_move_it() -> None:
    copy, origin = Path("/tmp/copy"), Path("/cfg")
    target = _finding(10)
    insert = [Edit("/cfg/a.conf", 3, (), ("one", "two"))]
    moved = Finding("X-RULE", target.category, target.severity, target.confidence, "t",
                    Location("/tmp/copy/a.conf", 12))
    assert _still_open([target], [target], [moved], insert, copy, origin) == [target]
    assert _still_open([target], [target], [], insert, copy, origin) == []
    # the same rule firing as often as before somewhere else: moved, not closed
    elsewhere = Finding("X-RULE", target.category, target.severity, target.confidence, "t",
                        Location("/tmp/copy/a.conf", 40))
    assert _still_open([target], [target], [elsewhere], insert, copy, origin) == [target]
    other = _finding(30)
    assert _still_open([target], [target, other], [elsewhere], insert, copy, origin) == []


def test_write_changes_only_the_patched_lines_bytes(tmp_path: Path) -> None:
    """A config saved on Windows in ISO-8859-1 (CRLF, `ü` as one byte): `--write` must keep
    every line it does not patch byte for byte, as the diff it printed promises, instead of
    rewriting the file with LF endings and U+FFFD in the comments."""
    stock = (REAL / "tinyproxy/tinyproxy.conf").read_bytes().split(b"\n")
    lines = [b"# Proxy f\xfcr das B\xfcro"] + [ln for ln in stock if not ln.startswith(b"Allow ")]
    conf = tmp_path / "tinyproxy.conf"
    conf.write_bytes(b"\r\n".join(lines))
    before = conf.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "relayguard", "audit", str(conf), "--fix",
                           "--write", "--format", "json"], capture_output=True, text=True,
                          timeout=180, check=False)
    doc = json.loads(proc.stdout)
    assert any(n.startswith("patched; backup kept at") for n in doc["notes"]), doc["notes"]
    after = conf.read_bytes()
    added = [ln for ln in after.split(b"\r\n") if ln not in before.split(b"\r\n")]
    assert added == [b"ConnectPort 443", b"Allow 127.0.0.1", b"Allow ::1"]
    assert after.replace(b"\r\n".join([b"", *added]), b"") == before
