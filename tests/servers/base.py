"""Start, wait for and always stop one real daemon: the part every launcher shares.

A `Daemon` owns a subprocess started in its own session (so its whole process group can be
killed), a working directory holding its config and logs, and a bounded wait for its TCP port.
Launchers in this package build the config text and hand the command line to `run_daemon`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 15.0  # seconds a daemon gets to accept connections
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


class DaemonError(RuntimeError):
    """The daemon did not come up; the message carries its stderr and log tails."""


@dataclass
class Daemon:
    """A running daemon: where it listens, its files, and how to read its logs."""

    name: str
    host: str
    port: int
    workdir: Path
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    logs: dict[str, Path] = field(default_factory=dict)  # "error", "access", "mail", …
    stderr_path: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def log(self, name: str) -> str:
        """The current text of one named log ('' if it does not exist yet)."""
        path = self.logs[name]
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, name: str, needle: str, timeout: float = 5.0, count: int = 1) -> str:
        """The log's text once it contains `needle` `count` times (daemons write logs after
        replying); after `timeout` the current text, so the caller's assertion shows what was
        there."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log(name)
            if text.count(needle) >= count or time.monotonic() >= deadline:
                return text
            time.sleep(0.05)

    def stderr(self) -> str:
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def diagnostics(self) -> str:
        """Stderr plus the tail of every log: what a failing test should print."""
        parts = [f"--- {self.name} stderr ---", self.stderr()[-4000:]]
        for name, path in self.logs.items():
            if path.exists():
                parts += [f"--- {self.name} {name} log ({path}) ---",
                          path.read_text(encoding="utf-8", errors="replace")[-4000:]]
        return "\n".join(parts)


def make_workdir(workdir: Path | None, name: str) -> tuple[Path, bool]:
    """Return a world-traversable directory for the daemon and whether we created it.

    Daemons drop privileges (www-data, proxy, postfix…), and pytest's tmp dirs sit under a
    0700 directory, so by default a fresh 0755 directory is made under /tmp instead.
    """
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(workdir, 0o755)
        return workdir, False
    path = Path(tempfile.mkdtemp(prefix=f"rg-{name}-"))
    os.chmod(path, 0o755)
    return path, True


def free_port(host: str) -> int:
    """An unused TCP port on `host` (bind to port 0 and let the kernel choose)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = START_TIMEOUT,
              alive: Callable[[], bool] | None = None) -> None:
    """Wait (bounded) until host:port accepts; stop early when `alive()` says it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port, timeout=0.5):
            return
        if alive is not None and not alive():
            raise DaemonError(f"daemon exited before listening on {host}:{port}")
        time.sleep(0.05)
    raise DaemonError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def wait_port_closed(host: str, port: int, timeout: float = 15.0) -> None:
    """Wait (bounded) until nothing accepts on host:port: a killed daemon's children (Postfix's
    smtpd) may hold the listening socket a moment after the leader is gone."""
    deadline = time.monotonic() + timeout
    while port_open(host, port, timeout=0.2) and time.monotonic() < deadline:
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers; never raises."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT)
    # Children may outlive the leader (forked workers): kill whatever is left in the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def run_daemon(daemon: Daemon, argv: Sequence[str], *, wait: bool = True,
               timeout: float = START_TIMEOUT, env: dict[str, str] | None = None,
               ready: Callable[[], None] | None = None,
               cleanup: Callable[[], None] | None = None,
               remove_workdir: bool = False) -> Iterator[Daemon]:
    """Run `argv` in its own session, wait for daemon.host:port, yield, always stop it.

    `ready` replaces the port wait (for daemons that fork away, like Postfix); `cleanup` runs
    after the process group is killed (e.g. `postfix stop`).
    """
    daemon.stderr_path = daemon.workdir / f"{daemon.name}.stderr"
    with open(daemon.stderr_path, "wb") as err:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=daemon.workdir,
            env={**os.environ, **(env or {})},
        )
    daemon.proc = proc
    try:
        try:
            if ready is not None:
                ready()
            elif wait:
                wait_port(daemon.host, daemon.port, timeout, alive=lambda: proc.poll() is None)
        except DaemonError as exc:
            raise DaemonError(f"{daemon.name} failed to start: {exc}\n"
                              f"argv: {' '.join(argv)}\n{daemon.diagnostics()}") from None
        yield daemon
    finally:
        stop_process(proc)
        if daemon.port:
            wait_port_closed(daemon.host, daemon.port, timeout=STOP_TIMEOUT)
        if cleanup is not None:
            with contextlib.suppress(Exception):
                cleanup()
        if remove_workdir:
            shutil.rmtree(daemon.workdir, ignore_errors=True)
