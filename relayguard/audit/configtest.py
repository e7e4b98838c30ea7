"""Run a daemon's own config check (`squid -k parse`, `privoxy --config-test`, `danted -V`…).

`--fix` offers a patch only when the server itself accepts the patched config; every
auditor's `config_test` goes through here so timeouts and output handling are the same.
"""

from __future__ import annotations

import subprocess


def run_check(argv: list[str], timeout: float = 30.0) -> tuple[bool, str]:
    """Run `argv` without a shell: (exit status was 0, the tail of stdout+stderr)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{argv[0]}: {exc}"
    return proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]
