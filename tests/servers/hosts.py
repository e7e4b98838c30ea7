"""Run a command with its own /etc/hosts: a real resolver (glibc's files backend) answering a
test name with several loopback addresses, in a private mount namespace so the machine's
/etc/hosts is never touched. Needs root (as the daemons do); the test skips otherwise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

_BIND = 'mount --bind "$0" /etc/hosts && exec "$@"'


def with_hosts(argv: list[str], names: dict[str, list[str]], workdir: Path) -> list[str]:
    """`argv` run under a hosts file that maps each name to its addresses (in that order);
    skips the test where this machine cannot give a command its own /etc/hosts."""
    if not hosts_override_works(workdir):
        pytest.skip("cannot give a test its own /etc/hosts here (needs root and unshare)")
    return _under_hosts(argv, names, workdir)


def _under_hosts(argv: list[str], names: dict[str, list[str]], workdir: Path) -> list[str]:
    hosts = workdir / "hosts"
    lines = ["127.0.0.1 localhost", "::1 localhost"]
    lines += [f"{address} {name}" for name, addresses in names.items() for address in addresses]
    hosts.write_text("\n".join(lines) + "\n")
    return ["unshare", "--mount", "sh", "-c", _BIND, str(hosts), *argv]


def hosts_override_works(workdir: Path) -> bool:
    """Whether this machine lets a test mount its own /etc/hosts (root, mount namespaces)."""
    if shutil.which("unshare") is None:
        return False
    argv = _under_hosts(["getent", "ahostsv4", "probe-check.test"],
                        {"probe-check.test": ["127.0.0.77"]}, workdir)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    return done.returncode == 0 and "127.0.0.77" in done.stdout
