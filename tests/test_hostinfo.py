"""The host's own addresses, read from this machine's real /proc, and the dependency they free:
the audit no longer imports anything of `scan` to learn them."""

from __future__ import annotations

import socket
import subprocess
import sys

from relayguard.hostinfo import is_local_host, local_addresses, public_addresses


def test_local_addresses_are_this_machines() -> None:
    mine = local_addresses()
    assert "127.0.0.1" in mine
    # every address listed can be bound here: it really is this machine's
    for addr in mine[:8]:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        if addr.startswith("fe80:"):
            continue  # link-local needs a scope id to bind
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((addr, 0))
    assert is_local_host("127.0.0.1") and is_local_host("127.9.9.9", mine)
    assert not is_local_host("192.0.2.1", mine)
    assert public_addresses(["127.0.0.1", "10.1.2.3", "8.8.8.8", "2001:4860::8888"]) == [
        "8.8.8.8", "2001:4860::8888"]


def test_audit_does_not_import_scan() -> None:
    code = ("import sys, relayguard.audit, relayguard.audit.rules.postfix; "
            "print(sorted(m for m in sys.modules if m.startswith('relayguard.scan')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"
