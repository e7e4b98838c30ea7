"""Shared pieces of the watch tests: running the watcher as a real subprocess, reading its
state file, and the ground truth of what log files hold."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from relayguard.watch.daemon import status
from relayguard.watch.engine import split_lines

REPO = Path(__file__).resolve().parents[2]


class WatchProc:
    """`python -m relayguard watch ...` in its own session; stdout and stderr to files."""

    def __init__(self, workdir: Path, args: list[str], name: str = "watch") -> None:
        self.out = workdir / f"{name}.stdout"
        self.err = workdir / f"{name}.stderr"
        with open(self.out, "ab") as out, open(self.err, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relayguard", "watch", *args],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO,
                start_new_session=True)

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")


@contextlib.contextmanager
def watcher(workdir: Path, args: list[str], name: str = "watch") -> Iterator[WatchProc]:
    w = WatchProc(workdir, args, name)
    try:
        yield w
    finally:
        if w.proc.poll() is None:
            w.kill9()


def wait_until(check: Callable[[], Any], timeout: float, step: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy (bounded); returns the last value."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = check()
    return value


def state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    return status(str(path))


def ground_truth(paths: list[Path]) -> tuple[int, int, int]:
    """(lines, CONNECT lines, crc32 digest) over the given files, as the watcher counts them."""
    lines = connects = 0
    digest = 0
    for p in paths:
        for line in split_lines(p.read_bytes()):
            lines += 1
            digest += zlib.crc32(line)
            if b'"CONNECT ' in line:
                connects += 1
    return lines, connects, digest % (1 << 64)


def proxy_events(doc: dict[str, Any], kind: str) -> int:
    return sum(i["events"] for i in doc.get("incidents", []) if i["kind"] == kind)
