"""Every parser reads files through one bounded reader: a config that names a device
(`Include /dev/zero`, `include /dev/zero`) or is a device itself gets a clear error naming it,
within a memory limit, never a hang, a MemoryError or an empty message."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from relayguard.audit import auditors

TYPES = [a.name for a in auditors()]
LIMIT = 1 << 30  # 1 GiB of address space: reading /dev/zero whole would need far more


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def audit_json(*args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "relayguard", "audit", *args, "--format", "json"],
                          capture_output=True, text=True, timeout=60, check=False,
                          preexec_fn=_limit_memory)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("kind", TYPES)
def test_a_device_given_as_the_config_is_refused(kind: str) -> None:
    code, doc = audit_json("--type", kind, "/dev/zero")
    assert code == 2
    [err] = doc["errors"]
    assert err["source"] == "/dev/zero" and err["message"], err


@pytest.mark.parametrize(("name", "kind", "text"), [
    ("httpd.conf", "apache", "ServerRoot {dir}\nInclude /dev/zero\n"),
    ("squid.conf", "squid", "http_port 3128\ninclude /dev/zero\n"),
    ("nginx.conf", "nginx", "events {{}}\ninclude /dev/zero;\n"),
    ("exim4.conf", "exim", ".include /dev/zero\nbegin acl\n"),
])
def test_an_include_of_a_device_is_refused_by_name(tmp_path: Path, name: str, kind: str,
                                                   text: str) -> None:
    conf = tmp_path / name
    conf.write_text(text.format(dir=tmp_path))
    code, doc = audit_json("--type", kind, str(conf))
    assert code == 2
    messages = [f"{e['source']}: {e['message']}" for e in doc["errors"]]
    assert any("/dev/zero" in m and "not a regular file" in m for m in messages), messages


def test_postfix_table_that_is_a_device_is_an_error_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(
        "compatibility_level = 3.6\nmynetworks = 127.0.0.0/8\nsmtpd_relay_restrictions = "
        "permit_mynetworks, check_client_access cidr:/dev/zero, reject_unauth_destination\n")
    code, doc = audit_json(str(tmp_path))
    assert code == 2
    assert any("/dev/zero" in e["message"] and "not a regular file" in e["message"]
               for e in doc["errors"]), doc["errors"]


@pytest.mark.parametrize(("data", "needle"), [
    (b"\x7fELF\x02\x01\x01\x00\x00\x00garbage", "binary data"),
    (b"events {}\nhttp_port 3128\ninclude /etc/nothing", "ends inside a directive"),
])
def test_nginx_unparsable_file_says_why(tmp_path: Path, data: bytes, needle: str) -> None:
    conf = tmp_path / "bin.conf"
    conf.write_bytes(data)
    code, doc = audit_json("--type", "nginx", str(conf))
    assert code == 2
    [err] = doc["errors"]
    assert needle in err["message"], err
