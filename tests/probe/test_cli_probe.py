"""`relayguard probe` on the command line: JSON for scripts, exit codes, usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.hosts import with_hosts
from tests.servers.microsocks import microsocks

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
SCANNER = "127.0.4.99"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relayguard", "probe", *args],
                          capture_output=True, text=True, timeout=120, env=ENV)


@pytest.mark.server
def test_open_socks_proxy_json_and_exit_1() -> None:
    with microsocks("127.0.4.30", 1080):
        done = run("127.0.4.30:1080", "127.0.4.30:1081", "--source-address", SCANNER,
                   "--canary-host", "127.0.4.9", "--timeout", "2", "--format", "json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["command"] == "probe"
    assert sorted({f["category"] for f in doc["findings"]}) == ["open-socks-proxy",
                                                                 "smtp-via-proxy"]
    assert {f["target"] for f in doc["findings"]} == {"127.0.4.30:1080"}
    assert all(f["confidence"] == "confirmed" for f in doc["findings"])
    assert all(any(e["kind"] == "transcript" for e in f["evidence"]) for f in doc["findings"])
    assert doc["errors"] == []
    assert doc["stats"]["services"] == {"closed": 1, "socks5": 1}


def test_nothing_listening_is_clean_exit_0() -> None:
    done = run("127.0.4.31", "--ports", "1,2,3", "--source-address", SCANNER,
               "--canary-host", "127.0.4.9", "--timeout", "1", "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["findings"] == [] and doc["stats"]["services"] == {"closed": 3}


@pytest.mark.parametrize(("args", "message"), [
    ((), "no target given"),
    (("127.0.0.0/16",), "--allow-large"),
    (("bad host!",), "not a host name or IP address"),
    (("127.0.4.1", "--ports", "70000"), "port must be 1-65535"),
    (("127.0.4.1", "--timeout", "0"), "--timeout must be between"),
    (("127.0.4.1", "--source-address", "nowhere"), "not an IP address"),
    (("127.0.4.1", "--smtp-check-target", "mx"), "expected HOST:PORT"),
    (("--targets-file", "/nonexistent/targets"), "cannot read targets file"),
])
def test_usage_errors_exit_2_with_a_clear_message(args: tuple[str, ...], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_help_documents_that_confirm_delivery_sends_a_message() -> None:
    done = run("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "--confirm-delivery" in text and "SEND ONE tiny test message" in text


def test_help_keeps_square_brackets_that_rich_markup_would_eat() -> None:
    text = " ".join(run("--help").stdout.replace("│", " ").split())
    assert "IPv4/IPv6 literal, [v6]:port or CIDR" in text
    assert "<nonce>@[canary-host]" in text
    assert "\\[" not in text


def test_a_source_address_this_host_lacks_is_an_error_not_closed_ports() -> None:
    # ::2 is never configured on a host: binding to it fails, so no port was ever tried.
    done = run("[::1]:9", "--source-address", "::2", "--canary-host", "::1", "--format", "json")
    assert done.returncode == 2, done.stderr
    doc = json.loads(done.stdout)
    assert "services" not in doc["stats"]
    assert [e["message"] for e in doc["errors"]] == [
        "--source-address ::2 is not an address of this host; nothing was probed"]


@pytest.mark.server
def test_every_address_of_a_name_is_probed(tmp_path: Path) -> None:
    """A name with two addresses whose open proxy is on the second: probing only the first
    (as the probe once did) would call it clean."""
    argv = with_hosts([sys.executable, "-m", "relayguard", "probe", "twoaddr.test:1080",
                       "--source-address", SCANNER, "--canary-host", "127.0.4.9",
                       "--timeout", "2", "--format", "json"],
                      {"twoaddr.test": ["127.0.4.35", "127.0.4.36"]}, tmp_path)
    with microsocks("127.0.4.36", 1080):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert {f["target"] for f in doc["findings"]} == {"127.0.4.36:1080"}
    assert "open-socks-proxy" in {f["category"] for f in doc["findings"]}
    assert doc["stats"]["services"] == {"closed": 1, "socks5": 1}
    assert any("twoaddr.test resolves to 2 addresses" in n and "127.0.4.35" in n
               for n in doc["notes"]), doc["notes"]
