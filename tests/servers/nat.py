"""Loopback 1:1 NAT with nftables, for a canary that listens on one address while targets
are told another (`--canary-bind` behind NAT). Skips the test where nftables NAT is refused."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def one_to_one_nat(public: str, private: str) -> Iterator[None]:
    """Loopback 1:1 NAT with nftables: connections to `public` go to `private`."""
    nft = shutil.which("nft")
    table = f"relayguard_probe_nat_{os.getpid()}"
    script = (f"table ip {table} {{\n chain out {{\n  type nat hook output priority -100;\n"
              f"  ip daddr {public} dnat to {private}\n }}\n}}\n")
    if nft is None or subprocess.run([nft, "-f", "-"], input=script, text=True,
                                     capture_output=True, timeout=10).returncode != 0:
        pytest.skip("nftables NAT is not available here")
    try:
        yield
    finally:
        subprocess.run([nft, "delete", "table", "ip", table], capture_output=True, timeout=10)
