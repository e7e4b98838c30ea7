"""Network namespaces for tests that need their own interfaces, port ranges or nftables: made
with `ip netns`, removed afterwards; the test skips (with the reason) where it cannot make one."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def run(*argv: str, timeout: float = 20,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=cwd)


def must(*argv: str) -> None:
    res = run(*argv)
    assert res.returncode == 0, f"{' '.join(argv)}: {res.stderr}"


def inside(ns: str | None, *argv: str) -> list[str]:
    """`argv` run in namespace `ns` (None: this process's own)."""
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


@contextlib.contextmanager
def namespace(tag: str, port_range: tuple[int, int] | None = None) -> Iterator[str]:
    """A fresh netns with loopback up and, when given, that ephemeral port range."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    ns = f"rg{tag}{os.getpid()}"
    res = run("ip", "netns", "add", ns)
    if res.returncode != 0:
        pytest.skip(f"the kernel refuses network namespaces: {res.stderr.strip()}")
    try:
        must(*inside(ns, "ip", "link", "set", "lo", "up"))
        if port_range is not None:
            res = run(*inside(ns, "sysctl", "-w",
                              f"net.ipv4.ip_local_port_range={port_range[0]} {port_range[1]}"))
            if res.returncode != 0:
                pytest.skip(f"cannot narrow the namespace's port range: {res.stderr.strip()}")
        yield ns
    finally:
        run("ip", "netns", "del", ns)


@contextlib.contextmanager
def veth(a: str | None, a_addrs: list[str], b: str, b_addrs: list[str],
         tag: str) -> Iterator[None]:
    """A veth pair between namespace `a` (None: this one) and `b`, each end up with its /24
    addresses; removed afterwards (deleting one end deletes both)."""
    a_if, b_if = f"rg{tag}a{os.getpid() % 100000}", f"rg{tag}b{os.getpid() % 100000}"
    must(*inside(a, "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if,
                 "netns", b))
    try:
        for ns, ifname, addrs in ((a, a_if, a_addrs), (b, b_if, b_addrs)):
            for address in addrs:
                must(*inside(ns, "ip", "addr", "add", f"{address}/24", "dev", ifname))
            must(*inside(ns, "ip", "link", "set", ifname, "up"))
        yield
    finally:
        run(*inside(a, "ip", "link", "del", a_if))
